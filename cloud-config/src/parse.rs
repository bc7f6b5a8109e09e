//! Parsing yip and `#cloud-config` files into a [`Config`].
//!
//! Two passes over the same text: a located node tree (syntax errors and unknown-key warnings,
//! both with real positions) and the typed schema (type errors, with positions too).

use std::path::Path;

use serde_saphyr::Spanned;

use crate::error::{Diagnostic, Error};
use crate::keys::{self, Node};
use crate::schema::{CloudInit, Config, Device, Expand, File, Layout, Step};

/// A parsed source with the warnings found in it.
#[derive(Debug, Clone)]
pub struct ParsedFile {
    /// Path, URL or `<cmdline>`: what reports and diagnostics call this source.
    pub source: String,
    pub config: Config,
    /// Unknown keys and ignored values, with their lines.
    pub warnings: Vec<Diagnostic>,
}

/// True when the text is a cloud-init style file, by yip's rule: within the first 10 lines,
/// skipping blank lines and other `#` comments, a line `#cloud-config` comes before any other
/// line.
pub fn is_cloud_config(text: &str) -> bool {
    for line in text.trim_start_matches('\u{feff}').split('\n').take(10) {
        let line = line.trim_end();
        if line == "#cloud-config" {
            return true;
        }
        if !line.is_empty() && !line.starts_with('#') {
            return false;
        }
    }
    false
}

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    // Config files are small: a few MiB of text and a depth of 64 are plenty, and tighter
    // limits make hostile input (aliases bombs, deep nesting) fail fast with an error.
    budget.max_depth = 64;
    budget.max_aliases = 10_000;
    budget.max_total_scalar_bytes = 16 << 20;
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 100_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = alias_limits;
    options.with_snippet = false;
    // serde buffers flattened fields through `deserialize_any`; keep `0644` as text there so
    // modes keep their octal meaning.
    options.leading_zero_numbers_as_strings = true;
    options
}

fn diagnostic(source: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // The rendered message repeats "at line X, column Y"; the diagnostic carries them already.
    let mut message = e.without_snippet().to_string();
    for suffix in [format!(" at line {line}, column {column}")] {
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
    }
    if let Some(rest) = message.strip_prefix(&format!("error: line {line} column {column}: ")) {
        message = rest.to_string();
    }
    Diagnostic {
        file: source.to_string(),
        line,
        column,
        message,
    }
}

/// Stack for the parser thread. serde's recursive descent uses a few tens of KiB per nesting
/// level in unoptimised builds; with the depth budget of 64 that overflows a default 2 MiB
/// thread stack. The memory is only reserved, not used, unless a document is that deep.
const PARSE_STACK: usize = 64 << 20;

/// Parse one source. `source` names it in diagnostics. Runs on its own thread with a large
/// stack, so hostile nesting ends in an error and a parser panic (a bug) becomes an error too.
pub fn parse_str(source: &str, text: &str) -> Result<ParsedFile, Diagnostic> {
    let fail = |message: String| Diagnostic {
        file: source.to_string(),
        line: 0,
        column: 0,
        message,
    };
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("yaml-parse".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, || parse_on_this_thread(source, text))
            .map_err(|e| fail(format!("cannot start the parser thread: {e}")))?;
        handle
            .join()
            .map_err(|_| fail("the YAML parser panicked".to_string()))?
    })
}

/// The first YAML document of `text` and the line where what follows it starts, if anything
/// does. Go yip unmarshals only the first document, so text after a `...` or `---` line (at
/// column 0, after some content) is ignored, as there.
fn first_document(text: &str) -> (&str, Option<usize>) {
    let mut offset = 0;
    let mut content = false;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        let marker = bare == "..." || bare == "---" || bare.starts_with("--- ");
        if marker && content {
            return (&text[..offset], Some(n + 1));
        }
        let t = bare.trim_start();
        if !t.is_empty() && !t.starts_with('#') && !marker {
            content = true;
        }
        offset += line.len();
    }
    (text, None)
}

fn parse_on_this_thread(source: &str, text: &str) -> Result<ParsedFile, Diagnostic> {
    let (text, ignored_from) = first_document(text);
    let mut parsed = parse_document(source, text)?;
    if let Some(line) = ignored_from {
        parsed.warnings.push(Diagnostic {
            file: source.to_string(),
            line: line as u64,
            column: 1,
            message: "text after the first YAML document ignored (as yip does)".to_string(),
        });
    }
    Ok(parsed)
}

