//! Which paths of the new root live on COS_PERSISTENT, and how (see docs/persistence.md).
//! Pure: parsing of the `persistent.env` files, precedence of the sources, the mount plan and
//! systemd's unit-name escaping. The mounting itself is in `mounts.rs`.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The persistent paths when no source names any (Elemental/Kairos-like: the host's identity
/// and configuration, package and service state, logs, users' files, local software).
pub const DEFAULT_PATHS: [&str; 7] = [
    "/etc",
    "/var/lib",
    "/var/log",
    "/home",
    "/root",
    "/opt",
    "/usr/local",
];

/// The image maker's settings, relative to the new root (read before anything covers /etc).
pub const IMAGE_ENV: &str = "etc/clb/persistent.env";
/// The machine's settings, relative to the root of COS_OEM (`/oem/persistent.env`).
pub const OEM_ENV: &str = "persistent.env";

const KEY_PATHS: &str = "PERSISTENT_STATE_PATHS";
const KEY_BIND: &str = "PERSISTENT_STATE_BIND";

/// The persistent-state settings one source gives; `None` leaves a key to lower sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub paths: Option<Vec<PathBuf>>,
    pub bind: Option<bool>,
}

/// The settings in force for this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub paths: Vec<PathBuf>,
    /// cOS's bind mode (`PERSISTENT_STATE_BIND=true`): `.state/<name>.bind` directories,
    /// seeded once from the image, bound over the paths. Default: overlays.
    pub bind: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            paths: DEFAULT_PATHS.iter().map(PathBuf::from).collect(),
            bind: false,
        }
    }
}

/// A source of settings: its name for console lines and the file's text (`None`: absent;
/// `Some(Err)`: it could not be read).
pub struct EnvSource<'a> {
    pub name: &'a str,
    pub text: Option<Result<String, String>>,
}

