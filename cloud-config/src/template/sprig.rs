//! The Sprig (Masterminds/sprig v3) functions yip configurations use. Argument order is
//! Sprig's: the subject comes last, so a piped value lands there (`{{ .X | trunc 4 }}`).
//!
//! Strings are cut on characters where Sprig (Go) cuts bytes: same result for ASCII, and no
//! broken UTF-8 for the rest.

use std::borrow::Cow;
use std::collections::HashSet;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::MAX_BYTES;
use super::args::{FnError, Out, PickRes, Res, call_err, want_bool, want_int, want_map, want_str};
use super::gofmt;
use super::value::{NULL, Num, Val, equal, float, kind_name, num, truthy};

fn arg<'v>(a: &[&'v Value], i: usize) -> &'v Value {
    a.get(i).copied().unwrap_or(&NULL)
}

fn string(s: impl Into<String>) -> Res {
    Ok(Value::String(s.into()))
}

fn too_large() -> FnError {
    call_err(format!("result larger than {MAX_BYTES} bytes"))
}

/// Sprig's `strval`: strings as they are, anything else as `%v` (nil is `<nil>`).
fn strval(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(gofmt::to_v(other)),
    }
}

/// Sprig's `strslice`: the string forms of a list's non-nil elements, or of a single value.
fn strslice(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter(|x| !x.is_null())
            .map(|x| strval(x).into_owned())
            .collect(),
        Value::Null => Vec::new(),
        other => vec![strval(other).into_owned()],
    }
}

fn take_chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

fn skip_chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or("", |(i, _)| &s[i..])
}

fn char_count(s: &str) -> i64 {
    i64::try_from(s.chars().count()).unwrap_or(i64::MAX)
}

fn to_usize(i: i64) -> usize {
    usize::try_from(i.max(0)).unwrap_or(usize::MAX)
}

// ---- strings ----

/// `trunc N s`: the first N characters, or with negative N the last |N|.
pub(super) fn trunc(a: &[&Value]) -> Res {
    let c = want_int(arg(a, 0))?;
    let s = want_str(arg(a, 1))?;
    let n = char_count(s);
    let out = if c < 0 && n.saturating_add(c) > 0 {
        skip_chars(s, to_usize(n + c))
    } else if c >= 0 && n > c {
        take_chars(s, to_usize(c))
    } else {
        s
    };
    string(out)
}

pub(super) fn trim(a: &[&Value]) -> Res {
    string(want_str(arg(a, 0))?.trim())
}

/// `trimAll CUTSET s`.
pub(super) fn trim_all(a: &[&Value]) -> Res {
    let cut = want_str(arg(a, 0))?;
    string(want_str(arg(a, 1))?.trim_matches(|c| cut.contains(c)))
}

pub(super) fn trim_prefix(a: &[&Value]) -> Res {
    let p = want_str(arg(a, 0))?;
    let s = want_str(arg(a, 1))?;
    string(s.strip_prefix(p).unwrap_or(s))
}

pub(super) fn trim_suffix(a: &[&Value]) -> Res {
    let p = want_str(arg(a, 0))?;
    let s = want_str(arg(a, 1))?;
    string(s.strip_suffix(p).unwrap_or(s))
}

