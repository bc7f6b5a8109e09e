//! Splits a template into text and the tokens inside its actions, following Go's lexer:
//! trim markers (`{{- ` and ` -}}`), comments, quoted/raw strings, numbers and characters.

use serde_json::Value;

use super::Fail;

/// Keywords that start or shape an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kw {
    If,
    Else,
    End,
    Range,
    With,
    Define,
    Template,
    Block,
    Break,
    Continue,
}

impl Kw {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kw::If => "if",
            Kw::Else => "else",
            Kw::End => "end",
            Kw::Range => "range",
            Kw::With => "with",
            Kw::Define => "define",
            Kw::Template => "template",
            Kw::Block => "block",
            Kw::Break => "break",
            Kw::Continue => "continue",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// Literal text between actions, already trimmed by any adjacent trim marker.
    Text(String),
    Open,
    Close,
    Ident(String),
    /// `.Name`, without the dot.
    Field(String),
    /// `$` or `$name`, with the dollar.
    Var(String),
    Str(String),
    /// A number or character constant, already converted.
    Num(Value),
    Bool(bool),
    Nil,
    Dot,
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
    Kw(Kw),
}

impl Tok {
    /// How an unexpected token is named in an error.
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Text(_) => "text".into(),
            Tok::Open => "\"{{\"".into(),
            Tok::Close => "\"}}\"".into(),
            Tok::Ident(s) => format!("{s:?}"),
            Tok::Field(s) => format!("\".{s}\""),
            Tok::Var(s) => format!("{s:?}"),
            Tok::Str(s) => format!("{s:?}"),
            Tok::Num(v) => format!("\"{v}\""),
            Tok::Bool(b) => format!("\"{b}\""),
            Tok::Nil => "\"nil\"".into(),
            Tok::Dot => "\".\"".into(),
            Tok::LParen => "\"(\"".into(),
            Tok::RParen => "\")\"".into(),
            Tok::Pipe => "\"|\"".into(),
            Tok::Declare => "\":=\"".into(),
            Tok::Assign => "\"=\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::Kw(k) => format!("<{}>", k.name()),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub tok: Tok,
    /// Byte range in the source, for error positions and contexts.
    pub pos: usize,
    pub end: usize,
    /// Whitespace came before it inside the action: Go separates operands by spaces, and
    /// `$x.A` (a field of `$x`) differs from `$x .A` (two operands).
    pub space_before: bool,
}

/// The space characters trim markers remove and that separate tokens (Go's own set).
const SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

fn is_space(c: char) -> bool {
    SPACE.contains(&c)
}

/// Go's `isAlphaNumeric`: what names of fields, variables and functions are made of.
fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphabetic() || c.is_numeric()
}

pub(super) fn lex(src: &str) -> Result<Vec<Token>, Fail> {
    let mut lx = Lexer {
        src,
        pos: 0,
        toks: Vec::new(),
        trim_next: false,
    };
    lx.run()?;
    Ok(lx.toks)
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
    toks: Vec<Token>,
    /// The previous action ended with ` -}}`: trim the start of the next text.
    trim_next: bool,
}

impl<'s> Lexer<'s> {
    fn rest(&self) -> &'s str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn at(&self, pos: usize) -> &'s str {
        self.src.get(pos..).unwrap_or("")
    }

    fn push(&mut self, tok: Tok, pos: usize, space_before: bool) {
        self.toks.push(Token {
            tok,
            pos,
            end: self.pos,
            space_before,
        });
    }

    fn run(&mut self) -> Result<(), Fail> {
        loop {
            let Some(off) = self.rest().find("{{") else {
                self.text(self.pos, self.src.len(), false);
                return Ok(());
            };
            let open = self.pos + off;
            let left_trim = has_left_trim(self.at(open + 2));
            self.text(self.pos, open, left_trim);
            let inner = open + if left_trim { 4 } else { 2 };
            if self.at(inner).starts_with("/*") {
                self.comment(open, inner)?;
                continue;
            }
            self.pos = inner;
            self.push(Tok::Open, open, false);
            self.action(open)?;
        }
    }

    fn text(&mut self, start: usize, end: usize, trim_end: bool) {
        let mut t = self.src.get(start..end).unwrap_or("");
        if std::mem::take(&mut self.trim_next) {
            t = t.trim_start_matches(SPACE);
        }
        if trim_end {
            t = t.trim_end_matches(SPACE);
        }
        if !t.is_empty() {
            self.toks.push(Token {
                tok: Tok::Text(t.to_owned()),
                pos: start,
                end,
                space_before: false,
            });
        }
    }

    /// A comment must fill its action: `{{/* ... */}}`, optionally with trim markers.
    fn comment(&mut self, open: usize, inner: usize) -> Result<(), Fail> {
        let body = inner + 2;
        let Some(off) = self.at(body).find("*/") else {
            return Err(Fail::parse(open, "unclosed comment"));
        };
        let after = body + off + 2;
        let rest = self.at(after);
        if rest.starts_with("}}") {
            self.pos = after + 2;
        } else if has_right_trim(rest) {
            self.pos = after + 4;
            self.trim_next = true;
        } else {
            return Err(Fail::parse(open, "comment ends before closing delimiter"));
        }
        Ok(())
    }

