//! What template functions share: their error and result types, and the conversions that
//! reproduce Go's typed parameters.

use serde_json::{Map, Value};

use super::value::{Val, go_type, num};

/// Why a function call failed. Go reports argument type mismatches plainly and the
/// function's own errors as `error calling NAME: ...`.
#[derive(Debug)]
pub(super) enum FnError {
    Type(String),
    Call(String),
}

pub(super) type Res = Result<Value, FnError>;

/// The result of a function that may hand back (part of) an argument without copying.
pub(super) enum Out<'a> {
    Keep(Val<'a>),
    New(Value),
}

pub(super) type PickRes<'a> = Result<Out<'a>, FnError>;

// ---- argument conversions (Go's typed parameters) ----

pub(super) fn want_str(v: &Value) -> Result<&str, FnError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(wrong_type("string", other)),
    }
}

/// An `int` parameter; integral floats are accepted (yip's data numbers are float64).
pub(super) fn want_int(v: &Value) -> Result<i64, FnError> {
    match v {
        Value::Number(n) => num(n)
            .int()
            .and_then(|i| i64::try_from(i).ok())
            .ok_or_else(|| wrong_type("int", v)),
        other => Err(wrong_type("int", other)),
    }
}

pub(super) fn want_bool(v: &Value) -> Result<bool, FnError> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(wrong_type("bool", other)),
    }
}

/// A `map[string]interface{}` parameter; nil is an empty map, as in Go.
pub(super) fn want_map(v: &Value) -> Result<Option<&Map<String, Value>>, FnError> {
    match v {
        Value::Object(m) => Ok(Some(m)),
        Value::Null => Ok(None),
        other => Err(wrong_type("map[string]interface {}", other)),
    }
}

pub(super) fn wrong_type(want: &str, got: &Value) -> FnError {
    if got.is_null() {
        FnError::Type(format!("invalid value; expected {want}"))
    } else {
        FnError::Type(format!(
            "wrong type for value; expected {want}; got {}",
            go_type(got)
        ))
    }
}

pub(super) fn call_err(msg: impl Into<String>) -> FnError {
    FnError::Call(msg.into())
}