/// Go's simple (one rune to one rune) case mappings: `ß` stays `ß` in `upper`, as in Go.
fn simple(c: char, mut it: impl Iterator<Item = char>) -> char {
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

fn simple_upper(c: char) -> char {
    simple(c, c.to_uppercase())
}

fn simple_lower(c: char) -> char {
    simple(c, c.to_lowercase())
}

pub(super) fn upper(a: &[&Value]) -> Res {
    string(
        want_str(arg(a, 0))?
            .chars()
            .map(simple_upper)
            .collect::<String>(),
    )
}

pub(super) fn lower(a: &[&Value]) -> Res {
    string(
        want_str(arg(a, 0))?
            .chars()
            .map(simple_lower)
            .collect::<String>(),
    )
}

/// Go's `strings.Title` word boundaries.
fn is_separator(c: char) -> bool {
    if c.is_ascii() {
        !(c.is_ascii_alphanumeric() || c == '_')
    } else if c.is_alphabetic() || c.is_numeric() {
        false
    } else {
        c.is_whitespace()
    }
}

pub(super) fn title(a: &[&Value]) -> Res {
    let mut prev = ' ';
    let out: String = want_str(arg(a, 0))?
        .chars()
        .map(|c| {
            let r = if is_separator(prev) {
                simple_upper(c)
            } else {
                c
            };
            prev = c;
            r
        })
        .collect();
    string(out)
}

/// Lower-cases the first letter of each whitespace-separated word.
pub(super) fn untitle(a: &[&Value]) -> Res {
    let mut next = true;
    let out: String = want_str(arg(a, 0))?
        .chars()
        .map(|c| {
            if c.is_whitespace() {
                next = true;
                c
            } else if std::mem::take(&mut next) {
                simple_lower(c)
            } else {
                c
            }
        })
        .collect();
    string(out)
}

pub(super) fn repeat(a: &[&Value]) -> Res {
    let n = want_int(arg(a, 0))?;
    let s = want_str(arg(a, 1))?;
    if n < 0 {
        return Err(call_err("strings: negative Repeat count"));
    }
    if to_usize(n).saturating_mul(s.len()) > MAX_BYTES {
        return Err(too_large());
    }
    string(s.repeat(to_usize(n)))
}

/// `substr START END s`, clamped to the string instead of failing like Go's slicing.
pub(super) fn substr(a: &[&Value]) -> Res {
    let start = want_int(arg(a, 0))?;
    let end = want_int(arg(a, 1))?;
    let s = want_str(arg(a, 2))?;
    let n = char_count(s);
    let (from, to) = if start < 0 {
        (0, end)
    } else if end < 0 || end > n {
        (start, n)
    } else {
        (start, end)
    };
    let from = from.clamp(0, n);
    let to = to.clamp(from, n);
    string(take_chars(
        skip_chars(s, to_usize(from)),
        to_usize(to - from),
    ))
}

pub(super) fn nospace(a: &[&Value]) -> Res {
    string(
        want_str(arg(a, 0))?
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>(),
    )
}

/// `abbrev WIDTH s`: cut to WIDTH characters including a trailing `...`.
pub(super) fn abbrev(a: &[&Value]) -> Res {
    let w = want_int(arg(a, 0))?;
    let s = want_str(arg(a, 1))?;
    if w < 4 || char_count(s) <= w {
        return string(s);
    }
    string(format!("{}...", take_chars(s, to_usize(w - 3))))
}

pub(super) fn initials(a: &[&Value]) -> Res {
    let mut gap = true;
    let mut out = String::new();
    for c in want_str(arg(a, 0))?.chars() {
        if c.is_whitespace() {
            gap = true;
        } else if std::mem::take(&mut gap) {
            out.push(c);
        }
    }
    string(out)
}

/// `replace OLD NEW s` (all occurrences; an empty OLD inserts NEW around every character).
pub(super) fn replace(a: &[&Value]) -> Res {
    let old = want_str(arg(a, 0))?;
    let new = want_str(arg(a, 1))?;
    let s = want_str(arg(a, 2))?;
    let hits = if old.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(old).count()
    };
    if hits.saturating_mul(new.len()).saturating_add(s.len()) > MAX_BYTES {
        return Err(too_large());
    }
    string(s.replace(old, new))
}

pub(super) fn contains(a: &[&Value]) -> Res {
    let sub = want_str(arg(a, 0))?;
    Ok(Value::Bool(want_str(arg(a, 1))?.contains(sub)))
}

pub(super) fn has_prefix(a: &[&Value]) -> Res {
    let p = want_str(arg(a, 0))?;
    Ok(Value::Bool(want_str(arg(a, 1))?.starts_with(p)))
}

pub(super) fn has_suffix(a: &[&Value]) -> Res {
    let p = want_str(arg(a, 0))?;
    Ok(Value::Bool(want_str(arg(a, 1))?.ends_with(p)))
}

/// Joins the non-nil arguments, each formatted by `f`, with spaces.
fn join_non_nil(a: &[&Value], f: impl Fn(&Value) -> String) -> Res {
    let parts: Vec<String> = a.iter().filter(|v| !v.is_null()).map(|v| f(v)).collect();
    string(parts.join(" "))
}

pub(super) fn quote(a: &[&Value]) -> Res {
    join_non_nil(a, |v| gofmt::quote(&strval(v)))
}

pub(super) fn squote(a: &[&Value]) -> Res {
    join_non_nil(a, |v| format!("'{}'", strval(v)))
}

