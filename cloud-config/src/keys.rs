//! Unknown-key detection with real line numbers.
//!
//! The typed pass (`schema.rs`) silently ignores keys it does not know, so the source is also
//! read into a small tree whose every node carries its serde-saphyr location, and that tree is
//! walked against the list of known keys below.

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// A YAML node with locations on every child. Scalars are not kept: only the shape matters.
#[derive(Debug)]
pub(crate) enum Node {
    Scalar,
    Seq(Vec<Spanned<Node>>),
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
                Ok(Node::Scalar)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
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

/// What is expected at a place in the document.
pub(crate) enum Shape {
    /// Anything (scalars, free-form maps).
    Any,
    /// A mapping with these keys only.
    Struct(&'static [(&'static str, Shape)]),
    /// A list of this.
    SeqOf(&'static Shape),
    /// A mapping with free keys and values of this shape.
    MapOf(&'static Shape),
}

use Shape::{Any, MapOf, SeqOf, Struct};

const ATTRS_PATH: &[(&str, Shape)] = &[
    ("path", Any),
    ("permissions", Any),
    ("owner", Any),
    ("group", Any),
    ("owner_string", Any),
];

const DIRECTORY: Shape = Struct(ATTRS_PATH);
const FILE: Shape = Struct(&[
    ("path", Any),
    ("content", Any),
    ("encoding", Any),
    ("permissions", Any),
    ("owner", Any),
    ("group", Any),
    ("owner_string", Any),
]);
const DOWNLOAD: Shape = Struct(&[
    ("path", Any),
    ("url", Any),
    ("timeout", Any),
    ("permissions", Any),
    ("owner", Any),
    ("group", Any),
    ("owner_string", Any),
]);
const USER_KEYS: &[(&str, Shape)] = &[
    ("passwd", Any),
    ("lock_passwd", Any),
    ("ssh_authorized_keys", Any),
    ("groups", Any),
    ("primary_group", Any),
    ("shell", Any),
    ("homedir", Any),
    ("uid", Any),
    ("gecos", Any),
    ("no_create_home", Any),
    ("system", Any),
];
const USER: Shape = Struct(USER_KEYS);
const OVERRIDE: Shape = Struct(&[("service", Any), ("name", Any), ("content", Any)]);
const AFTER: Shape = Struct(&[("name", Any)]);
const PARTITION: Shape = Struct(&[
    ("fsLabel", Any),
    ("size", Any),
    ("pLabel", Any),
    ("filesystem", Any),
]);

pub(crate) const STEP: Shape = Struct(&[
    ("name", Any),
    ("if", Any),
    ("node", Any),
    ("only_os", Any),
    ("only_os_version", Any),
    ("only_arch", Any),
    (
        "if_files",
        Struct(&[("any", Any), ("all", Any), ("none", Any)]),
    ),
    ("after", SeqOf(&AFTER)),
    (
        "dns",
        Struct(&[
            ("nameservers", Any),
            ("search", Any),
            ("options", Any),
            ("path", Any),
        ]),
    ),
    ("downloads", SeqOf(&DOWNLOAD)),
    ("directories", SeqOf(&DIRECTORY)),
    ("files", SeqOf(&FILE)),
    ("commands", Any),
    ("hostname", Any),
    ("sysctl", Any),
    ("users", MapOf(&USER)),
    ("authorized_keys", Any),
    ("modules", Any),
    (
        "systemctl",
        Struct(&[
            ("enable", Any),
            ("disable", Any),
            ("start", Any),
            ("mask", Any),
            ("overrides", SeqOf(&OVERRIDE)),
        ]),
    ),
    ("environment", Any),
    ("environment_file", Any),
    ("timesyncd", Any),
    ("datasource", Struct(&[("providers", Any), ("path", Any)])),
    (
        "layout",
        Struct(&[
            ("device", Struct(&[("label", Any), ("path", Any)])),
            ("expand_partition", Struct(&[("size", Any)])),
            ("add_partitions", SeqOf(&PARTITION)),
        ]),
    ),
]);

pub(crate) const YIP: Shape = Struct(&[("name", Any), ("stages", MapOf(&SeqOf(&STEP)))]);

const CLOUD_USER: Shape = Struct(&[
    ("name", Any),
    ("passwd", Any),
    ("plain_text_passwd", Any),
    ("hashed_passwd", Any),
    ("lock_passwd", Any),
    ("ssh_authorized_keys", Any),
    ("groups", Any),
    ("primary_group", Any),
    ("shell", Any),
    ("homedir", Any),
    ("uid", Any),
    ("gecos", Any),
    ("no_create_home", Any),
    ("system", Any),
]);

pub(crate) const CLOUD_CONFIG: Shape = Struct(&[
    ("name", Any),
    ("stages", MapOf(&SeqOf(&STEP))),
    ("runcmd", Any),
    (
        "write_files",
        SeqOf(&Struct(&[
            ("path", Any),
            ("content", Any),
            ("encoding", Any),
            ("permissions", Any),
            ("owner", Any),
        ])),
    ),
    ("users", SeqOf(&CLOUD_USER)),
    ("ssh_authorized_keys", Any),
    ("hostname", Any),
    (
        "growpart",
        Struct(&[
            ("mode", Any),
            ("devices", Any),
            ("ignore_growroot_disabled", Any),
        ]),
    ),
]);

/// An unknown key: its dotted path and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownKey {
    pub path: String,
    pub line: u64,
    pub column: u64,
}

/// Every key of `node` not in `shape`, in document order.
pub(crate) fn unknown_keys(node: &Spanned<Node>, shape: &Shape) -> Vec<UnknownKey> {
    let mut out = Vec::new();
    walk(&node.value, shape, "", &mut out);
    out
}

fn walk(node: &Node, shape: &Shape, path: &str, out: &mut Vec<UnknownKey>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (shape, node) {
        (Struct(fields), Node::Map(entries)) => {
            for (k, v) in entries {
                match fields.iter().find(|(name, _)| *name == k.value) {
                    Some((_, sub)) => walk(&v.value, sub, &join(&k.value), out),
                    None => out.push(UnknownKey {
                        path: join(&k.value),
                        line: k.referenced.line(),
                        column: k.referenced.column(),
                    }),
                }
            }
        }
        (MapOf(sub), Node::Map(entries)) => {
            for (k, v) in entries {
                walk(&v.value, sub, &join(&k.value), out);
            }
        }
        (SeqOf(sub), Node::Seq(items)) => {
            for (i, item) in items.iter().enumerate() {
                walk(&item.value, sub, &format!("{path}[{i}]"), out);
            }
        }
        // Type mismatches are reported by the typed pass, with their own location.
        _ => {}
    }
}
