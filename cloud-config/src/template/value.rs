//! The value model: JSON values borrowed from the data or the template where possible, plus
//! Go's notions of truth, type names and comparison on them.

use std::ops::Deref;
use std::rc::Rc;

use serde_json::{Number, Value};

use super::MAX_VALUE_DEPTH;

/// Go's missing value (`<no value>`) and `nil` are both JSON null here.
pub(super) static NULL: Value = Value::Null;

/// A value during execution. Data and literals are borrowed, so `.Values.x` copies nothing;
/// values built by functions are shared, so passing them along copies nothing either.
#[derive(Debug, Clone)]
pub(super) enum Val<'a> {
    Ref(&'a Value),
    Own(Rc<Built>),
}

/// A value built during execution, with its [`weight`] kept so that the size of a call's
/// arguments can be checked before the call copies them.
#[derive(Debug)]
pub(super) struct Built {
    pub value: Value,
    pub weight: usize,
}

impl Deref for Built {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

impl Deref for Val<'_> {
    type Target = Value;

    fn deref(&self) -> &Value {
        match self {
            Val::Ref(v) => v,
            Val::Own(b) => &b.value,
        }
    }
}

impl<'a> Val<'a> {
    pub(super) fn null() -> Val<'a> {
        Val::Ref(&NULL)
    }

    /// A value the executor makes itself (range keys and counters: small, shallow).
    pub(super) fn made(value: Value) -> Val<'a> {
        let weight = weight(&value, usize::MAX).unwrap_or(usize::MAX);
        Val::Own(Rc::new(Built { value, weight }))
    }

    /// Size of the part this value owns; borrowed data costs nothing to pass around.
    pub(super) fn owned_weight(&self) -> usize {
        match self {
            Val::Ref(_) => 0,
            Val::Own(b) => b.weight,
        }
    }
}

/// Go's `if` truth: false, 0, "", nil and empty collections are false.
pub(super) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// The Go type a value would have after `json.Unmarshal` (integers as `int`), for messages
/// and `%T`.
pub(super) fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// The reflect kind name Sprig's `kindOf` reports.
pub(super) fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "invalid",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
        other => go_type(other),
    }
}

/// A number as the arithmetic and comparisons see it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Num {
    Int(i128),
    Float(f64),
}

pub(super) fn num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        Num::Int(i128::from(u))
    } else {
        Num::Float(n.as_f64().unwrap_or(0.0))
    }
}

impl Num {
    fn f64(self) -> f64 {
        match self {
            // Precision loss only beyond 2^53, where Go's float64 data loses it too.
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// The integer value when there is one (integral floats count).
    pub(super) fn int(self) -> Option<i128> {
        match self {
            Num::Int(i) => Some(i),
            Num::Float(f) if f.fract() == 0.0 && f.abs() < 1.7e38 => Some(f as i128),
            Num::Float(_) => None,
        }
    }
}

fn num_cmp(a: Num, b: Num) -> std::cmp::Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        _ => a.f64().total_cmp(&b.f64()),
    }
}

const BAD_TYPE: &str = "invalid type for comparison";
const INCOMPATIBLE: &str = "incompatible types for comparison";

/// Go's `eq` for one pair. Numbers compare across int and float (Go would refuse);
/// nil equals only nil; collections are not comparable.
pub(super) fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    match (a, b) {
        (Value::Null, Value::Null) => Ok(true),
        (Value::Null, _) | (_, Value::Null) => Ok(false),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
            Err(BAD_TYPE.into())
        }
        (Value::Bool(x), Value::Bool(y)) => Ok(x == y),
        (Value::Number(x), Value::Number(y)) => Ok(num_cmp(num(x), num(y)).is_eq()),
        (Value::String(x), Value::String(y)) => Ok(x == y),
        _ => Err(INCOMPATIBLE.into()),
    }
}

/// Go's `lt`: numbers and strings only.
pub(super) fn less(a: &Value, b: &Value) -> Result<bool, String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Ok(num_cmp(num(x), num(y)).is_lt()),
        (Value::String(x), Value::String(y)) => Ok(x < y),
        (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
            Err(INCOMPATIBLE.into())
        }
        _ => Err(BAD_TYPE.into()),
    }
}

/// Size of `v` (string and key bytes plus one per node), or `None` when it exceeds `limit`
/// or nests deeper than [`MAX_VALUE_DEPTH`]. Iterative, so any input is safe to measure.
pub(super) fn weight(v: &Value, limit: usize) -> Option<usize> {
    let mut total = 0usize;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > MAX_VALUE_DEPTH {
            return None;
        }
        total = total.saturating_add(1);
        match v {
            Value::String(s) => total = total.saturating_add(s.len()),
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, depth + 1))),
            Value::Object(m) => {
                for (k, x) in m {
                    total = total.saturating_add(k.len());
                    stack.push((x, depth + 1));
                }
            }
            _ => {}
        }
        if total > limit {
            return None;
        }
    }
    Some(total)
}

/// A JSON number from a float, or `None` for infinities and NaN (JSON has none).
pub(super) fn float(f: f64) -> Option<Value> {
    Number::from_f64(f).map(Value::Number)
}

/// Keys of an object in Go's printing order (sorted), whatever order the map keeps.
pub(super) fn sorted_keys(m: &serde_json::Map<String, Value>) -> Vec<&String> {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    keys
}