pub(super) fn cat(a: &[&Value]) -> Res {
    join_non_nil(a, gofmt::to_v)
}

fn indent_str(n: i64, s: &str) -> Result<String, FnError> {
    if n < 0 {
        return Err(call_err("strings: negative Repeat count"));
    }
    let lines = s.matches('\n').count() + 1;
    if lines.saturating_mul(to_usize(n)).saturating_add(s.len()) > MAX_BYTES {
        return Err(too_large());
    }
    let pad = " ".repeat(to_usize(n));
    Ok(format!("{pad}{}", s.replace('\n', &format!("\n{pad}"))))
}

pub(super) fn indent(a: &[&Value]) -> Res {
    string(indent_str(want_int(arg(a, 0))?, want_str(arg(a, 1))?)?)
}

pub(super) fn nindent(a: &[&Value]) -> Res {
    string(format!(
        "\n{}",
        indent_str(want_int(arg(a, 0))?, want_str(arg(a, 1))?)?
    ))
}

/// Go's `strings.SplitN` (`n < 0`: all parts; an empty separator splits into characters).
fn go_split(s: &str, sep: &str, n: i64) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let limit = if n < 0 { usize::MAX } else { to_usize(n) };
    if sep.is_empty() {
        let mut parts: Vec<String> = Vec::new();
        for (i, c) in s.char_indices() {
            if parts.len() + 1 == limit {
                parts.push(s[i..].to_owned());
                return parts;
            }
            parts.push(c.to_string());
        }
        return parts;
    }
    s.splitn(limit, sep).map(str::to_owned).collect()
}

/// Sprig's `split`/`splitn` results: an object with keys `_0`, `_1`, ...
fn indexed(parts: Vec<String>) -> Value {
    let mut m = Map::new();
    for (i, p) in parts.into_iter().enumerate() {
        m.insert(format!("_{i}"), Value::String(p));
    }
    Value::Object(m)
}

pub(super) fn split(a: &[&Value]) -> Res {
    let sep = want_str(arg(a, 0))?;
    Ok(indexed(go_split(want_str(arg(a, 1))?, sep, -1)))
}

pub(super) fn splitn(a: &[&Value]) -> Res {
    let sep = want_str(arg(a, 0))?;
    let n = want_int(arg(a, 1))?;
    Ok(indexed(go_split(want_str(arg(a, 2))?, sep, n)))
}

pub(super) fn split_list(a: &[&Value]) -> Res {
    let sep = want_str(arg(a, 0))?;
    let parts = go_split(want_str(arg(a, 1))?, sep, -1);
    Ok(Value::Array(parts.into_iter().map(Value::String).collect()))
}

/// `join SEP LIST`.
pub(super) fn join(a: &[&Value]) -> Res {
    let sep = want_str(arg(a, 0))?;
    string(strslice(arg(a, 1)).join(sep))
}

pub(super) fn sort_alpha(a: &[&Value]) -> Res {
    let v = arg(a, 0);
    let mut items = match v {
        Value::Array(_) => strslice(v),
        other => vec![strval(other).into_owned()],
    };
    items.sort();
    Ok(Value::Array(items.into_iter().map(Value::String).collect()))
}

pub(super) fn to_string(a: &[&Value]) -> Res {
    string(strval(arg(a, 0)).into_owned())
}

// ---- defaults and flow ----

/// `default DEFAULT VALUE`: VALUE when it is non-empty, else DEFAULT.
pub(super) fn default<'a>(a: &[Val<'a>]) -> PickRes<'a> {
    let d = a.first().cloned().unwrap_or_else(Val::null);
    Ok(Out::Keep(match a.get(1) {
        Some(given) if truthy(given) => given.clone(),
        _ => d,
    }))
}

pub(super) fn empty(a: &[&Value]) -> Res {
    Ok(Value::Bool(!truthy(arg(a, 0))))
}

pub(super) fn coalesce<'a>(a: &[Val<'a>]) -> PickRes<'a> {
    Ok(Out::Keep(
        a.iter()
            .find(|v| truthy(v))
            .cloned()
            .unwrap_or_else(Val::null),
    ))
}

