//! The function table (Go's builtins plus Sprig's, see [`super::sprig`]), the builtins
//! themselves, and the argument conversions that reproduce Go's typed parameters.

use serde_json::Value;

use super::args::{FnError, Out, PickRes, Res, call_err, want_str};
use super::gofmt;
use super::sprig;
use super::value::{NULL, Val, equal, go_type, less, num, truthy};

#[derive(Clone, Copy)]
pub(super) enum Imp {
    /// Builds a new value from its arguments.
    Make(fn(&[&Value]) -> Res),
    /// Selects among or inside its arguments (`index`, `default`, ...).
    Pick(for<'a> fn(&[Val<'a>]) -> PickRes<'a>),
    /// `and` / `or`: the executor evaluates arguments lazily, as Go does.
    ShortCircuit,
}

#[derive(Clone, Copy)]
pub(super) struct FuncDef {
    pub min: usize,
    /// `None`: variadic.
    pub max: Option<usize>,
    pub imp: Imp,
}

const fn make(min: usize, max: usize, f: fn(&[&Value]) -> Res) -> FuncDef {
    FuncDef {
        min,
        max: Some(max),
        imp: Imp::Make(f),
    }
}

const fn make_var(min: usize, f: fn(&[&Value]) -> Res) -> FuncDef {
    FuncDef {
        min,
        max: None,
        imp: Imp::Make(f),
    }
}

const fn pick(min: usize, max: Option<usize>, f: for<'a> fn(&[Val<'a>]) -> PickRes<'a>) -> FuncDef {
    FuncDef {
        min,
        max,
        imp: Imp::Pick(f),
    }
}

/// Every function a template may call. Unknown names are a parse error, as in Go.
pub(super) fn lookup(name: &str) -> Option<FuncDef> {
    use sprig as s;
    let short = FuncDef {
        min: 1,
        max: None,
        imp: Imp::ShortCircuit,
    };
    Some(match name {
        // text/template builtins
        "and" | "or" => short,
        "not" => make(1, 1, not),
        "eq" => make_var(1, eq),
        "ne" => make(2, 2, ne),
        "lt" => make(2, 2, lt),
        "le" => make(2, 2, le),
        "gt" => make(2, 2, gt),
        "ge" => make(2, 2, ge),
        "len" => make(1, 1, len),
        "index" => pick(1, None, index),
        "slice" => make_var(1, slice),
        "print" => make_var(0, |a| Ok(Value::String(gofmt::sprint(a)))),
        "println" => make_var(0, |a| Ok(Value::String(gofmt::sprintln(a)))),
        "printf" => make_var(1, printf),
        "html" => make_var(0, |a| Ok(Value::String(gofmt::html_escape(&eval_args(a))))),
        "js" => make_var(0, |a| Ok(Value::String(gofmt::js_escape(&eval_args(a))))),
        "urlquery" => make_var(0, |a| Ok(Value::String(gofmt::query_escape(&eval_args(a))))),
        // Sprig: strings
        "trunc" => make(2, 2, s::trunc),
        "trim" => make(1, 1, s::trim),
        "trimAll" => make(2, 2, s::trim_all),
        "trimPrefix" => make(2, 2, s::trim_prefix),
        "trimSuffix" => make(2, 2, s::trim_suffix),
        "upper" => make(1, 1, s::upper),
        "lower" => make(1, 1, s::lower),
        "title" => make(1, 1, s::title),
        "untitle" => make(1, 1, s::untitle),
        "repeat" => make(2, 2, s::repeat),
        "substr" => make(3, 3, s::substr),
        "nospace" => make(1, 1, s::nospace),
        "abbrev" => make(2, 2, s::abbrev),
        "initials" => make(1, 1, s::initials),
        "replace" => make(3, 3, s::replace),
        "contains" => make(2, 2, s::contains),
        "hasPrefix" => make(2, 2, s::has_prefix),
        "hasSuffix" => make(2, 2, s::has_suffix),
        "quote" => make_var(0, s::quote),
        "squote" => make_var(0, s::squote),
        "cat" => make_var(0, s::cat),
        "indent" => make(2, 2, s::indent),
        "nindent" => make(2, 2, s::nindent),
        "split" => make(2, 2, s::split),
        "splitn" => make(3, 3, s::splitn),
        "splitList" => make(2, 2, s::split_list),
        "join" => make(2, 2, s::join),
        "sortAlpha" => make(1, 1, s::sort_alpha),
        "toString" => make(1, 1, s::to_string),
        // Sprig: defaults and flow
        "default" => pick(1, None, s::default),
        "empty" => make(1, 1, s::empty),
        "coalesce" => pick(0, None, s::coalesce),
        "ternary" => pick(3, Some(3), s::ternary),
        // Sprig: encodings
        "toJson" => make(1, 1, s::to_json),
        "toPrettyJson" => make(1, 1, s::to_pretty_json),
        "toRawJson" => make(1, 1, s::to_raw_json),
        "fromJson" => make(1, 1, s::from_json),
        "b64enc" => make(1, 1, s::b64enc),
        "b64dec" => make(1, 1, s::b64dec),
        // Sprig: lists and dicts
        "list" => make_var(0, |a| {
            Ok(Value::Array(a.iter().map(|v| (*v).clone()).collect()))
        }),
        "dict" => make_var(0, s::dict),
        "get" => pick(2, Some(2), s::get),
        "hasKey" => make(2, 2, s::has_key),
        "keys" => make_var(0, s::keys),
        "first" => pick(1, Some(1), s::first),
        "last" => pick(1, Some(1), s::last),
        "rest" => make(1, 1, s::rest),
        "initial" => make(1, 1, s::initial),
        "uniq" => make(1, 1, s::uniq),
        "compact" => make(1, 1, s::compact),
        "reverse" => make(1, 1, s::reverse),
        "append" => make(2, 2, s::append),
        "prepend" => make(2, 2, s::prepend),
        "has" => make(2, 2, s::has),
        "kindOf" => make(1, 1, s::kind_of),
        "kindIs" => make(2, 2, s::kind_is),
        // Sprig: numbers
        "add" => make_var(0, s::add),
        "add1" => make(1, 1, s::add1),
        "sub" => make(2, 2, s::sub),
        "mul" => make_var(1, s::mul),
        "div" => make(2, 2, s::div),
        "mod" => make(2, 2, s::modulo),
        "max" => make_var(1, s::max),
        "min" => make_var(1, s::min),
        "atoi" => make(1, 1, s::atoi),
        "int" | "int64" => make(1, 1, s::int_fn),
        "float64" => make(1, 1, s::float64),
        // Sprig: regular expressions
        "regexMatch" => make(2, 2, s::regex_match),
        "regexFind" => make(2, 2, s::regex_find),
        "regexFindAll" => make(3, 3, s::regex_find_all),
        "regexReplaceAll" => make(3, 3, s::regex_replace_all),
        "regexReplaceAllLiteral" => make(3, 3, s::regex_replace_all_literal),
        "regexSplit" => make(3, 3, s::regex_split),
        // Sprig: environment and randomness
        "env" => make(1, 1, s::env),
        "uuidv4" => make(0, 0, s::uuidv4),
        "randAlphaNum" => make(1, 1, s::rand_alpha_num),
        "randAlpha" => make(1, 1, s::rand_alpha),
        "randNumeric" => make(1, 1, s::rand_numeric),
        "randAscii" => make(1, 1, s::rand_ascii),
        _ => return None,
    })
}

