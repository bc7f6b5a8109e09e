//! Merging keys into line-based config files (sysctl.d, /etc/environment, ini sections),
//! keeping comments and unrelated lines, so several steps can add to the same file and a
//! re-run writes the same bytes.

use std::collections::BTreeMap;

/// Set `key<sep>value` lines: a line whose key matches is replaced in place, new keys are
/// appended in key order. `key_of` extracts the key of an existing line (None: keep as is).
pub(crate) fn merge_lines(
    existing: &str,
    updates: &BTreeMap<String, String>,
    key_of: impl Fn(&str) -> Option<String>,
    render: impl Fn(&str, &str) -> String,
) -> String {
    let mut done = std::collections::BTreeSet::new();
    let mut out = String::new();
    for line in existing.lines() {
        match key_of(line).and_then(|k| updates.get_key_value(&k)) {
            Some((k, v)) if !done.contains(k.as_str()) => {
                out.push_str(&render(k, v));
                done.insert(k.as_str());
            }
            // A duplicate of a key already written: drop it, the last one would win anyway.
            Some(_) => continue,
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for (k, v) in updates {
        if !done.contains(k.as_str()) {
            out.push_str(&render(k, v));
            out.push('\n');
        }
    }
    out
}

/// `key = value` / `key=value` lines (sysctl.d); comments start with `#` or `;`.
pub(crate) fn sysctl_key(line: &str) -> Option<String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let (k, _) = t.split_once('=')?;
    // sysctl accepts both separators in keys; normalise to dots.
    Some(k.trim().trim_start_matches('-').replace('/', "."))
}

/// `KEY=value` lines of an environment file, with an optional `export `.
pub(crate) fn env_key(line: &str) -> Option<String> {
    let t = line.trim();
    if t.starts_with('#') {
        return None;
    }
    let t = t.strip_prefix("export ").unwrap_or(t);
    let (k, _) = t.split_once('=')?;
    Some(k.trim().to_string())
}

/// `KEY="value"` with `\` and `"` escaped: readable by pam_env, systemd and sh alike.
pub(crate) fn env_line(k: &str, v: &str) -> String {
    let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{k}=\"{escaped}\"")
}

/// Set keys in one `[section]` of an ini file (systemd style), creating it if missing.
pub(crate) fn merge_ini_section(
    existing: &str,
    section: &str,
    updates: &BTreeMap<String, String>,
) -> String {
    let header = format!("[{section}]");
    let lines: Vec<&str> = existing.lines().collect();
    let start = lines.iter().position(|l| l.trim() == header);
    let Some(start) = start else {
        let mut out = existing.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&header);
        out.push('\n');
        for (k, v) in updates {
            out.push_str(&format!("{k}={v}\n"));
        }
        return out;
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map(|i| start + 1 + i)
        .unwrap_or(lines.len());
    let body = lines[start + 1..end].join("\n");
    let merged = merge_lines(
        &body,
        updates,
        |l| {
            let t = l.trim();
            if t.starts_with('#') || t.starts_with(';') {
                return None;
            }
            t.split_once('=').map(|(k, _)| k.trim().to_string())
        },
        |k, v| format!("{k}={v}"),
    );
    let mut out = String::new();
    for l in &lines[..=start] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&merged);
    for l in &lines[end..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn merges_keep_comments_and_order() {
        let existing = "# keep\nb=1\na = 2\nb=3\n";
        let out = merge_lines(
            existing,
            &map(&[("a", "9"), ("c", "4")]),
            sysctl_key,
            |k, v| format!("{k} = {v}"),
        );
        assert_eq!(out, "# keep\nb=1\na = 9\nb=3\nc = 4\n");
        // Idempotent: merging again gives the same text.
        let again = merge_lines(&out, &map(&[("a", "9"), ("c", "4")]), sysctl_key, |k, v| {
            format!("{k} = {v}")
        });
        assert_eq!(again, out);
    }

    #[test]
    fn ini_sections() {
        let existing = "[Time]\n#NTP=\nNTP=old\n[Other]\nX=1\n";
        let out = merge_ini_section(
            existing,
            "Time",
            &map(&[("NTP", "a b"), ("FallbackNTP", "c")]),
        );
        assert_eq!(out, "[Time]\n#NTP=\nNTP=a b\nFallbackNTP=c\n[Other]\nX=1\n");
        assert_eq!(
            merge_ini_section("", "Time", &map(&[("NTP", "x")])),
            "[Time]\nNTP=x\n"
        );
    }

    #[test]
    fn env_quoting() {
        assert_eq!(env_line("A", "x \"y\" \\z"), "A=\"x \\\"y\\\" \\\\z\"");
        assert_eq!(env_key("export FOO=bar"), Some("FOO".into()));
    }
}