/// `ternary IF_TRUE IF_FALSE COND`.
pub(super) fn ternary<'a>(a: &[Val<'a>]) -> PickRes<'a> {
    let cond = want_bool(a.get(2).map_or(&NULL, |v| &**v))?;
    let i = if cond { 0 } else { 1 };
    Ok(Out::Keep(a.get(i).cloned().unwrap_or_else(Val::null)))
}

// ---- encodings ----

pub(super) fn to_json(a: &[&Value]) -> Res {
    string(gofmt::json(arg(a, 0), false, true))
}

pub(super) fn to_pretty_json(a: &[&Value]) -> Res {
    string(gofmt::json(arg(a, 0), true, true))
}

pub(super) fn to_raw_json(a: &[&Value]) -> Res {
    string(gofmt::json(arg(a, 0), false, false))
}

/// Invalid JSON gives nil, as Sprig ignores the error.
pub(super) fn from_json(a: &[&Value]) -> Res {
    Ok(serde_json::from_str(want_str(arg(a, 0))?).unwrap_or(Value::Null))
}

pub(super) fn b64enc(a: &[&Value]) -> Res {
    string(base64::engine::general_purpose::STANDARD.encode(want_str(arg(a, 0))?))
}

/// Go's `StdEncoding`: padding required, stray bits in the last symbol tolerated, line
/// breaks skipped. A bad input decodes to Go's error text, as Sprig returns it.
pub(super) fn b64dec(a: &[&Value]) -> Res {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const GO_STD: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    let input: String = want_str(arg(a, 0))?
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    match GO_STD.decode(&input) {
        Ok(bytes) => string(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            let at = match e {
                base64::DecodeError::InvalidByte(i, _)
                | base64::DecodeError::InvalidLastSymbol(i, _) => i,
                // Go points at the start of the incomplete last quantum.
                base64::DecodeError::InvalidLength(_) | base64::DecodeError::InvalidPadding => {
                    input.len() - input.len() % 4
                }
            };
            string(format!("illegal base64 data at input byte {at}"))
        }
    }
}

// ---- lists and dicts ----

/// `dict K1 V1 K2 V2 ...`; a key without value gets "".
pub(super) fn dict(a: &[&Value]) -> Res {
    let mut m = Map::new();
    for pair in a.chunks(2) {
        let key = strval(pair[0]).into_owned();
        let val = pair
            .get(1)
            .map_or(Value::String(String::new()), |v| (*v).clone());
        m.insert(key, val);
    }
    Ok(Value::Object(m))
}

/// `get DICT KEY`: the value, or "" when absent.
pub(super) fn get<'a>(a: &[Val<'a>]) -> PickRes<'a> {
    static EMPTY: Value = Value::String(String::new());
    let key = want_str(a.get(1).map_or(&NULL, |v| &**v))?;
    let Some(d) = a.first() else {
        return Ok(Out::Keep(Val::Ref(&EMPTY)));
    };
    want_map(d)?;
    Ok(match d {
        Val::Ref(r) => {
            let r: &'a Value = r;
            Out::Keep(Val::Ref(r.get(key).unwrap_or(&EMPTY)))
        }
        Val::Own(rc) => Out::New(rc.get(key).cloned().unwrap_or_else(|| EMPTY.clone())),
    })
}

pub(super) fn has_key(a: &[&Value]) -> Res {
    let m = want_map(arg(a, 0))?;
    let key = want_str(arg(a, 1))?;
    Ok(Value::Bool(m.is_some_and(|m| m.contains_key(key))))
}

/// `keys DICT...`: each dict's keys, sorted (Go's map order is random).
pub(super) fn keys(a: &[&Value]) -> Res {
    let mut out = Vec::new();
    for d in a {
        if let Some(m) = want_map(d)? {
            out.extend(
                super::value::sorted_keys(m)
                    .into_iter()
                    .cloned()
                    .map(Value::String),
            );
        }
    }
    Ok(Value::Array(out))
}

fn want_list<'v>(v: &'v Value, what: &str) -> Result<&'v Vec<Value>, FnError> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(call_err(format!(
            "Cannot {what} on type {}",
            kind_name(other)
        ))),
    }
}

/// An element picked from a list argument, borrowed when the list is.
fn pick_elem<'a>(v: &Val<'a>, what: &str, at: fn(&[Value]) -> Option<&Value>) -> PickRes<'a> {
    match v {
        Val::Ref(r) => {
            let r: &'a Value = r;
            let list = want_list(r, what)?;
            Ok(Out::Keep(at(list).map_or_else(Val::null, Val::Ref)))
        }
        Val::Own(rc) => {
            let list = want_list(rc, what)?;
            Ok(Out::New(at(list).cloned().unwrap_or(Value::Null)))
        }
    }
}

