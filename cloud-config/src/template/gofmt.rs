//! How Go spells values: `fmt`'s `%v` and `Printf` verbs, `strconv.Quote`, `encoding/json`.
//! Output produced by yip must match byte for byte, so float layout and escaping follow Go's
//! rules rather than Rust's.

use std::fmt::Write as _;

use serde_json::{Number, Value};

use super::MAX_BYTES;
use super::value::{Num, go_type, num, sorted_keys};

/// `%v` of a value inside `fmt` (nil prints `<nil>`; the top-level `<no value>` is the
/// executor's business).
pub(super) fn write_v(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number_v(n)),
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_v(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            for (i, k) in sorted_keys(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_v(out, x);
                }
            }
            out.push(']');
        }
    }
}

pub(super) fn to_v(v: &Value) -> String {
    let mut s = String::new();
    write_v(&mut s, v);
    s
}

/// A number as `%v` prints it: integers plainly, floats in Go's shortest `%g`.
pub(super) fn number_v(n: &Number) -> String {
    match num(n) {
        Num::Int(i) => i.to_string(),
        Num::Float(f) => format_g(f, None, false),
    }
}

/// `fmt.Sprint`: a space between operands when neither is a string.
pub(super) fn sprint(args: &[&Value]) -> String {
    let mut out = String::new();
    let mut prev_string = false;
    for (i, a) in args.iter().enumerate() {
        let is_string = a.is_string();
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        write_v(&mut out, a);
        prev_string = is_string;
    }
    out
}

/// `fmt.Sprintln`: always spaces, and a newline at the end.
pub(super) fn sprintln(args: &[&Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_v(&mut out, a);
    }
    out.push('\n');
    out
}

// ---- floats ----

/// Decimal digits of |f| without leading or trailing zeros (none for zero) and the position
/// of the decimal point: |f| = 0.DIGITS × 10^dp. `sig` rounds to that many significant
/// digits; `None` gives the shortest digits that read back as `f` (both Go and Rust use it).
fn decimal(f: f64, sig: Option<usize>) -> (Vec<u8>, i32) {
    let s = match sig {
        None => format!("{:e}", f.abs()),
        Some(n) => format!("{:.*e}", n.saturating_sub(1), f.abs()),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits.is_empty() {
        return (digits, 0);
    }
    (digits, exp + 1)
}

fn len_i32(d: &[u8]) -> i32 {
    i32::try_from(d.len()).unwrap_or(i32::MAX)
}

/// Go's `%e` layout: d.ddde±XX with `prec` digits after the point.
fn fmt_e(out: &mut String, digs: &[u8], dp: i32, prec: i32, e: char) {
    out.push(char::from(digs.first().copied().unwrap_or(b'0')));
    if prec > 0 {
        out.push('.');
        let mut i = 1;
        let m = len_i32(digs).min(prec + 1);
        while i < m {
            out.push(char::from(digs[i as usize]));
            i += 1;
        }
        while i <= prec {
            out.push('0');
            i += 1;
        }
    }
    out.push(e);
    let exp = if digs.is_empty() { 0 } else { dp - 1 };
    out.push(if exp < 0 { '-' } else { '+' });
    let abs = exp.unsigned_abs();
    if abs < 10 {
        out.push('0');
    }
    let _ = write!(out, "{abs}");
}

/// Go's `%f` layout from decimal digits, `prec` digits after the point.
fn fmt_f(out: &mut String, digs: &[u8], dp: i32, prec: i32) {
    let nd = len_i32(digs);
    if dp > 0 {
        for j in 0..dp {
            out.push(if j < nd {
                char::from(digs[j as usize])
            } else {
                '0'
            });
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for i in 0..prec {
            let j = dp + i;
            out.push(if j >= 0 && j < nd {
                char::from(digs[j as usize])
            } else {
                '0'
            });
        }
    }
}

fn sign(out: &mut String, f: f64) {
    if f.is_sign_negative() {
        out.push('-');
    }
}

/// `%g` (and `%v`): shortest when `prec` is `None`; `upper` gives `%G`.
pub(super) fn format_g(f: f64, prec: Option<usize>, upper: bool) -> String {
    let e = if upper { 'E' } else { 'e' };
    let mut out = String::new();
    sign(&mut out, f);
    let shortest = prec.is_none();
    let (digs, dp) = decimal(f, prec.map(|p| p.max(1)));
    let nd = len_i32(&digs);
    let prec = prec.map_or(nd, |p| i32::try_from(p.max(1)).unwrap_or(i32::MAX));
    let mut eprec = prec;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if shortest {
        eprec = 6;
    }
    let exp = dp - 1;
    if exp < -4 || exp >= eprec {
        fmt_e(&mut out, &digs, dp, prec.min(nd) - 1, e);
    } else {
        let p = if prec > dp { nd } else { prec };
        fmt_f(&mut out, &digs, dp, (p - dp).max(0));
    }
    out
}

/// `%e` with `prec` digits after the point.
fn format_e(f: f64, prec: usize, upper: bool) -> String {
    let mut out = String::new();
    sign(&mut out, f);
    let (digs, dp) = decimal(f, Some(prec.saturating_add(1)));
    let p = i32::try_from(prec).unwrap_or(i32::MAX);
    fmt_e(&mut out, &digs, dp, p, if upper { 'E' } else { 'e' });
    out
}

/// `%f` with `prec` digits after the point (Rust rounds exactly, like Go).
fn format_f(f: f64, prec: usize) -> String {
    let mut out = String::new();
    sign(&mut out, f);
    let _ = write!(out, "{:.*}", prec, f.abs());
    out
}

// ---- strconv.Quote ----

/// Format characters Go's `IsPrint` rejects (a practical subset of Unicode's Cf).
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

fn is_print(c: char) -> bool {
    !(c.is_control() || (c.is_whitespace() && c != ' ') || is_format_char(c))
}

/// `strconv.Quote`, as `%q` and Sprig's `quote` use it.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        escape_char(&mut out, c, '"');
    }
    out.push('"');
    out
}

