//! Where configs come from, and in which order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Diagnostic;
use crate::fetch::FetchError;
use crate::parse::{ParsedFile, parse_str};

/// The directories yip reads, in this order, relative to the root.
pub const DEFAULT_DIRS: [&str; 3] = ["/system/oem", "/oem", "/usr/local/cloud-config"];

/// Kernel command line keys naming an extra source (path or URL).
pub const CMDLINE_KEYS: [&str; 2] = ["clb.setup", "cos.setup"];

const URL_TIMEOUT: Duration = Duration::from_secs(30);
const URL_LIMIT: usize = 16 << 20;

/// The config sources of a run. Read in this order: each of `dirs` (relative to the root;
/// `*.yaml`/`*.yml` files, recursively, in lexical order of their paths), then `files` (host
/// paths, as given), then every `clb.setup=`/`cos.setup=` of `cmdline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub dirs: Vec<PathBuf>,
    pub files: Vec<PathBuf>,
    /// A kernel command line (the content of `/proc/cmdline`), if any.
    pub cmdline: Option<String>,
}

impl Default for Sources {
    /// The yip directories and no command line.
    fn default() -> Self {
        Sources {
            dirs: DEFAULT_DIRS.iter().map(PathBuf::from).collect(),
            files: Vec::new(),
            cmdline: None,
        }
    }
}

impl Sources {
    /// No directories, only these files.
    pub fn files(files: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        Sources {
            dirs: Vec::new(),
            files: files.into_iter().map(Into::into).collect(),
            cmdline: None,
        }
    }

    /// The default directories plus the live `/proc/cmdline`.
    pub fn from_system() -> Self {
        Sources {
            cmdline: std::fs::read_to_string("/proc/cmdline").ok(),
            ..Sources::default()
        }
    }

    pub fn with_cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = Some(cmdline.into());
        self
    }

    /// Read and parse every source. Problems are collected, not fatal: a broken file never
    /// hides the others.
    pub fn load(&self, root: &Path) -> Loaded {
        let mut loaded = Loaded::default();
        for dir in &self.dirs {
            let dir = under_root(root, dir);
            let mut paths = Vec::new();
            if let Err(e) = collect_yaml(&dir, &mut paths) {
                loaded.errors.push(plain(&dir.display().to_string(), e));
            }
            paths.sort();
            for p in paths {
                loaded.add_path(&p);
            }
        }
        for file in &self.files {
            if file.is_dir() {
                let mut paths = Vec::new();
                if let Err(e) = collect_yaml(file, &mut paths) {
                    loaded.errors.push(plain(&file.display().to_string(), e));
                }
                paths.sort();
                for p in paths {
                    loaded.add_path(&p);
                }
            } else {
                loaded.add_path(file);
            }
        }
        if let Some(cmdline) = &self.cmdline {
            if let Some(doc) = crate::dotnotation::from_cmdline(&split_cmdline(cmdline)) {
                // The document is YAML's JSON subset; the one parser reads it like any file.
                loaded.add_text("<cmdline>", &doc.to_string());
            }
            for value in cmdline_setup(cmdline) {
                if value.starts_with("http://") || value.starts_with("https://") {
                    match crate::fetch::fetch_bytes(&value, URL_TIMEOUT, URL_LIMIT) {
                        Ok(body) => {
                            loaded.add_text(&value, &String::from_utf8_lossy(&body));
                        }
                        Err(e) => loaded.errors.push(plain(&value, fetch_problem(&e))),
                    }
                } else {
                    let p = under_root(root, Path::new(&value));
                    if p.is_dir() {
                        let mut paths = Vec::new();
                        if let Err(e) = collect_yaml(&p, &mut paths) {
                            loaded.errors.push(plain(&value, e));
                        }
                        paths.sort();
                        for f in paths {
                            loaded.add_path(&f);
                        }
                    } else {
                        loaded.add_path(&p);
                    }
                }
            }
        }
        loaded
    }
}

/// Every parsed source, plus the problems met.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub files: Vec<ParsedFile>,
    pub warnings: Vec<Diagnostic>,
    /// Unreadable or malformed sources (they are left out of `files`).
    pub errors: Vec<Diagnostic>,
}

impl Loaded {
    fn add_path(&mut self, path: &Path) {
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => self.add_text(&path.display().to_string(), &text),
                Err(_) => self
                    .errors
                    .push(plain(&path.display().to_string(), "not UTF-8 text")),
            },
            Err(e) => self
                .errors
                .push(plain(&path.display().to_string(), format!("read: {e}"))),
        }
    }

    fn add_text(&mut self, source: &str, text: &str) {
        match parse_str(source, text) {
            Ok(parsed) => {
                self.warnings.extend(parsed.warnings.iter().cloned());
                self.files.push(parsed);
            }
            Err(d) => self.errors.push(d),
        }
    }
}

/// What went wrong with a URL source, without the URL: the diagnostic is already tied to it.
fn fetch_problem(e: &FetchError) -> String {
    match e {
        FetchError::Http { problem, .. } => problem.clone(),
        FetchError::Io { action, source, .. } => {
            format!("{action}: {}", clb_command::one_line(source))
        }
        FetchError::Curl { source, .. } => clb_command::one_line(source),
    }
}

fn plain(file: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: 0,
        column: 0,
        message: message.into(),
    }
}

/// `root` + `path`, lexically (an absolute `path` is taken as relative to `root`).
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// `*.yaml`/`*.yml` files under `dir`, recursively. A missing directory is not an error (most
/// hosts have only some of the three).
fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("read directory: {e}")),
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("read directory: {e}"))?;
        let path = entry.path();
        // Follows symlinks on purpose: OEM directories often link to files elsewhere.
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The values of `clb.setup=`/`cos.setup=` in a kernel command line, in order. Values may be
/// double-quoted like any kernel parameter.
pub fn cmdline_setup(cmdline: &str) -> Vec<String> {
    split_cmdline(cmdline)
        .into_iter()
        .filter_map(|tok| {
            let (k, v) = tok.split_once('=')?;
            (CMDLINE_KEYS.contains(&k) && !v.is_empty()).then(|| v.to_string())
        })
        .collect()
}

/// Split like the kernel: whitespace separates, double quotes group (and are removed).
fn split_cmdline(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_values() {
        assert_eq!(
            cmdline_setup("quiet cos.setup=/oem/x.yaml clb.setup=\"http://h/a b\" cos.setupx=1"),
            vec!["/oem/x.yaml".to_string(), "http://h/a b".to_string()]
        );
        assert!(cmdline_setup("cos.setup= root=/dev/sda").is_empty());
    }

    #[test]
    fn fetch_problems_keep_the_causes_of_a_program_that_did_not_start() {
        use clb_command::CommandError;
        let e = FetchError::Curl {
            url: "https://h/x".into(),
            source: CommandError::Start {
                program: "curl".into(),
                source: std::io::Error::from_raw_os_error(13),
            },
        };
        assert_eq!(
            fetch_problem(&e),
            "cannot start curl: Permission denied (os error 13)"
        );
    }
}