pub(super) fn first<'a>(a: &[Val<'a>]) -> PickRes<'a> {
    pick_elem(
        a.first().unwrap_or(&Val::null()),
        "find first",
        <[Value]>::first,
    )
}

pub(super) fn last<'a>(a: &[Val<'a>]) -> PickRes<'a> {
    pick_elem(
        a.first().unwrap_or(&Val::null()),
        "find last",
        <[Value]>::last,
    )
}

pub(super) fn rest(a: &[&Value]) -> Res {
    let l = want_list(arg(a, 0), "find rest")?;
    Ok(Value::Array(l.get(1..).unwrap_or_default().to_vec()))
}

pub(super) fn initial(a: &[&Value]) -> Res {
    let l = want_list(arg(a, 0), "find initial")?;
    Ok(Value::Array(
        l.get(..l.len().saturating_sub(1))
            .unwrap_or_default()
            .to_vec(),
    ))
}

/// Same value for `has`/`uniq`: Go's `reflect.DeepEqual` on JSON-decoded data, with 1 and
/// 1.0 equal as everywhere else here.
fn same(a: &Value, b: &Value) -> bool {
    equal(a, b).unwrap_or_else(|_| a == b)
}

pub(super) fn uniq(a: &[&Value]) -> Res {
    let l = want_list(arg(a, 0), "uniq")?;
    // Canonical JSON as the identity keeps this linear on long lists.
    let mut seen = HashSet::new();
    let out = l
        .iter()
        .filter(|v| seen.insert(gofmt::json(v, false, false)))
        .cloned()
        .collect();
    Ok(Value::Array(out))
}

pub(super) fn compact(a: &[&Value]) -> Res {
    let l = want_list(arg(a, 0), "compact")?;
    Ok(Value::Array(
        l.iter().filter(|v| truthy(v)).cloned().collect(),
    ))
}

pub(super) fn reverse(a: &[&Value]) -> Res {
    let l = want_list(arg(a, 0), "reverse")?;
    Ok(Value::Array(l.iter().rev().cloned().collect()))
}

/// `append LIST V`.
pub(super) fn append(a: &[&Value]) -> Res {
    let mut l = want_list(arg(a, 0), "push")?.clone();
    l.push(arg(a, 1).clone());
    Ok(Value::Array(l))
}

/// `prepend LIST V`.
pub(super) fn prepend(a: &[&Value]) -> Res {
    let l = want_list(arg(a, 0), "prepend")?;
    let mut out = Vec::with_capacity(l.len() + 1);
    out.push(arg(a, 1).clone());
    out.extend(l.iter().cloned());
    Ok(Value::Array(out))
}

/// `has NEEDLE LIST`.
pub(super) fn has(a: &[&Value]) -> Res {
    let needle = arg(a, 0);
    match arg(a, 1) {
        Value::Null => Ok(Value::Bool(false)),
        other => {
            let l = want_list(other, "find has")?;
            Ok(Value::Bool(l.iter().any(|x| same(x, needle))))
        }
    }
}

pub(super) fn kind_of(a: &[&Value]) -> Res {
    string(kind_name(arg(a, 0)))
}

pub(super) fn kind_is(a: &[&Value]) -> Res {
    let k = want_str(arg(a, 0))?;
    Ok(Value::Bool(k == kind_name(arg(a, 1))))
}

// ---- numbers ----

/// `cast.ToInt64`, which Sprig's arithmetic uses: numbers truncate, strings parse as Go
/// integer literals (after dropping a `.000` tail), anything else is 0.
fn to_i64(v: &Value) -> i64 {
    match v {
        Value::Number(n) => match num(n) {
            // Wrapping like Go's int64(uint64) conversion.
            Num::Int(i) => i as i64,
            Num::Float(f) => f as i64,
        },
        Value::String(s) => super::lex::number(trim_zero_decimal(s))
            .and_then(|v| v.as_i64())
            .unwrap_or(0),
        Value::Bool(b) => i64::from(*b),
        _ => 0,
    }
}

