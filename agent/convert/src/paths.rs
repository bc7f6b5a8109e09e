//! Lexical path rules for layer entries. Everything works on bytes: tar names need not be
//! UTF-8, and we never touch the host filesystem, so there is nothing to resolve but the
//! names themselves.

/// Normalises an entry name to `a/b/c` form, `""` meaning the layer root.
///
/// `./` prefixes, repeated and trailing slashes and `.` components are dropped (Docker layers
/// commonly carry `./`); absolute names and `..` components are refused rather than
/// rewritten, so a layer means exactly what it says or nothing.
pub(crate) fn normalize(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.is_empty() {
        return Err("empty name");
    }
    if raw.contains(&0) {
        return Err("NUL byte in name");
    }
    if raw[0] == b'/' {
        return Err("absolute name");
    }
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("'..' component"),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Ok(out)
}

/// A hard-link target obeys the entry-name rules (it names another entry of the same layer)
/// and may not be the root, which is a directory.
pub(crate) fn hardlink_target(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute hard-link target");
    }
    let target = normalize(raw).map_err(|e| match e {
        "'..' component" => "hard-link target escapes the layer root",
        other => other,
    })?;
    if target.is_empty() {
        return Err("hard link to the layer root");
    }
    Ok(target)
}

/// Symlink targets are stored verbatim. Absolute targets are fine: they resolve inside the
/// new root at boot. A relative target is walked lexically from the link's directory and
/// refused if it ever climbs above the root.
pub(crate) fn check_symlink(link: &[u8], target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("empty symlink target");
    }
    if target.contains(&0) {
        return Err("NUL byte in symlink target");
    }
    if target[0] == b'/' {
        return Ok(());
    }
    // Depth of the directory holding the link; `link` is already normalised.
    let mut depth = link.split(|b| *b == b'/').count().saturating_sub(1);
    for comp in target.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                depth = depth
                    .checked_sub(1)
                    .ok_or("relative symlink target escapes the layer root")?;
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// The directory holding `path` (`""` for top-level entries) and the final component.
pub(crate) fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// Whether `dir` is a strict ancestor of `path` (both normalised).
pub(crate) fn is_ancestor(dir: &[u8], path: &[u8]) -> bool {
    if dir.is_empty() {
        return !path.is_empty();
    }
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// Joins a normalised directory and a single component.
pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dir.len() + 1 + name.len());
    out.extend_from_slice(dir);
    if !dir.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize(b"./etc/x").as_deref(), Ok(&b"etc/x"[..]));
        assert_eq!(normalize(b"etc//x/./y/").as_deref(), Ok(&b"etc/x/y"[..]));
        assert_eq!(normalize(b"./").as_deref(), Ok(&b""[..]));
        assert_eq!(normalize(b".").as_deref(), Ok(&b""[..]));
        assert!(normalize(b"../x").is_err());
        assert!(normalize(b"a/../../x").is_err());
        assert!(normalize(b"a/../b").is_err());
        assert!(normalize(b"/etc/passwd").is_err());
        assert!(normalize(b"a\0b").is_err());
        assert!(normalize(b"").is_err());
    }

    #[test]
    fn hardlinks() {
        assert_eq!(hardlink_target(b"./bin/a").as_deref(), Ok(&b"bin/a"[..]));
        assert!(hardlink_target(b"../../etc/shadow").is_err());
        assert!(hardlink_target(b"/etc/shadow").is_err());
        assert!(hardlink_target(b"./").is_err());
    }

    #[test]
    fn symlinks() {
        assert!(check_symlink(b"a/b", b"../../../x").is_err());
        assert!(check_symlink(b"a/b", b"../../x").is_err());
        assert!(check_symlink(b"a/b", b"../x").is_ok());
        assert!(check_symlink(b"a/b", b"./c/../../x").is_ok());
        assert!(check_symlink(b"x", b"../x").is_err());
        assert!(check_symlink(b"a/b", b"c/../../../x").is_err());
        assert!(check_symlink(b"a/b", b"/etc/passwd").is_ok());
        assert!(check_symlink(b"a/b", b"/../../etc").is_ok());
        assert!(check_symlink(b"a/b", b"").is_err());
    }

    #[test]
    fn tree_helpers() {
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
        assert!(is_ancestor(b"", b"a"));
        assert!(is_ancestor(b"a", b"a/b"));
        assert!(!is_ancestor(b"a", b"ab/c"));
        assert!(!is_ancestor(b"a", b"a"));
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a", b"x"), b"a/x");
    }
}
