//! Unknown-key detection with real line numbers.
//!
//! The typed pass (`schema.rs`) silently ignores keys it does not know, so the source is also
//! read into a [`Node`] tree (`yaml_tree.rs`), whose every node carries its serde-saphyr
//! location, and that tree is walked against the list of known keys below.

use serde_saphyr::Spanned;

pub(crate) use crate::yaml_tree::Node;

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
    ("ownerstring", Any),
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
    ("ownerstring", Any),
]);
const DOWNLOAD: Shape = Struct(&[
    ("path", Any),
    ("url", Any),
    ("timeout", Any),
    ("permissions", Any),
    ("owner", Any),
    ("group", Any),
    ("owner_string", Any),
    ("ownerstring", Any),
]);
const ENTITY: Shape = Struct(&[("path", Any), ("entity", Any)]);
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
    ("only_service_manager", Any),
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
    ("ensure_entities", SeqOf(&ENTITY)),
    ("delete_entities", SeqOf(&ENTITY)),
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
    (
        "datasource",
        Struct(&[("providers", Any), ("path", Any), ("userdata_name", Any)]),
    ),
    (
        "layout",
        Struct(&[
            (
                "device",
                Struct(&[
                    ("label", Any),
                    ("path", Any),
                    ("init_disk", Any),
                    ("disk_name", Any),
                ]),
            ),
            ("expand_partition", Struct(&[("size", Any)])),
            ("add_partitions", SeqOf(&PARTITION)),
        ]),
    ),
    ("systemd_firstboot", Any),
    (
        "packages",
        Struct(&[
            ("install", Any),
            ("remove", Any),
            ("refresh", Any),
            ("upgrade", Any),
        ]),
    ),
    (
        "unpack_images",
        SeqOf(&Struct(&[
            ("source", Any),
            ("target", Any),
            ("platform", Any),
        ])),
    ),
    (
        "git",
        Struct(&[
            ("url", Any),
            ("path", Any),
            ("branch", Any),
            ("branch_only", Any),
            (
                "auth",
                Struct(&[
                    ("username", Any),
                    ("password", Any),
                    ("private_key", Any),
                    ("insecure", Any),
                    ("public_key", Any),
                ]),
            ),
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
        // Type mismatches (and nulls) are reported by the typed pass, with their own location.
        _ => {}
    }
}