/// cast's `trimZeroDecimal`: "12.00" is "12", "12.50" stays.
fn trim_zero_decimal(s: &str) -> &str {
    let mut found_zero = false;
    for (i, b) in s.bytes().enumerate().rev() {
        match b {
            b'.' if found_zero => return &s[..i],
            b'0' => found_zero = true,
            _ => return s,
        }
    }
    s
}

/// `cast.ToFloat64`.
fn to_f64(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.parse().unwrap_or(0.0),
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => 0.0,
    }
}

fn int(i: i64) -> Res {
    Ok(Value::from(i))
}

pub(super) fn add(a: &[&Value]) -> Res {
    int(a.iter().fold(0i64, |acc, v| acc.wrapping_add(to_i64(v))))
}

pub(super) fn add1(a: &[&Value]) -> Res {
    int(to_i64(arg(a, 0)).wrapping_add(1))
}

pub(super) fn sub(a: &[&Value]) -> Res {
    int(to_i64(arg(a, 0)).wrapping_sub(to_i64(arg(a, 1))))
}

pub(super) fn mul(a: &[&Value]) -> Res {
    int(a.iter().fold(1i64, |acc, v| acc.wrapping_mul(to_i64(v))))
}

fn divisor(v: &Value) -> Result<i64, FnError> {
    match to_i64(v) {
        0 => Err(call_err("runtime error: integer divide by zero")),
        d => Ok(d),
    }
}

pub(super) fn div(a: &[&Value]) -> Res {
    let d = divisor(arg(a, 1))?;
    int(to_i64(arg(a, 0)).wrapping_div(d))
}

pub(super) fn modulo(a: &[&Value]) -> Res {
    let d = divisor(arg(a, 1))?;
    int(to_i64(arg(a, 0)).wrapping_rem(d))
}

pub(super) fn max(a: &[&Value]) -> Res {
    int(a.iter().map(|v| to_i64(v)).max().unwrap_or(0))
}

pub(super) fn min(a: &[&Value]) -> Res {
    int(a.iter().map(|v| to_i64(v)).min().unwrap_or(0))
}

/// `strconv.Atoi` with the error ignored: 0 for non-numbers, clamped on overflow.
pub(super) fn atoi(a: &[&Value]) -> Res {
    let s = want_str(arg(a, 0))?;
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return int(0);
    }
    let mut v: i128 = 0;
    for b in digits.bytes() {
        v = (v * 10 + i128::from(b - b'0')).min(1 << 64);
    }
    let v = if neg { -v } else { v };
    let clamped = v.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    int(i64::try_from(clamped).unwrap_or(0))
}

/// `int` and `int64`.
pub(super) fn int_fn(a: &[&Value]) -> Res {
    int(to_i64(arg(a, 0)))
}

pub(super) fn float64(a: &[&Value]) -> Res {
    let f = to_f64(arg(a, 0));
    float(f).ok_or_else(|| call_err(format!("{f} is not a finite number")))
}

// ---- regular expressions (Go's RE2 syntax; regex-lite shares it for what configs use) ----

fn compile(re: &str) -> Result<regex_lite::Regex, FnError> {
    regex_lite::Regex::new(re).map_err(|e| call_err(format!("regexp: Compile({re:?}): {e}")))
}

/// `regexMatch RE s`; an invalid expression matches nothing, as in Sprig.
pub(super) fn regex_match(a: &[&Value]) -> Res {
    let re = want_str(arg(a, 0))?;
    let s = want_str(arg(a, 1))?;
    Ok(Value::Bool(
        regex_lite::Regex::new(re).is_ok_and(|r| r.is_match(s)),
    ))
}

pub(super) fn regex_find(a: &[&Value]) -> Res {
    let re = compile(want_str(arg(a, 0))?)?;
    let s = want_str(arg(a, 1))?;
    string(re.find(s).map_or("", |m| m.as_str()))
}

/// `regexFindAll RE s N` (N < 0: all).
pub(super) fn regex_find_all(a: &[&Value]) -> Res {
    let re = compile(want_str(arg(a, 0))?)?;
    let s = want_str(arg(a, 1))?;
    let n = want_int(arg(a, 2))?;
    let limit = if n < 0 { usize::MAX } else { to_usize(n) };
    Ok(Value::Array(
        re.find_iter(s)
            .take(limit)
            .map(|m| Value::String(m.as_str().to_owned()))
            .collect(),
    ))
}

