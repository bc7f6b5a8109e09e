//! The shape of a file with a position on every node (the [`Node`] tree of
//! `clb_cloud_config::yaml_tree`): the typed pass ignores keys it does not know and loses their
//! place, so unknown keys are found here, and errors of the typed pass are named by the key they
//! are at.

use serde_saphyr::{Location, Spanned};

pub(crate) use clb_cloud_config::yaml_tree::Node;

/// What may appear at a place in the file.
pub(crate) enum Shape {
    /// A value whose keys (if any) are not checked here.
    Any,
    /// A mapping with these keys only.
    Struct(&'static [(&'static str, Shape)]),
    /// A list of this.
    SeqOf(&'static Shape),
}

use Shape::{Any, SeqOf, Struct};

pub(crate) const WINDOW_KEYS: &[(&str, Shape)] =
    &[("days", Any), ("start_time", Any), ("length_minutes", Any)];
const WINDOW: Shape = Struct(WINDOW_KEYS);
pub(crate) const PERIODIC_KEYS: &[(&str, Shape)] =
    &[("time_zone", Any), ("windows", SeqOf(&WINDOW))];
pub(crate) const FLEET_LOCK_KEYS: &[(&str, Shape)] =
    &[("base_url", Any), ("group", Any), ("client_id", Any)];

/// Every key `partial.rs` reads; a test keeps the two lists equal.
pub(crate) const TOP_KEYS: &[(&str, Shape)] = &[
    ("image", Any),
    ("verify", Any),
    ("keys", Any),
    ("signature_repository", Any),
    ("auth_file", Any),
    ("insecure", Any),
    ("ca_files", Any),
    ("strategy", Any),
    ("periodic", Struct(PERIODIC_KEYS)),
    ("fleet_lock", Struct(FLEET_LOCK_KEYS)),
    ("check_interval", Any),
    ("check_jitter", Any),
    ("max_tries", Any),
    ("hooks", Any),
    ("admin_group", Any),
];

/// An unknown key: its dotted path (`periodic.windows[0].dayz`) and where the key is.
pub(crate) struct Unknown {
    pub path: String,
    pub at: Location,
}

pub(crate) fn unknown_keys(root: &Spanned<Node>) -> Vec<Unknown> {
    let mut out = Vec::new();
    walk(&root.value, &Struct(TOP_KEYS), "", &mut out);
    out
}

fn walk(node: &Node, shape: &Shape, path: &str, out: &mut Vec<Unknown>) {
    match (node, shape) {
        (Node::Map(entries), Struct(known)) => {
            for (key, value) in entries {
                let child = join(path, &key.value);
                match known.iter().find(|(name, _)| *name == key.value) {
                    Some((_, shape)) => walk(&value.value, shape, &child, out),
                    None => out.push(Unknown {
                        path: child,
                        at: key.referenced,
                    }),
                }
            }
        }
        (Node::Seq(items), SeqOf(shape)) => {
            for (i, item) in items.iter().enumerate() {
                walk(&item.value, shape, &format!("{path}[{i}]"), out);
            }
        }
        // A wrong type is the typed pass's error, not an unknown key.
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The dotted path of the deepest key or value that starts at `line:column`, to name what a
/// parser error is about.
pub(crate) fn path_at(root: &Spanned<Node>, line: u64, column: u64) -> Option<String> {
    let mut best: Option<String> = None;
    find(&root.value, "", line, column, &mut best);
    best
}

fn find(node: &Node, path: &str, line: u64, column: u64, best: &mut Option<String>) {
    let here = |at: &Location| at.line() == line && at.column() == column;
    let consider = |candidate: String, best: &mut Option<String>| {
        if best.as_ref().is_none_or(|b| candidate.len() > b.len()) {
            *best = Some(candidate);
        }
    };
    match node {
        Node::Map(entries) => {
            for (key, value) in entries {
                let child = join(path, &key.value);
                if here(&key.referenced) || here(&value.referenced) {
                    consider(child.clone(), best);
                }
                find(&value.value, &child, line, column, best);
            }
        }
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let child = format!("{path}[{i}]");
                if here(&item.referenced) {
                    consider(child.clone(), best);
                }
                find(&item.value, &child, line, column, best);
            }
        }
        Node::Null | Node::Scalar => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tree(text: &str) -> Spanned<Node> {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn unknown_keys_at_every_level_with_their_place() {
        let t = tree(
            "image: a\nimgae: b\nperiodic:\n  zone: x\n  windows:\n    - days: [Sat]\n      \
             dayz: [Sun]\nfleet_lock: {base_url: u, grp: g}\nextra: {nested: {deep: 1}}\n",
        );
        let found: Vec<(String, u64, u64)> = unknown_keys(&t)
            .into_iter()
            .map(|u| (u.path, u.at.line(), u.at.column()))
            .collect();
        assert_eq!(
            found,
            vec![
                ("imgae".to_string(), 2, 1),
                ("periodic.zone".to_string(), 4, 3),
                ("periodic.windows[0].dayz".to_string(), 7, 7),
                ("fleet_lock.grp".to_string(), 8, 27),
                // Not descended into: one warning for the whole unknown subtree.
                ("extra".to_string(), 9, 1),
            ]
        );
    }

    #[test]
    fn path_at_names_the_deepest_node() {
        let t = tree("max_tries: 3\nperiodic:\n  windows:\n    - days: x\n");
        assert_eq!(path_at(&t, 1, 12).as_deref(), Some("max_tries"));
        assert_eq!(path_at(&t, 1, 1).as_deref(), Some("max_tries"));
        assert_eq!(
            path_at(&t, 4, 13).as_deref(),
            Some("periodic.windows[0].days")
        );
        assert_eq!(
            path_at(&t, 4, 7).as_deref(),
            Some("periodic.windows[0].days")
        );
        assert_eq!(path_at(&t, 3, 9), None);
    }
}