fn escape_char(out: &mut String, c: char, q: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        c if c == q => {
            out.push('\\');
            out.push(c);
        }
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if is_print(c) => out.push(c),
        c if u32::from(c) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if u32::from(c) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\U{:08x}", u32::from(c));
        }
    }
}

/// `strconv.QuoteRune`, for `%q` of an integer.
fn quote_rune(c: char) -> String {
    let mut out = String::from("'");
    escape_char(&mut out, c, '\'');
    out.push('\'');
    out
}

/// `%#q`: a raw string when Go's `CanBackquote` allows it.
fn backquote(s: &str) -> Option<String> {
    let ok = s
        .chars()
        .all(|c| c != '`' && c != '\u{feff}' && (c == '\t' || !c.is_control()));
    ok.then(|| format!("`{s}`"))
}

// ---- Printf ----

#[derive(Default, Clone, Copy)]
struct Spec {
    plus: bool,
    minus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Go's limit on width and precision (`%!(BADWIDTH)` beyond it).
const TOO_LARGE: usize = 1_000_000;

/// `fmt.Sprintf` for the verbs templates use: `%v %s %d %q %x %X %o %b %c %U %e %f %g %t %T
/// %%`, flags `+ - # 0 space`, width and precision (also `*`). Errors are spelled inline the
/// way Go does (`%!d(string=x)`, `%!s(MISSING)`, `%!(EXTRA ...)`).
pub(super) fn sprintf(format: &str, args: &[&Value]) -> String {
    let mut out = String::with_capacity(format.len());
    let mut argn = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '+' => spec.plus = true,
                '-' => spec.minus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                _ => break,
            }
            chars.next();
        }
        let mut bad_width = false;
        spec.width = star_or_digits(&mut chars, args, &mut argn, &mut bad_width, &mut spec.minus);
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut ignored = false;
            spec.prec = Some(
                star_or_digits(&mut chars, args, &mut argn, &mut bad_width, &mut ignored)
                    .unwrap_or(0),
            );
        }
        if bad_width {
            out.push_str("%!(BADWIDTH)");
            continue;
        }
        if spec.minus {
            spec.zero = false;
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        if out.len() > MAX_BYTES {
            break;
        }
        let Some(arg) = args.get(argn) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        argn += 1;
        format_arg(&mut out, spec, verb, arg);
    }
    if argn < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[argn..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            if a.is_null() {
                out.push_str("<nil>");
            } else {
                out.push_str(go_type(a));
                out.push('=');
                write_v(&mut out, a);
            }
        }
        out.push(')');
    }
    out
}

/// Width or precision: digits, or `*` taking an int argument (negative width means `-`).
fn star_or_digits(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    args: &[&Value],
    argn: &mut usize,
    bad: &mut bool,
    minus: &mut bool,
) -> Option<usize> {
    if chars.peek() == Some(&'*') {
        chars.next();
        let n = args
            .get(*argn)
            .and_then(|v| v.as_number())
            .and_then(|n| num(n).int());
        *argn += 1;
        let Some(n) = n else {
            *bad = true;
            return None;
        };
        if n < 0 {
            *minus = true;
        }
        let n = usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX);
        if n > TOO_LARGE {
            *bad = true;
        }
        return Some(n);
    }
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        chars.next();
        let v = n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize);
        if v > TOO_LARGE {
            *bad = true;
        }
        n = Some(v);
    }
    n
}

