//! Stages given on the kernel command line in dot notation, as elemental-toolkit runs yip over
//! `/proc/cmdline` (yip's `DotNotationModifier`): `stages.boot[0].commands[0]="echo hi"`.
//! Each `stages.…=value` word sets that path (lists grow to the index); a word without `=`
//! sets `"true"`. Other words are the kernel's and are ignored.

use serde_json::{Map, Value};

/// One path segment: a key, or an index into a list.
enum Segment {
    Key(String),
    Index(usize),
}

/// `stages.boot[0].commands[1]` as segments; None when it is not such a path.
fn parse_path(path: &str) -> Option<Vec<Segment>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() {
            return None;
        }
        out.push(Segment::Key(key.to_string()));
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            // A bound on indexes: a hostile command line must not allocate a huge list.
            let index: usize = r[..end].parse().ok().filter(|i| *i < 1024)?;
            out.push(Segment::Index(index));
            rest = &r[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

/// Sets `value` at `path` under `node`, creating maps and growing lists (with nulls).
fn set(node: &mut Value, path: &[Segment], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *node = value;
        return;
    };
    match first {
        Segment::Key(k) => {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            if let Value::Object(map) = node {
                set(map.entry(k.clone()).or_insert(Value::Null), rest, value);
            }
        }
        Segment::Index(i) => {
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            if let Value::Array(list) = node {
                if list.len() <= *i {
                    list.resize(*i + 1, Value::Null);
                }
                set(&mut list[*i], rest, value);
            }
        }
    }
}

/// The config document the command line's `stages.…` words make, None when there are none.
pub(crate) fn from_cmdline(words: &[String]) -> Option<Value> {
    let mut doc = Value::Object(Map::new());
    let mut any = false;
    for word in words {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, v.trim_matches('"')),
            None => (word.as_str(), "true"),
        };
        if !key.starts_with("stages.") {
            continue;
        }
        if let Some(path) = parse_path(key) {
            set(&mut doc, &path, Value::String(value.to_string()));
            any = true;
        }
    }
    any.then_some(doc)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_become_a_document() {
        let words: Vec<String> = [
            "quiet",
            "stages.boot[0].commands[1]=echo two",
            "stages.boot[0].commands[0]=echo one",
            "stages.boot[0].name=from cmdline",
            "stages.initramfs[1].hostname=node",
            "root=LABEL=x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let doc = from_cmdline(&words).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"stages": {
                "boot": [{"commands": ["echo one", "echo two"], "name": "from cmdline"}],
                "initramfs": [null, {"hostname": "node"}]
            }})
        );
        assert!(from_cmdline(&["quiet".to_string()]).is_none());
        assert!(from_cmdline(&["stages.boot[99999].x=1".to_string()]).is_none());
    }
}