fn parse_document(source: &str, text: &str) -> Result<ParsedFile, Diagnostic> {
    let cloud = is_cloud_config(text);
    if text.trim().lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    }) {
        // Empty documents (only comments) are valid and do nothing.
        return Ok(ParsedFile {
            source: source.to_string(),
            config: Config::default(),
            warnings: Vec::new(),
        });
    }
    let tree: Spanned<Node> = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| diagnostic(source, &e))?;
    if !matches!(tree.value, Node::Map(_)) {
        return Err(Diagnostic {
            file: source.to_string(),
            line: tree.referenced.line(),
            column: tree.referenced.column(),
            message: "expected a mapping at the top level".to_string(),
        });
    }
    if cloud {
        scalar_groups(&tree).map_err(|(line, column)| Diagnostic {
            file: source.to_string(),
            line,
            column,
            message: "users[].groups must be a list (yip's cloud-config loader refuses a \
                      string here too): write `groups: [name]`"
                .to_string(),
        })?;
    }
    let shape = if cloud {
        &keys::CLOUD_CONFIG
    } else {
        &keys::YIP
    };
    let mut warnings: Vec<Diagnostic> = keys::unknown_keys(&tree, shape)
        .into_iter()
        .map(|k| Diagnostic {
            file: source.to_string(),
            line: k.line,
            column: k.column,
            message: format!("unknown key {:?} ignored", k.path),
        })
        .collect();
    let config = if cloud {
        let ci: CloudInit = serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| diagnostic(source, &e))?;
        from_cloud_init(source, ci, &mut warnings)
    } else {
        serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| diagnostic(source, &e))?
    };
    Ok(ParsedFile {
        source: source.to_string(),
        config,
        warnings,
    })
}

/// Err(line, column) of the first `users[].groups` given as a scalar in a `#cloud-config`
/// file. yip decodes cloud-config users into Go's `[]string` there, which a string is not
/// (yip's own stage `users:` map, and clb's, take a comma-separated string too).
fn scalar_groups(tree: &Spanned<Node>) -> Result<(), (u64, u64)> {
    let Node::Map(top) = &tree.value else {
        return Ok(());
    };
    let users = top.iter().find(|(k, _)| k.value == "users");
    let Some((
        _,
        Spanned {
            value: Node::Seq(users),
            ..
        },
    )) = users
    else {
        return Ok(());
    };
    for user in users {
        if let Node::Map(fields) = &user.value
            && let Some((_, groups)) = fields.iter().find(|(k, _)| k.value == "groups")
            && matches!(groups.value, Node::Scalar)
        {
            return Err((groups.referenced.line(), groups.referenced.column()));
        }
    }
    Ok(())
}

/// Read and parse a file.
pub fn parse_file(path: &Path) -> Result<ParsedFile, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    parse_str(&path.display().to_string(), &text).map_err(Error::Parse)
}

/// Map cloud-init keys onto stages, the way yip does: `runcmd`, `write_files`, `users`,
/// `ssh_authorized_keys` and `growpart` become one `boot` step, `hostname` an `initramfs` step.
fn from_cloud_init(source: &str, ci: CloudInit, warnings: &mut Vec<Diagnostic>) -> Config {
    let mut config = Config {
        name: ci.name,
        stages: ci.stages,
    };
    let mut boot = Step {
        name: "cloud-config".to_string(),
        commands: ci.runcmd,
        ..Step::default()
    };
    for wf in ci.write_files {
        let (owner, group) = match wf.owner.split_once(':') {
            Some((u, g)) => (Some(u.to_string()), Some(g.to_string())),
            None if wf.owner.is_empty() => (None, None),
            None => (Some(wf.owner.clone()), None),
        };
        boot.files.push(File {
            path: wf.path,
            content: wf.content,
            encoding: wf.encoding,
            permissions: wf.permissions,
            owner,
            group,
            owner_string: None,
        });
    }
    for u in ci.users {
        if u.name.is_empty() {
            continue; // "default": the image's default user, nothing to create
        }
        boot.users.insert(u.name, u.user);
    }
    if !ci.ssh_authorized_keys.is_empty() {
        // cloud-init gives top-level keys to "the default user"; clb images have only root.
        boot.authorized_keys
            .insert("root".to_string(), ci.ssh_authorized_keys);
    }
    let boot_used = !boot.commands.is_empty()
        || !boot.files.is_empty()
        || !boot.users.is_empty()
        || !boot.authorized_keys.is_empty();
    if boot_used {
        // After the file's own `stages.boot` steps, in file order.
        config
            .stages
            .entry("boot".to_string())
            .or_default()
            .push(boot);
    }
    if let Some(gp) = ci.growpart {
        let off = matches!(gp.mode.as_str(), "off" | "false");
        for dev in gp.devices.iter().filter(|_| !off) {
            if dev.starts_with("/dev/") {
                let mut step = Step {
                    name: format!("growpart {dev}"),
                    ..Step::default()
                };
                step.layout = Layout {
                    device: Some(Device {
                        path: dev.clone(),
                        ..Device::default()
                    }),
                    expand_partition: Some(Expand { size: 0 }),
                    add_partitions: Vec::new(),
                };
                config
                    .stages
                    .entry("boot".to_string())
                    .or_default()
                    .push(step);
            } else {
                warnings.push(Diagnostic {
                    file: source.to_string(),
                    line: 0,
                    column: 0,
                    message: format!(
                        "growpart device {dev:?} ignored: only whole-disk /dev paths are supported"
                    ),
                });
            }
        }
    }
    if !ci.hostname.is_empty() {
        config
            .stages
            .entry("initramfs".to_string())
            .or_default()
            .push(Step {
                name: "cloud-config hostname".to_string(),
                hostname: ci.hostname,
                ..Step::default()
            });
    }
    config
}