/// Go's `evalArgs` for `html`, `js`, `urlquery`: one string as is, else `fmt.Sprint` with a
/// missing value spelled `<no value>`.
fn eval_args(args: &[&Value]) -> String {
    if let [Value::String(s)] = args {
        return s.clone();
    }
    let no_value = Value::String("<no value>".into());
    let shown: Vec<&Value> = args
        .iter()
        .map(|a| if a.is_null() { &no_value } else { *a })
        .collect();
    gofmt::sprint(&shown)
}

// ---- builtins ----

fn not(a: &[&Value]) -> Res {
    Ok(Value::Bool(!a.first().is_some_and(|v| truthy(v))))
}

fn eq(a: &[&Value]) -> Res {
    let Some((first, rest)) = a.split_first() else {
        return Err(call_err("missing argument for comparison"));
    };
    if rest.is_empty() {
        return Err(call_err("missing argument for comparison"));
    }
    for other in rest {
        if equal(first, other).map_err(call_err)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn pair<'v>(a: &[&'v Value]) -> (&'v Value, &'v Value) {
    (
        a.first().copied().unwrap_or(&NULL),
        a.get(1).copied().unwrap_or(&NULL),
    )
}

fn ne(a: &[&Value]) -> Res {
    let (x, y) = pair(a);
    Ok(Value::Bool(!equal(x, y).map_err(call_err)?))
}

fn lt(a: &[&Value]) -> Res {
    let (x, y) = pair(a);
    Ok(Value::Bool(less(x, y).map_err(call_err)?))
}

fn le_bool(x: &Value, y: &Value) -> Result<bool, FnError> {
    Ok(less(x, y).map_err(call_err)? || equal(x, y).map_err(call_err)?)
}

fn le(a: &[&Value]) -> Res {
    let (x, y) = pair(a);
    Ok(Value::Bool(le_bool(x, y)?))
}

fn gt(a: &[&Value]) -> Res {
    let (x, y) = pair(a);
    Ok(Value::Bool(!le_bool(x, y)?))
}

fn ge(a: &[&Value]) -> Res {
    let (x, y) = pair(a);
    Ok(Value::Bool(!less(x, y).map_err(call_err)?))
}

/// Go's `len`: bytes of a string, elements of a collection.
fn len(a: &[&Value]) -> Res {
    let n = match a.first().copied().unwrap_or(&NULL) {
        Value::String(s) => s.len(),
        Value::Array(v) => v.len(),
        Value::Object(m) => m.len(),
        Value::Null => return Err(call_err("len of nil pointer")),
        other => return Err(call_err(format!("len of type {}", go_type(other)))),
    };
    Ok(Value::from(n))
}

