//! One watch event as a line of the stream: the store sends them, the watch module streams
//! them (a leaf module, so the two do not depend on each other).

use bytes::Bytes;
use serde_json::{Value, json};

/// `{"type": KIND, "object": OBJECT}` and a newline.
pub fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}