    /// Tokens up to and including the closing delimiter.
    fn action(&mut self, open: usize) -> Result<(), Fail> {
        let mut space = true;
        loop {
            let rest = self.rest();
            let start = self.pos;
            if rest.starts_with("}}") {
                self.pos += 2;
                self.push(Tok::Close, start, space);
                return Ok(());
            }
            if has_right_trim(rest) {
                self.pos += 4;
                self.trim_next = true;
                self.push(Tok::Close, start, true);
                return Ok(());
            }
            let Some(c) = rest.chars().next() else {
                return Err(Fail::parse(open, "unclosed action"));
            };
            if is_space(c) {
                self.pos += 1;
                space = true;
                continue;
            }
            let tok = match c {
                '"' => self.quoted()?,
                '`' => self.raw()?,
                '\'' => self.char_const()?,
                '$' => {
                    self.pos += 1;
                    let name = self.take_alnum();
                    Tok::Var(format!("${name}"))
                }
                '.' => {
                    let next = rest[1..].chars().next();
                    match next {
                        Some(d) if d.is_ascii_digit() => self.number()?,
                        Some(a) if is_alnum(a) => {
                            self.pos += 1;
                            Tok::Field(self.take_alnum().to_owned())
                        }
                        _ => {
                            self.pos += 1;
                            Tok::Dot
                        }
                    }
                }
                '+' | '-' | '0'..='9' => self.number()?,
                c if c == '_' || c.is_alphabetic() => {
                    let word = self.take_alnum();
                    keyword(word).unwrap_or_else(|| Tok::Ident(word.to_owned()))
                }
                '(' | ')' | '|' | ',' | '=' => {
                    self.pos += 1;
                    match c {
                        '(' => Tok::LParen,
                        ')' => Tok::RParen,
                        '|' => Tok::Pipe,
                        ',' => Tok::Comma,
                        _ => Tok::Assign,
                    }
                }
                ':' => {
                    if !rest.starts_with(":=") {
                        return Err(Fail::parse(start, "expected :="));
                    }
                    self.pos += 2;
                    Tok::Declare
                }
                other => {
                    return Err(Fail::parse(
                        start,
                        format!(
                            "unrecognized character in action: U+{:04X} {other:?}",
                            u32::from(other)
                        ),
                    ));
                }
            };
            self.push(tok, start, space);
            space = false;
        }
    }

