//! A YAML document as a tree with a location on every node.
//!
//! Typed deserialization silently drops keys it does not know and loses where things are, so
//! callers also read the source into this tree (`serde_saphyr::from_str::<Spanned<Node>>`) and
//! walk it: for unknown keys, with their real line and column, or to name the key a parser
//! error is at. Used by the cloud-config checks of this crate and by clb's own config file.

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// A YAML node. Scalar values are not kept, only where they are: the shape is what matters.
#[derive(Debug)]
pub enum Node {
    /// A null or empty value (`~`, `null`, nothing after `key:`, an empty document).
    Null,
    /// Any other scalar: a string, number or boolean.
    Scalar,
    /// A sequence; each item with its location.
    Seq(Vec<Spanned<Node>>),
    /// A mapping in document order; each key as text (whatever its YAML type) and each value
    /// with its location.
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = a.next_key::<Spanned<KeyText>>()? {
                    let v = a.next_value()?;
                    entries.push((Spanned::new(k.value.0, k.referenced, k.defined), v));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping key as text, whatever its YAML type (`1:` is a valid key).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText(String::new()))
            }
        }
        d.deserialize_string(V)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shape_nulls_and_key_places() {
        let t: Spanned<Node> =
            serde_saphyr::from_str("a: 1\nb:\n1: [x, ~]\nc: {d: null}\n").unwrap();
        let Node::Map(entries) = &t.value else {
            panic!("not a map: {t:?}")
        };
        let keys: Vec<(&str, u64, u64)> = entries
            .iter()
            .map(|(k, _)| (k.value.as_str(), k.referenced.line(), k.referenced.column()))
            .collect();
        assert_eq!(
            keys,
            vec![("a", 1, 1), ("b", 2, 1), ("1", 3, 1), ("c", 4, 1)]
        );
        assert!(matches!(entries[0].1.value, Node::Scalar));
        assert!(matches!(entries[1].1.value, Node::Null));
        let Node::Seq(items) = &entries[2].1.value else {
            panic!("not a seq: {:?}", entries[2].1)
        };
        assert!(matches!(items[0].value, Node::Scalar));
        assert!(matches!(items[1].value, Node::Null));
        assert_eq!(items[1].referenced.column(), 8);
        let Node::Map(inner) = &entries[3].1.value else {
            panic!("not a map: {:?}", entries[3].1)
        };
        assert!(matches!(inner[0].1.value, Node::Null));
    }
}