fn format_arg(out: &mut String, spec: Spec, verb: char, v: &Value) {
    if verb == 'T' {
        pad(out, spec, go_type(v), false);
        return;
    }
    match v {
        Value::Null => {
            if verb == 'v' {
                pad(out, spec, "<nil>", false);
            } else {
                let _ = write!(out, "%!{verb}(<nil>)");
            }
        }
        Value::Bool(b) => match verb {
            't' | 'v' => pad(out, spec, if *b { "true" } else { "false" }, false),
            _ => bad_verb(out, verb, v),
        },
        Value::Number(n) => format_number(out, spec, verb, v, num(n)),
        Value::String(s) => format_string(out, spec, verb, v, s),
        // A width repeats per element: stop once past the size any result may have (the
        // caller then refuses the result).
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if out.len() > MAX_BYTES {
                    return;
                }
                if i > 0 {
                    out.push(' ');
                }
                format_arg(out, spec, verb, x);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            for (i, k) in sorted_keys(m).into_iter().enumerate() {
                if out.len() > MAX_BYTES {
                    return;
                }
                if i > 0 {
                    out.push(' ');
                }
                format_string(out, spec, verb, &Value::Null, k);
                out.push(':');
                if let Some(x) = m.get(k) {
                    format_arg(out, spec, verb, x);
                }
            }
            out.push(']');
        }
    }
}

fn bad_verb(out: &mut String, verb: char, v: &Value) {
    let _ = write!(out, "%!{verb}({}=", go_type(v));
    write_v(out, v);
    out.push(')');
}

/// Pads to the width with spaces (or zeros after any sign when `numeric` and `0` is set).
fn pad(out: &mut String, spec: Spec, s: &str, numeric: bool) {
    let len = s.chars().count();
    let Some(w) = spec.width.filter(|&w| w > len) else {
        out.push_str(s);
        return;
    };
    let fill = w - len;
    if spec.minus {
        out.push_str(s);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if spec.zero {
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+' | b'-' | b' ') if numeric => s.split_at(1),
            _ => ("", s),
        };
        out.push_str(sign);
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(rest);
    } else {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(s);
    }
}

fn format_string(out: &mut String, spec: Spec, verb: char, v: &Value, s: &str) {
    let s: &str = match spec.prec {
        Some(p) => match s.char_indices().nth(p) {
            Some((i, _)) => &s[..i],
            None => s,
        },
        None => s,
    };
    match verb {
        'v' | 's' => pad(out, spec, s, false),
        'q' => {
            let q = if spec.sharp { backquote(s) } else { None };
            pad(out, spec, &q.unwrap_or_else(|| quote(s)), false);
        }
        'x' | 'X' => {
            let mut h = String::with_capacity(s.len() * 2);
            for (i, b) in s.bytes().enumerate() {
                if spec.space && i > 0 {
                    h.push(' ');
                }
                if spec.sharp && (spec.space || i == 0) {
                    h.push_str(if verb == 'x' { "0x" } else { "0X" });
                }
                let _ = if verb == 'x' {
                    write!(h, "{b:02x}")
                } else {
                    write!(h, "{b:02X}")
                };
            }
            pad(out, spec, &h, false);
        }
        _ => {
            // Map keys reach here with a null stand-in; report them as the strings they are.
            let shown = if v.is_null() {
                Value::String(s.to_owned())
            } else {
                v.clone()
            };
            bad_verb(out, verb, &shown);
        }
    }
}

fn format_number(out: &mut String, spec: Spec, verb: char, v: &Value, n: Num) {
    let float_verb = matches!(verb, 'e' | 'E' | 'f' | 'F' | 'g' | 'G');
    match (n, verb) {
        (Num::Int(i), 'v') => format_int(out, spec, 'd', i),
        (Num::Float(f), 'v') => format_float(out, spec, 'g', f),
        (Num::Float(f), _) if float_verb => format_float(out, spec, verb, f),
        // Lenient where Go is strict: integers take float verbs, integral floats int verbs.
        (Num::Int(i), _) if float_verb => format_float(out, spec, verb, i as f64),
        (_, 'd' | 'b' | 'o' | 'O' | 'x' | 'X' | 'c' | 'q' | 'U') => match n.int() {
            Some(i) => format_int(out, spec, verb, i),
            None => bad_verb(out, verb, v),
        },
        _ => bad_verb(out, verb, v),
    }
}

