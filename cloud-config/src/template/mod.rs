//! Go `text/template` rendering with the Sprig functions yip configurations use.
//!
//! yip renders `commands`, `if`, file contents, entity definitions and environment values with
//! `{"Values": <system info>}` as data, and hostnames with `{UUID, Random, MachineID,
//! ProtectedID}`, using Go's `text/template` plus `sprig.TxtFuncMap()`. This module is the
//! engine: the caller builds the data.
//!
//! Layout: [`lex`] splits text from action tokens, [`parse`] builds the tree, [`exec`] walks it,
//! [`funcs`] holds Go's builtins and the function table, [`sprig`] the Sprig functions,
//! [`gofmt`] how Go spells values (`fmt`, `strconv.Quote`, `encoding/json`), [`value`] the
//! value model shared by all of them.
//!
//! Where Go's typing cannot be reproduced on JSON values the engine is lenient: integers and
//! floats compare with each other, and an integer-valued float is accepted where Go wants an
//! `int`. Data numbers that are JSON integers print as integers (yip's own data has float64
//! numbers, which Go prints as `1.6e+07` from a million on).
//!
//! Templates come from untrusted configuration files, so every step is bounded: nesting depth
//! ([`MAX_NESTING`]), size of output and of any value ([`MAX_BYTES`]), and total work
//! ([`BUDGET`]).

mod args;
mod exec;
mod funcs;
mod gofmt;
mod lex;
mod parse;
mod sprig;
mod value;

#[cfg(test)]
mod tests;

/// Deepest nesting of blocks and parentheses in a template. Execution, where `{{template}}`
/// calls add levels, allows twice as many.
pub(crate) const MAX_NESTING: usize = 64;
/// Largest output, and largest value (string bytes plus one per node) a template may build.
pub(crate) const MAX_BYTES: usize = 16 << 20;
/// Deepest nesting of arrays and objects in data and in built values; keeps printing and
/// encoding (which recurse) far from the stack limit.
pub(crate) const MAX_VALUE_DEPTH: usize = 256;
/// Work units one rendering may spend: one per node, command and range iteration, plus one
/// per 16 bytes of every value built. Stops `range` nests and recursive templates that would
/// otherwise run for hours without printing anything.
pub(crate) const BUDGET: u64 = 20_000_000;

/// A render failure: parse or execution error, with a short message (Go's style).
#[derive(Debug, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(pub String);

/// Renders `text` (Go text/template syntax) against `data` (a JSON value: `.` is `data`).
pub fn render(text: &str, data: &serde_json::Value) -> Result<String, TemplateError> {
    if !has_actions(text) {
        return Ok(text.to_owned());
    }
    if value::weight(data, usize::MAX).is_none() {
        return Err(TemplateError(format!(
            "data nested deeper than {MAX_VALUE_DEPTH} levels"
        )));
    }
    let tree = parse::parse(text).map_err(|f| f.into_error(text))?;
    exec::execute(&tree, data).map_err(|f| f.into_error(text))
}

/// True when `text` contains an action (`{{`); lets callers skip rendering plain strings.
pub fn has_actions(text: &str) -> bool {
    text.contains("{{")
}

/// A failure inside the engine, positioned so the message can name line and column the way
/// Go does (`:LINE: msg` when parsing, `:LINE:COL: executing "" at <ctx>: msg` when running).
#[derive(Debug)]
pub(crate) enum Fail {
    Parse {
        pos: usize,
        msg: String,
    },
    /// `pos..end` is the operand being evaluated; its text is the `<ctx>`.
    Exec {
        pos: usize,
        end: usize,
        msg: String,
    },
    /// A limit with no useful position (output size, work budget).
    Plain(String),
}

impl Fail {
    pub(crate) fn parse(pos: usize, msg: impl Into<String>) -> Fail {
        Fail::Parse {
            pos,
            msg: msg.into(),
        }
    }

    fn into_error(self, src: &str) -> TemplateError {
        match self {
            Fail::Parse { pos, msg } => {
                let (line, _) = line_col(src, pos);
                TemplateError(format!(":{line}: {msg}"))
            }
            Fail::Exec { pos, end, msg } => {
                let (line, col) = line_col(src, pos);
                let ctx = context(src.get(pos..end).unwrap_or(""));
                TemplateError(format!(":{line}:{col}: executing \"\" at <{ctx}>: {msg}"))
            }
            Fail::Plain(msg) => TemplateError(msg),
        }
    }
}

/// 1-based line and 0-based byte column of `pos`, as Go's `ErrorContext` reports them.
fn line_col(src: &str, pos: usize) -> (usize, usize) {
    let before = &src.as_bytes()[..pos.min(src.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let col = match before.iter().rposition(|&b| b == b'\n') {
        Some(nl) => before.len() - nl - 1,
        None => before.len(),
    };
    (line, col)
}

/// The operand text of an execution error: one line, at most 20 characters like Go's.
fn context(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 20 {
        let cut: String = flat.chars().take(20).collect();
        format!("{cut}...")
    } else {
        flat
    }
}