/// An index argument: an integer, reported the way Go's `indexArg` does.
fn index_arg(v: &Value, len: usize, what: &str) -> Result<usize, FnError> {
    let Value::Number(n) = v else {
        return Err(call_err(format!(
            "cannot index {what} with type {}",
            go_type(v)
        )));
    };
    let i = num(n)
        .int()
        .ok_or_else(|| call_err(format!("cannot index {what} with type float64")))?;
    match usize::try_from(i) {
        Ok(u) if u < len => Ok(u),
        _ => Err(call_err(format!("index out of range: {i}"))),
    }
}

/// One step of `index`: into an array, object or string.
fn index_step<'v>(item: &'v Value, key: &Value) -> Result<Step<'v>, FnError> {
    match item {
        Value::Array(a) => {
            let i = index_arg(key, a.len(), "slice/array")?;
            Ok(Step::At(a.get(i).unwrap_or(&NULL)))
        }
        Value::Object(m) => match key {
            Value::String(k) => Ok(Step::At(m.get(k).unwrap_or(&NULL))),
            other => Err(call_err(format!(
                "value has type {}; should be string",
                go_type(other)
            ))),
        },
        // Go indexes strings by byte and yields the byte value.
        Value::String(s) => {
            let i = index_arg(key, s.len(), "string")?;
            Ok(Step::Byte(s.as_bytes().get(i).copied().unwrap_or(0)))
        }
        Value::Null => Err(call_err("index of untyped nil")),
        other => Err(call_err(format!(
            "can't index item of type {}",
            go_type(other)
        ))),
    }
}

enum Step<'v> {
    At(&'v Value),
    Byte(u8),
}

fn index<'a>(a: &[Val<'a>]) -> PickRes<'a> {
    let Some((item, keys)) = a.split_first() else {
        return Ok(Out::Keep(Val::null()));
    };
    // Borrow the path inside the argument, copying only the final element if the argument
    // is a built (owned) value.
    fn walk<'v>(mut cur: &'v Value, keys: &[Val<'_>]) -> Result<Result<&'v Value, u8>, FnError> {
        for (n, k) in keys.iter().enumerate() {
            match index_step(cur, k)? {
                Step::At(v) => cur = v,
                Step::Byte(b) if n + 1 == keys.len() => return Ok(Err(b)),
                Step::Byte(_) => return Err(call_err("can't index item of type uint8")),
            }
        }
        Ok(Ok(cur))
    }
    match item {
        Val::Ref(r) => {
            let r: &'a Value = r;
            Ok(match walk(r, keys)? {
                Ok(v) => Out::Keep(Val::Ref(v)),
                Err(b) => Out::New(Value::from(b)),
            })
        }
        Val::Own(rc) => Ok(match walk(rc, keys)? {
            Ok(v) => Out::New(v.clone()),
            Err(b) => Out::New(Value::from(b)),
        }),
    }
}

/// Go's `slice`: `slice x 1 2` is `x[1:2]`; strings by byte, like Go.
fn slice(a: &[&Value]) -> Res {
    let Some((item, idx)) = a.split_first() else {
        return Err(call_err("missing argument"));
    };
    if idx.len() > 3 {
        return Err(call_err(format!("too many slice indexes: {}", idx.len())));
    }
    let len = match item {
        Value::String(s) => {
            if idx.len() == 3 {
                return Err(call_err("cannot 3-index slice a string"));
            }
            s.len()
        }
        Value::Array(v) => v.len(),
        Value::Null => return Err(call_err("slice of untyped nil")),
        other => {
            return Err(call_err(format!(
                "can't slice item of type {}",
                go_type(other)
            )));
        }
    };
    let mut bounds = [0, len, len];
    for (n, v) in idx.iter().enumerate() {
        let i = index_arg(v, len + 1, "slice/array")?;
        bounds[n] = i;
    }
    if bounds[0] > bounds[1] {
        return Err(call_err(format!(
            "invalid slice index: {} > {}",
            bounds[0], bounds[1]
        )));
    }
    if idx.len() == 3 && bounds[1] > bounds[2] {
        return Err(call_err(format!(
            "invalid slice index: {} > {}",
            bounds[1], bounds[2]
        )));
    }
    let (i, j) = (bounds[0], bounds[1]);
    Ok(match item {
        Value::String(s) => Value::String(
            String::from_utf8_lossy(s.as_bytes().get(i..j).unwrap_or_default()).into_owned(),
        ),
        Value::Array(v) => Value::Array(v.get(i..j).unwrap_or_default().to_vec()),
        _ => Value::Null,
    })
}

fn printf(a: &[&Value]) -> Res {
    let Some((format, rest)) = a.split_first() else {
        return Err(call_err("missing format"));
    };
    Ok(Value::String(gofmt::sprintf(want_str(format)?, rest)))
}