fn format_int(out: &mut String, spec: Spec, verb: char, i: i128) {
    let mag = i.unsigned_abs();
    match verb {
        'c' => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{fffd}');
            return pad(out, spec, c.encode_utf8(&mut [0; 4]), false);
        }
        'q' => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{fffd}');
            return pad(out, spec, &quote_rune(c), false);
        }
        'U' => {
            let mut s = format!("U+{mag:04X}");
            if i < 0 {
                s.insert(0, '-');
            }
            return pad(out, spec, &s, false);
        }
        _ => {}
    }
    let mut digits = match verb {
        'b' => format!("{mag:b}"),
        'o' | 'O' => format!("{mag:o}"),
        'x' => format!("{mag:x}"),
        'X' => format!("{mag:X}"),
        _ => mag.to_string(),
    };
    if let Some(p) = spec.prec {
        if p == 0 && mag == 0 {
            digits.clear();
        } else if digits.len() < p {
            digits.insert_str(0, &"0".repeat(p - digits.len()));
        }
    }
    let prefix = match verb {
        'O' => "0o",
        'x' if spec.sharp => "0x",
        'X' if spec.sharp => "0X",
        'b' if spec.sharp => "0b",
        'o' if spec.sharp && !digits.starts_with('0') => "0",
        _ => "",
    };
    let sign = if i < 0 {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    let body = format!("{prefix}{digits}");
    // Go zero-pads integers only without a precision.
    let spec = Spec {
        zero: spec.zero && spec.prec.is_none(),
        ..spec
    };
    if spec.zero && !spec.minus {
        let len = sign.len() + body.chars().count();
        let fill = spec.width.unwrap_or(0).saturating_sub(len);
        out.push_str(sign);
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(&body);
    } else {
        pad(out, spec, &format!("{sign}{body}"), true);
    }
}

fn format_float(out: &mut String, spec: Spec, verb: char, f: f64) {
    let mut s = match verb {
        'e' | 'E' => format_e(f, spec.prec.unwrap_or(6), verb == 'E'),
        'f' | 'F' => format_f(f, spec.prec.unwrap_or(6)),
        _ => format_g(f, spec.prec, verb == 'G'),
    };
    if !s.starts_with('-') {
        if spec.plus {
            s.insert(0, '+');
        } else if spec.space {
            s.insert(0, ' ');
        }
    }
    pad(out, spec, &s, true);
}

// ---- encoding/json ----

/// `json.Marshal` (compact) or `json.MarshalIndent(v, "", "  ")` (`pretty`); `escape_html`
/// turns `<`, `>`, `&` into `\u003c` etc. as `json.Marshal` does by default.
pub(super) fn json(v: &Value, pretty: bool, escape_html: bool) -> String {
    let mut out = String::new();
    json_value(&mut out, v, pretty, escape_html, 0);
    out
}

fn newline(out: &mut String, pretty: bool, depth: usize) {
    if pretty {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    }
}

fn json_value(out: &mut String, v: &Value, pretty: bool, html: bool, depth: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match num(n) {
            Num::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Num::Float(f) => out.push_str(&json_float(f)),
        },
        Value::String(s) => json_string(out, s, html),
        Value::Array(a) => {
            if a.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, pretty, depth + 1);
                json_value(out, x, pretty, html, depth + 1);
            }
            newline(out, pretty, depth);
            out.push(']');
        }
        Value::Object(m) => {
            if m.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, k) in sorted_keys(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, pretty, depth + 1);
                json_string(out, k, html);
                out.push_str(if pretty { ": " } else { ":" });
                if let Some(x) = m.get(k) {
                    json_value(out, x, pretty, html, depth + 1);
                }
            }
            newline(out, pretty, depth);
            out.push('}');
        }
    }
}

/// Go's float encoding: plain decimals, exponent form only below 1e-6 or from 1e21.
fn json_float(f: f64) -> String {
    let mut out = String::new();
    sign(&mut out, f);
    let abs = f.abs();
    let (digs, dp) = decimal(f, None);
    let nd = len_i32(&digs);
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        fmt_e(&mut out, &digs, dp, nd - 1, 'e');
        // Go cleans e-09 up to e-9.
        if let Some(i) = out.find("e-0") {
            out.remove(i + 2);
        }
    } else {
        fmt_f(&mut out, &digs, dp, (nd - dp).max(0));
    }
    out
}

fn json_string(out: &mut String, s: &str, html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' if html => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---- escapers of text/template's html, js and urlquery ----

/// `template.HTMLEscapeString`.
pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `template.JSEscapeString`.
pub(super) fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c if u32::from(c) >= 0x80 && !is_print(c) => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// `url.QueryEscape`.
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}
