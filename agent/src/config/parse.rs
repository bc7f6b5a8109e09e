//! One file's text into its partial configuration and warnings.
//!
//! Two passes over the same text: a position-carrying node tree (syntax errors, unknown keys)
//! and the typed partial struct (type errors, with positions from serde-saphyr). serde's
//! `flatten`, the one-pass way to collect unknown keys, loses every position in serde-saphyr.

use std::path::Path;

use serde_saphyr::Spanned;

use super::error::{ConfigError, ConfigWarning};
use super::partial::PartialConfig;
use super::tree::{self, Node};

/// Deeper than any valid file (5 levels: `periodic.windows[0].days[0]`), and shallow enough
/// that the recursive parse of a hostile file fits in a 2 MiB thread stack (tokio's default).
pub(crate) const MAX_DEPTH: usize = 16;

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // The snippet would copy lines of the file into the error; the position is enough.
    options.with_snippet = false;
    options
}

pub(crate) fn parse(
    file: &Path,
    text: &str,
) -> Result<(PartialConfig, Vec<ConfigWarning>), ConfigError> {
    let tree: Spanned<Node> = serde_saphyr::from_str_with_options(text, options())
        .map_err(|e| yaml_error(file, &e, None))?;
    match tree.value {
        // Empty, or only comments: valid, and changes nothing.
        Node::Null => return Ok((PartialConfig::default(), Vec::new())),
        Node::Map(_) => {}
        Node::Scalar | Node::Seq(_) => {
            return Err(ConfigError::at(
                file,
                tree.referenced,
                "expected a mapping of keys to values (`key: value` lines) at the top level",
            ));
        }
    }
    let warnings = tree::unknown_keys(&tree)
        .into_iter()
        .map(|u| ConfigWarning {
            file: file.to_path_buf(),
            line: u.at.line(),
            column: u.at.column(),
            message: format!("unknown key {:?} (ignored)", u.path),
        })
        .collect();
    let partial = serde_saphyr::from_str_with_options(text, options())
        .map_err(|e| yaml_error(file, &e, Some(&tree)))?;
    Ok((partial, warnings))
}

/// serde-saphyr's error as `file:line:column: key: message`: the position goes to the front,
/// where tools look for it, and the key says what the message (often about a type) concerns.
fn yaml_error(file: &Path, e: &serde_saphyr::Error, tree: Option<&Spanned<Node>>) -> ConfigError {
    let e = e.without_snippet();
    let mut message = match e {
        serde_saphyr::Error::MultipleDocuments { .. } => {
            "a configuration file holds one YAML document (remove the `---` line)".to_string()
        }
        serde_saphyr::Error::Budget { .. } => {
            format!("too large or nested deeper than {MAX_DEPTH} levels ({e})")
        }
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => match key {
            Some(k) => format!("duplicate key {k:?}"),
            None => "duplicate key".to_string(),
        },
        _ => friendlier(&e.to_string()),
    };
    let Some(at) = e.location().filter(|l| l.line() > 0) else {
        return ConfigError::File {
            path: file.to_path_buf(),
            message,
        };
    };
    let (line, column) = (at.line(), at.column());
    for suffix in [
        format!(" at line {line}, column {column}"),
        format!(" at line {line} column {column}"),
    ] {
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
    }
    if let Some(path) = tree.and_then(|t| tree::path_at(t, line, column)) {
        message = format!("{path}: {message}");
    }
    ConfigError::at(file, at, message)
}

/// serde-saphyr's words for a wrong kind of node are a parser's; say what the file needs.
fn friendlier(message: &str) -> String {
    const PLAIN: [(&str, &str); 3] = [
        ("expected sequence start", "expected a list"),
        (
            "expected mapping start",
            "expected a mapping of keys to values",
        ),
        (
            "expected string scalar",
            "expected a single value, not a list or a mapping",
        ),
    ];
    for (parser, plain) in PLAIN {
        if let Some(rest) = message.strip_prefix(parser) {
            return format!("{plain}{rest}");
        }
    }
    message.to_string()
}