/// Apply the sources lowest precedence first on top of the defaults, then the kernel command
/// line's `clb.persistent_paths=` (`cmdline_paths`). A source with any error is ignored as a
/// whole and named in the returned warnings: a bad setting must not make the machine
/// unbootable, the next lower source decides instead.
pub fn resolve(
    sources: &[EnvSource<'_>],
    cmdline_paths: Option<&[PathBuf]>,
) -> (Layout, Vec<String>) {
    let mut layout = Layout::default();
    let mut warnings = Vec::new();
    for src in sources {
        let parsed = match &src.text {
            None => continue,
            Some(Ok(text)) => parse_env(text),
            Some(Err(e)) => Err(e.clone()),
        };
        match parsed {
            Ok(o) => {
                if let Some(p) = o.paths {
                    layout.paths = p;
                }
                if let Some(b) = o.bind {
                    layout.bind = b;
                }
            }
            Err(e) => warnings.push(format!("warning: {}: {e}; file ignored", src.name)),
        }
    }
    if let Some(p) = cmdline_paths {
        layout.paths = p.to_vec();
    }
    (layout, warnings)
}

/// Parse a `KEY=VALUE` file the way a shell would read simple assignments: `#` comments,
/// blank lines, an optional `export `, values bare, in double quotes (`\` escapes `"`, `\`,
/// `$` and `` ` ``, as in sh and as clb's cloud-config `environment_file:` writes them) or
/// in single quotes. Keys other than ours are left alone (cOS's cos-layout.env has more).
pub fn parse_env(text: &str) -> Result<Overrides, String> {
    let mut out = Overrides::default();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", n + 1);
        let t = t.strip_prefix("export ").unwrap_or(t).trim_start();
        let (key, raw) = t
            .split_once('=')
            .ok_or_else(|| at("expected KEY=VALUE".into()))?;
        let shell_name = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !shell_name {
            return Err(at(format!("{key:?} is not a variable name")));
        }
        let value = unquote(raw).map_err(at)?;
        match key {
            KEY_PATHS => {
                let sep = |c: char| c == ',' || c.is_ascii_whitespace();
                out.paths = Some(parse_paths(&value, sep).map_err(|e| at(format!("{key}: {e}")))?);
            }
            KEY_BIND => {
                out.bind = match value.as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    "" => None,
                    v => return Err(at(format!("{key}={v:?}: expected true or false"))),
                };
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The value part of `KEY=VALUE`: bare (up to a ` #` comment), `"…"` or `'…'`.
fn unquote(raw: &str) -> Result<String, String> {
    let mut chars = raw.chars();
    let quote = match raw.chars().next() {
        Some(q @ ('"' | '\'')) => {
            chars.next();
            q
        }
        _ => {
            let bare = raw.split(" #").next().unwrap_or("").trim();
            if bare.contains(['"', '\'', '\\']) {
                return Err(format!("{bare:?}: quote the whole value"));
            }
            return Ok(bare.to_string());
        }
    };
    let mut value = String::new();
    loop {
        match chars.next() {
            None => return Err(format!("unterminated {quote} quote")),
            Some(c) if c == quote => break,
            Some('\\') if quote == '"' => match chars.next() {
                Some(e @ ('"' | '\\' | '$' | '`')) => value.push(e),
                Some(e) => {
                    value.push('\\');
                    value.push(e);
                }
                None => return Err("unterminated \" quote".into()),
            },
            Some(c) => value.push(c),
        }
    }
    let rest = chars.as_str().trim();
    if !rest.is_empty() && !rest.starts_with('#') {
        return Err(format!("{rest:?} after the closing quote"));
    }
    Ok(value)
}

/// A list of persistent paths split on `sep`; empty means none. Each must be absolute, not
/// `/`, without `.` or `..` components, and free of `,` `:` `\` (overlayfs's option syntax);
/// repeated and trailing slashes are dropped.
pub fn parse_paths(v: &str, sep: impl Fn(char) -> bool) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for p in v.split(sep).filter(|p| !p.is_empty()) {
        let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
        let ok = p.starts_with('/')
            && !parts.is_empty()
            && !p.contains([',', ':', '\\'])
            && parts.iter().all(|c| *c != "." && *c != "..");
        if !ok {
            return Err(format!(
                "{p:?} is not an absolute path (other than /) without . or .. or any of , : \\"
            ));
        }
        paths.push(PathBuf::from(format!("/{}", parts.join("/"))));
    }
    Ok(paths)
}

/// cOS's name for a path's state on COS_PERSISTENT: `/etc/ssh` → `etc-ssh`
/// (`.state/etc-ssh.bind`, `.state/etc-ssh.overlay`).
pub fn state_name(path: &Path) -> String {
    path.to_string_lossy().trim_matches('/').replace('/', "-")
}

/// What to mount, parents before children, and the console lines about what was dropped:
/// a path whose state name another path already has (`/a-b` and `/a/b`), and in overlay mode
/// a path under another persistent path: the parent's overlay already keeps it, and an
/// overlay on it would stack overlayfs three deep, which the kernel refuses.
pub fn mount_plan(layout: &Layout) -> (Vec<PathBuf>, Vec<String>) {
    let mut paths = layout.paths.clone();
    // Component-wise order puts /var before /var/log (bind mode mounts children on parents).
    paths.sort();
    paths.dedup();
    let mut keep: Vec<PathBuf> = Vec::with_capacity(paths.len());
    let mut notes = Vec::new();
    for p in paths {
        if let Some(other) = keep.iter().find(|k| state_name(k) == state_name(&p)) {
            notes.push(format!(
                "warning: {} has the same state name as {} (.state/{}): not made persistent",
                p.display(),
                other.display(),
                state_name(&p)
            ));
        } else if let Some(parent) = keep.iter().find(|k| !layout.bind && p.starts_with(k)) {
            notes.push(format!(
                "{} is kept by the overlay of {}",
                p.display(),
                parent.display()
            ));
        } else {
            keep.push(p);
        }
    }
    (keep, notes)
}

/// systemd's name for the mount unit of `path` (`systemd-escape --path --suffix=mount`):
/// `/var/log` → `var-log.mount`.
pub fn mount_unit(path: &Path) -> String {
    format!("{}.mount", escape_path(path))
}

/// systemd's path escaping (`unit_name_path_escape`): empty and `.` components dropped, `/`
/// alone is `-`, `/` between components is `-`, every byte outside `[A-Za-z0-9:_.]` and a
/// leading `.` become `\xNN` (lowercase hex).
pub fn escape_path(path: &Path) -> String {
    let parts: Vec<&[u8]> = path
        .as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if parts.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, &b) in part.iter().enumerate() {
            let plain = b.is_ascii_alphanumeric()
                || b == b':'
                || b == b'_'
                || (b == b'.' && (i, j) != (0, 0));
            if plain {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    fn src<'a>(name: &'a str, text: &str) -> EnvSource<'a> {
        EnvSource {
            name,
            text: Some(Ok(text.to_string())),
        }
    }

    #[test]
    fn parses_shell_like_env_files() {
        let o = parse_env(
            "# cos-layout.env\n\
             VOLUMES=\"LABEL=COS_OEM:/oem\"\n\
             \n  export PERSISTENT_STATE_PATHS=\"/etc /var/lib,/home//  /usr/local/\"\n\
             PERSISTENT_STATE_BIND=true # cOS's name\n",
        )
        .unwrap();
        assert_eq!(
            o.paths,
            Some(paths(&["/etc", "/var/lib", "/home", "/usr/local"]))
        );
        assert_eq!(o.bind, Some(true));
        let o =
            parse_env("PERSISTENT_STATE_PATHS='/opt'\nPERSISTENT_STATE_BIND=\"false\"").unwrap();
        assert_eq!(o.paths, Some(paths(&["/opt"])));
        assert_eq!(o.bind, Some(false));
        // Empty: no persistent paths at all; an empty BIND leaves the key to lower sources.
        let o = parse_env("PERSISTENT_STATE_PATHS=\nPERSISTENT_STATE_BIND=").unwrap();
        assert_eq!(
            o,
            Overrides {
                paths: Some(vec![]),
                bind: None
            }
        );
        assert_eq!(parse_env("").unwrap(), Overrides::default());
        // Escapes inside double quotes, as clb's cloud-config environment_file: writes them:
        // `\\` is one backslash (which a path may not hold), `\"` a quote; others stay.
        let e = parse_env("PERSISTENT_STATE_PATHS=\"/srv/a\\\\b\"").unwrap_err();
        assert!(e.contains("\"/srv/a\\\\b\" is not"), "{e}");
        assert_eq!(unquote("\"a\\\"b\\$\\x\"").unwrap(), "a\"b$\\x");
    }

    #[test]
    fn rejects_bad_env_files() {
        for (bad, says) in [
            (
                "PERSISTENT_STATE_PATHS=etc",
                "line 1: PERSISTENT_STATE_PATHS: \"etc\" is not an absolute path",
            ),
            ("\nPERSISTENT_STATE_PATHS=\"/etc /var/../x\"", "line 2:"),
            ("PERSISTENT_STATE_PATHS=/", "\"/\" is not"),
            ("PERSISTENT_STATE_PATHS=/a:b", "\"/a:b\""),
            ("PERSISTENT_STATE_PATHS=\"/etc", "unterminated \" quote"),
            ("PERSISTENT_STATE_PATHS='/etc", "unterminated ' quote"),
            (
                "PERSISTENT_STATE_PATHS=\"/etc\" /home",
                "\"/home\" after the closing quote",
            ),
            ("PERSISTENT_STATE_PATHS=/etc\"x\"", "quote the whole value"),
            (
                "PERSISTENT_STATE_BIND=yes",
                "PERSISTENT_STATE_BIND=\"yes\": expected true or false",
            ),
            ("just words", "line 1: expected KEY=VALUE"),
            (
                "PERSISTENT_STATE_PATHS =/etc",
                "\"PERSISTENT_STATE_PATHS \" is not a variable name",
            ),
        ] {
            let e = parse_env(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn precedence_defaults_image_oem_cmdline() {
        let (l, w) = resolve(&[], None);
        assert_eq!(l, Layout::default());
        assert_eq!(l.paths.len(), 7);
        assert!(!l.bind && w.is_empty());
        let absent = EnvSource {
            name: "oem",
            text: None,
        };
        // The image sets both keys, COS_OEM only the paths: bind comes from the image.
        let image = src(
            "image",
            "PERSISTENT_STATE_PATHS=/etc\nPERSISTENT_STATE_BIND=true",
        );
        let oem = src("oem", "PERSISTENT_STATE_PATHS=\"/home /root\"");
        let (l, w) = resolve(&[image, oem], None);
        assert_eq!(l.paths, paths(&["/home", "/root"]));
        assert!(l.bind && w.is_empty());
        // The kernel command line wins over both, for the paths.
        let image = src(
            "image",
            "PERSISTENT_STATE_PATHS=/etc\nPERSISTENT_STATE_BIND=true",
        );
        let cmdline = paths(&["/srv"]);
        let (l, _) = resolve(&[image, absent], Some(&cmdline));
        assert_eq!(l.paths, cmdline);
        assert!(l.bind);
        let (l, _) = resolve(&[src("image", "PERSISTENT_STATE_PATHS=/etc")], Some(&[]));
        assert!(
            l.paths.is_empty(),
            "an empty clb.persistent_paths= means none"
        );
        // A bad COS_OEM file falls back to the image's settings, whole (its BIND too).
        let image = src("image", "PERSISTENT_STATE_PATHS=/etc");
        let oem = src(
            "/oem/persistent.env",
            "PERSISTENT_STATE_BIND=true\nPERSISTENT_STATE_PATHS=etc",
        );
        let (l, w) = resolve(&[image, oem], None);
        assert_eq!(
            l,
            Layout {
                paths: paths(&["/etc"]),
                bind: false
            }
        );
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with(
                "warning: /oem/persistent.env: line 2: PERSISTENT_STATE_PATHS: \"etc\""
            ) && w[0].ends_with("; file ignored"),
            "{w:?}"
        );
        // An unreadable file likewise; a bad image file falls back to the defaults.
        let unreadable = EnvSource {
            name: "image",
            text: Some(Err("stream did not contain valid UTF-8".into())),
        };
        let (l, w) = resolve(&[unreadable], None);
        assert_eq!(l, Layout::default());
        assert_eq!(
            w,
            ["warning: image: stream did not contain valid UTF-8; file ignored"]
        );
    }

    #[test]
    fn mount_plan_orders_parents_first_and_drops_what_is_covered() {
        let layout = Layout {
            paths: paths(&[
                "/var/log",
                "/var",
                "/usr/local",
                "/etc",
                "/var",
                "/a-b",
                "/a/b",
            ]),
            bind: true,
        };
        let (keep, notes) = mount_plan(&layout);
        assert_eq!(
            keep,
            paths(&["/a/b", "/etc", "/usr/local", "/var", "/var/log"])
        );
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("/a-b has the same state name as /a/b (.state/a-b)"),
            "{notes:?}"
        );
        // Overlays: /var's overlay keeps /var/log already.
        let (keep, notes) = mount_plan(&Layout {
            bind: false,
            ..layout
        });
        assert_eq!(keep, paths(&["/a/b", "/etc", "/usr/local", "/var"]));
        assert_eq!(notes[1], "/var/log is kept by the overlay of /var");
        // /varx is not under /var.
        let (keep, _) = mount_plan(&Layout {
            paths: paths(&["/var", "/varx"]),
            bind: false,
        });
        assert_eq!(keep.len(), 2);
        assert_eq!(state_name(Path::new("/var/log")), "var-log");
    }

    /// Compared with systemd's own `systemd-escape --path`, which must be installed (a
    /// missing one fails the test rather than skipping the comparison).
    #[test]
    fn escaping_matches_systemd_escape() {
        let cases = [
            "/var/log",
            "/usr/local",
            "/etc",
            "/",
            "/run/initramfs/clb/persistent",
            "/srv/my-data",
            "/a b/é-x",
            "/.hidden/x.y",
            "/x//y/",
            "/./z",
            "/a:b_c.d/E9",
            "/back\\slash",
            "/tab\there",
        ];
        let out = std::process::Command::new("systemd-escape")
            .arg("--path")
            .arg("--")
            .args(cases)
            .output()
            .expect("systemd-escape (package systemd) is needed by this test");
        assert!(out.status.success(), "{out:?}");
        // One line, the escaped paths separated by spaces (a space in a path is escaped).
        let want: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect();
        let got: Vec<String> = cases.iter().map(|c| escape_path(Path::new(c))).collect();
        assert_eq!(got, want);
        assert_eq!(got[0], "var-log");
        assert_eq!(got[6], "a\\x20b-\\xc3\\xa9\\x2dx");
        assert_eq!(mount_unit(Path::new("/var/lib")), "var-lib.mount");
    }
}