/// Replaces every match, expanding `$1`/`${name}` unless `literal`, watching the size.
fn replace_all(a: &[&Value], literal: bool) -> Res {
    let re = compile(want_str(arg(a, 0))?)?;
    let s = want_str(arg(a, 1))?;
    let repl = want_str(arg(a, 2))?;
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for caps in re.captures_iter(s) {
        let Some(m) = caps.get(0) else { continue };
        out.push_str(s.get(last..m.start()).unwrap_or(""));
        if literal {
            out.push_str(repl);
        } else {
            caps.expand(repl, &mut out);
        }
        last = m.end();
        if out.len() > MAX_BYTES {
            return Err(too_large());
        }
    }
    out.push_str(s.get(last..).unwrap_or(""));
    string(out)
}

/// `regexReplaceAll RE s REPL`.
pub(super) fn regex_replace_all(a: &[&Value]) -> Res {
    replace_all(a, false)
}

pub(super) fn regex_replace_all_literal(a: &[&Value]) -> Res {
    replace_all(a, true)
}

/// `regexSplit RE s N`, following Go's `Regexp.Split`.
pub(super) fn regex_split(a: &[&Value]) -> Res {
    let pattern = want_str(arg(a, 0))?;
    let re = compile(pattern)?;
    let s = want_str(arg(a, 1))?;
    let n = want_int(arg(a, 2))?;
    if n == 0 {
        return Ok(Value::Array(Vec::new()));
    }
    if !pattern.is_empty() && s.is_empty() {
        return Ok(Value::Array(vec![Value::String(String::new())]));
    }
    let limit = if n < 0 { usize::MAX } else { to_usize(n) };
    let mut parts = Vec::new();
    let (mut beg, mut end) = (0, 0);
    for m in re.find_iter(s) {
        if n > 0 && parts.len() == limit - 1 {
            break;
        }
        end = m.start();
        if m.end() != 0 {
            parts.push(Value::String(s.get(beg..end).unwrap_or("").to_owned()));
        }
        beg = m.end();
    }
    if end != s.len() {
        parts.push(Value::String(s.get(beg..).unwrap_or("").to_owned()));
    }
    Ok(Value::Array(parts))
}

// ---- environment and randomness ----

pub(super) fn env(a: &[&Value]) -> Res {
    let name = want_str(arg(a, 0))?;
    // Names std::env may reject are never set.
    if name.is_empty() || name.contains(['=', '\0']) {
        return string("");
    }
    string(
        std::env::var_os(name)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

fn random_bytes(n: usize) -> Result<Vec<u8>, FnError> {
    use std::io::Read as _;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| call_err(format!("reading /dev/urandom: {e}")))?;
    Ok(buf)
}

/// A random version 4 UUID, lower-case and hyphenated like google/uuid's.
pub(super) fn uuidv4(_: &[&Value]) -> Res {
    let mut b = random_bytes(16)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    string(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// `count` characters drawn uniformly from `set` (rejection sampling, no modulo bias).
fn random_string(a: &[&Value], set: &[u8]) -> Res {
    let count = want_int(arg(a, 0))?;
    if count <= 0 || set.is_empty() {
        // goutils refuses a negative count and Sprig ignores the error.
        return string("");
    }
    let count = to_usize(count);
    if count > MAX_BYTES {
        return Err(too_large());
    }
    let limit = 256 - 256 % set.len();
    let mut out = String::with_capacity(count);
    while out.len() < count {
        for b in random_bytes((count - out.len()) * 2 + 16)? {
            if usize::from(b) < limit {
                out.push(char::from(set[usize::from(b) % set.len()]));
                if out.len() == count {
                    break;
                }
            }
        }
    }
    string(out)
}

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";

pub(super) fn rand_alpha_num(a: &[&Value]) -> Res {
    random_string(
        a,
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    )
}

pub(super) fn rand_alpha(a: &[&Value]) -> Res {
    random_string(a, LETTERS)
}

pub(super) fn rand_numeric(a: &[&Value]) -> Res {
    random_string(a, DIGITS)
}

/// Printable ASCII, space to tilde.
pub(super) fn rand_ascii(a: &[&Value]) -> Res {
    let set: Vec<u8> = (b' '..=b'~').collect();
    random_string(a, &set)
}