    fn take_alnum(&mut self) -> &'s str {
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(_, c)| !is_alnum(c))
            .map_or(rest.len(), |(i, _)| i);
        self.pos += len;
        &rest[..len]
    }

    /// The body of a quoted literal up to its closing `quote`; newlines are not allowed.
    fn quoted_body(&mut self, quote: char, what: &str) -> Result<&'s str, Fail> {
        let start = self.pos;
        let body = &self.rest()[1..];
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, '\n')) | None => break,
                    Some(_) => {}
                },
                '\n' => break,
                c if c == quote => {
                    self.pos += 1 + i + 1;
                    return Ok(&body[..i]);
                }
                _ => {}
            }
        }
        Err(Fail::parse(start, format!("unterminated {what}")))
    }

    fn quoted(&mut self) -> Result<Tok, Fail> {
        let start = self.pos;
        let body = self.quoted_body('"', "quoted string")?;
        let units = unescape(body, '"').ok_or_else(|| Fail::parse(start, "invalid syntax"))?;
        let mut bytes = Vec::with_capacity(body.len());
        for u in units {
            match u {
                Unit::Byte(b) => bytes.push(b),
                Unit::Char(c) => {
                    let mut buf = [0; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        Ok(Tok::Str(String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn raw(&mut self) -> Result<Tok, Fail> {
        let start = self.pos;
        let body = &self.rest()[1..];
        let Some(end) = body.find('`') else {
            return Err(Fail::parse(start, "unterminated raw quoted string"));
        };
        self.pos += end + 2;
        // strconv.Unquote drops carriage returns from raw strings.
        Ok(Tok::Str(body[..end].replace('\r', "")))
    }

    fn char_const(&mut self) -> Result<Tok, Fail> {
        let start = self.pos;
        let body = self.quoted_body('\'', "character constant")?;
        let units = unescape(body, '\'').unwrap_or_default();
        let code = match units.as_slice() {
            [Unit::Byte(b)] => u32::from(*b),
            [Unit::Char(c)] => u32::from(*c),
            _ => {
                return Err(Fail::parse(
                    start,
                    format!("malformed character constant: '{body}'"),
                ));
            }
        };
        Ok(Tok::Num(Value::from(code)))
    }

    /// Go's `scanNumber`: sign, base prefix, digits, fraction, exponent; then converted.
    fn number(&mut self) -> Result<Tok, Fail> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let mut i = start;
        let accept = |i: &mut usize, set: &[u8]| -> bool {
            if bytes.get(*i).is_some_and(|b| set.contains(b)) {
                *i += 1;
                true
            } else {
                false
            }
        };
        let accept_run = |i: &mut usize, set: &[u8]| {
            while bytes.get(*i).is_some_and(|b| set.contains(b)) {
                *i += 1;
            }
        };
        accept(&mut i, b"+-");
        let mut digits: &[u8] = b"0123456789_";
        let mut decimal = true;
        if accept(&mut i, b"0") {
            if accept(&mut i, b"xX") {
                digits = b"0123456789abcdefABCDEF_";
                decimal = false;
            } else if accept(&mut i, b"oO") {
                digits = b"01234567_";
                decimal = false;
            } else if accept(&mut i, b"bB") {
                digits = b"01_";
                decimal = false;
            }
        }
        accept_run(&mut i, digits);
        if accept(&mut i, b".") {
            accept_run(&mut i, digits);
        }
        if decimal && accept(&mut i, b"eE") {
            accept(&mut i, b"+-");
            accept_run(&mut i, b"0123456789_");
        }
        let text = self.src.get(start..i).unwrap_or("");
        self.pos = i;
        let next = self.rest().chars().next();
        if next.is_some_and(is_alnum) || text.is_empty() {
            let bad_end = i + next.map_or(0, char::len_utf8);
            let bad = self.src.get(start..bad_end).unwrap_or(text);
            return Err(Fail::parse(start, format!("bad number syntax: {bad:?}")));
        }
        number(text)
            .map(Tok::Num)
            .ok_or_else(|| Fail::parse(start, format!("bad number syntax: {text:?}")))
    }
}

fn has_left_trim(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0] == b'-' && is_space(char::from(b[1]))
}

fn has_right_trim(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 4 && is_space(char::from(b[0])) && &b[1..4] == b"-}}"
}

fn keyword(word: &str) -> Option<Tok> {
    Some(match word {
        "if" => Tok::Kw(Kw::If),
        "else" => Tok::Kw(Kw::Else),
        "end" => Tok::Kw(Kw::End),
        "range" => Tok::Kw(Kw::Range),
        "with" => Tok::Kw(Kw::With),
        "define" => Tok::Kw(Kw::Define),
        "template" => Tok::Kw(Kw::Template),
        "block" => Tok::Kw(Kw::Block),
        "break" => Tok::Kw(Kw::Break),
        "continue" => Tok::Kw(Kw::Continue),
        "true" => Tok::Bool(true),
        "false" => Tok::Bool(false),
        "nil" => Tok::Nil,
        _ => return None,
    })
}

/// A decoded piece of a quoted literal: `\x` and octal escapes are raw bytes in Go strings.
#[derive(Debug)]
enum Unit {
    Byte(u8),
    Char(char),
}

/// Go's `strconv.Unquote` escapes; `None` on an invalid one.
fn unescape(body: &str, quote: char) -> Option<Vec<Unit>> {
    let mut out = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(Unit::Char(c));
            continue;
        }
        let e = chars.next()?;
        let simple = match e {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' => Some('\\'),
            q if q == quote => Some(q),
            _ => None,
        };
        if let Some(s) = simple {
            out.push(Unit::Char(s));
            continue;
        }
        let mut hex = |n: usize| -> Option<u32> {
            let mut v = 0u32;
            for _ in 0..n {
                v = v * 16 + chars.next()?.to_digit(16)?;
            }
            Some(v)
        };
        match e {
            'x' => out.push(Unit::Byte(u8::try_from(hex(2)?).ok()?)),
            'u' => out.push(Unit::Char(char::from_u32(hex(4)?)?)),
            'U' => out.push(Unit::Char(char::from_u32(hex(8)?)?)),
            '0'..='7' => {
                let mut v = e.to_digit(8)?;
                for _ in 0..2 {
                    v = v * 8 + chars.next()?.to_digit(8)?;
                }
                out.push(Unit::Byte(u8::try_from(v).ok()?));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Converts a number literal as Go's parser does: integers (any base prefix, `_` separators)
/// stay integers, anything with a fraction or exponent is a float.
pub(super) fn number(text: &str) -> Option<Value> {
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit())
    {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if !underscores_ok(digits) {
        return None;
    }
    let clean = digits.replace('_', "");
    if radix == 10 && clean.contains(['.', 'e']) {
        let f: f64 = clean.parse().ok()?;
        let f = if neg { -f } else { f };
        return f.is_finite().then(|| Value::from(f));
    }
    if clean.is_empty() || clean.contains('.') {
        return None;
    }
    let mag = u128::from_str_radix(&clean, radix).ok()?;
    let mag = i128::try_from(mag).ok()?;
    let n = if neg { -mag } else { mag };
    if let Ok(i) = i64::try_from(n) {
        Some(Value::from(i))
    } else {
        u64::try_from(n).ok().map(Value::from)
    }
}

/// Underscores only between digits (Go's `underscoreOK`, simplified to the digit body).
fn underscores_ok(digits: &str) -> bool {
    !digits.starts_with('_') && !digits.ends_with('_') && !digits.contains("__")
}
