//! The trust policy file (`/etc/clb/policy.yaml`, `--policy`): which signers an image must
//! carry, per registry or repository scope. Everything it names (keys, trusted roots,
//! patterns) is read and checked when it loads, so a bad policy fails before any download.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clb_cosign::{Matcher, SigstoreRoot, TrustedKey};
use serde::Deserialize;

use super::error::PolicyError;
use crate::bundles::HOST_TRUSTED_ROOT;

/// The host's policy file, used when neither `--policy` nor `--key` is given.
pub const HOST_POLICY: &str = "/etc/clb/policy.yaml";

/// A loaded policy: the default entry and the scoped ones.
#[derive(Debug)]
pub struct TrustPolicy {
    default: Entry,
    scopes: BTreeMap<String, Entry>,
}

/// What one scope requires.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `default`, or the scope as written in the policy.
    pub scope: String,
    pub requirement: Requirement,
}

#[derive(Debug, Clone)]
pub enum Requirement {
    /// Every image of the scope is refused.
    Reject,
    /// Images are staged unchecked (logged as a warning).
    AcceptAnything,
    /// At least `threshold` distinct signers of the list verified the image.
    Signed {
        signers: Vec<TrustedSigner>,
        threshold: usize,
    },
}

#[derive(Debug, Clone)]
pub struct TrustedSigner {
    /// How the slot records it: the given name, else the key path or the identity.
    pub name: String,
    pub kind: SignerKind,
}

#[derive(Debug, Clone)]
pub enum SignerKind {
    Key {
        key: TrustedKey,
        /// Bundles must carry a transparency log entry (legacy `.sig` layers are key-only).
        require_log: bool,
        /// The Rekor keys for the entries a bundle carries.
        root: Arc<SigstoreRoot>,
    },
    Keyless {
        identity: Matcher,
        issuer: Matcher,
        root: Arc<SigstoreRoot>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    default: EntryFile,
    #[serde(default)]
    scopes: BTreeMap<String, EntryFile>,
}

#[derive(Deserialize, Default, PartialEq, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum EntryType {
    #[default]
    Signed,
    Reject,
    InsecureAcceptAnything,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EntryFile {
    #[serde(default, rename = "type")]
    kind: EntryType,
    #[serde(default)]
    signers: Vec<SignerFile>,
    threshold: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SignerFile {
    name: Option<String>,
    key: Option<PathBuf>,
    #[serde(default)]
    transparency_log: LogRequirement,
    identity: Option<String>,
    identity_regexp: Option<String>,
    issuer: Option<String>,
    issuer_regexp: Option<String>,
    trusted_root: Option<PathBuf>,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum LogRequirement {
    #[default]
    Optional,
    Required,
}

impl TrustPolicy {
    /// Reads and checks the policy at `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: PolicyFile =
            serde_saphyr::from_str(&text).map_err(|source| PolicyError::Parse {
                path: path.to_path_buf(),
                source: Box::new(source),
            })?;
        let mut loader = Loader {
            policy: path,
            base: path.parent().unwrap_or(Path::new("/")),
            roots: BTreeMap::new(),
        };
        let default = loader.entry("default", file.default)?;
        let mut scopes = BTreeMap::new();
        for (scope, entry) in file.scopes {
            let scope = scope.trim_end_matches('/').to_string();
            if scope.is_empty() || scope.contains(['@', ' ']) {
                return Err(loader.invalid(format!("scope {scope:?} is not a registry[/path]")));
            }
            let entry = loader.entry(&scope, entry)?;
            scopes.insert(scope, entry);
        }
        Ok(Self { default, scopes })
    }

    /// `--key` as a policy: any of the keys, for every image, no log required (as `.sig`
    /// verification always was). A file holding several keys gives a signer each
    /// (`FILE#1`, `FILE#2`, ...), as `--key` always allowed for rotation.
    pub fn from_keys(keys: &[PathBuf]) -> Result<Self, PolicyError> {
        let mut loader = Loader {
            policy: Path::new("--key"),
            base: Path::new(""),
            roots: BTreeMap::new(),
        };
        let root = loader.root(None)?;
        let mut signers = Vec::new();
        for path in keys {
            for key in loader.keys(path)? {
                signers.push(TrustedSigner {
                    name: key.source.clone(),
                    kind: SignerKind::Key {
                        key,
                        require_log: false,
                        root: root.clone(),
                    },
                });
            }
        }
        if signers.is_empty() {
            return Err(loader.invalid("no key given".into()));
        }
        Ok(Self {
            default: Entry {
                scope: "default".into(),
                requirement: Requirement::Signed {
                    signers,
                    threshold: 1,
                },
            },
            scopes: BTreeMap::new(),
        })
    }

    /// `--no-verify` as a policy: everything accepted, with a warning.
    pub fn accept_anything() -> Self {
        Self {
            default: Entry {
                scope: "--no-verify".into(),
                requirement: Requirement::AcceptAnything,
            },
            scopes: BTreeMap::new(),
        }
    }

    /// The entry for `registry/repository`: the longest scope that is the whole name or a
    /// prefix of it at a `/`, else the default.
    pub fn entry_for(&self, registry: &str, repository: &str) -> &Entry {
        let name = format!("{registry}/{repository}");
        let mut candidate = name.as_str();
        loop {
            if let Some(entry) = self.scopes.get(candidate) {
                return entry;
            }
            match candidate.rfind('/') {
                Some(at) => candidate = &candidate[..at],
                None => return &self.default,
            }
        }
    }
}

struct Loader<'a> {
    policy: &'a Path,
    base: &'a Path,
    roots: BTreeMap<PathBuf, Arc<SigstoreRoot>>,
}

impl Loader<'_> {
    fn invalid(&self, reason: String) -> PolicyError {
        PolicyError::Invalid {
            path: self.policy.to_path_buf(),
            reason,
        }
    }

    fn entry(&mut self, scope: &str, file: EntryFile) -> Result<Entry, PolicyError> {
        let requirement = match file.kind {
            EntryType::Reject | EntryType::InsecureAcceptAnything
                if !file.signers.is_empty() || file.threshold.is_some() =>
            {
                return Err(self.invalid(format!(
                    "{scope}: signers and threshold belong to type signed only"
                )));
            }
            EntryType::Reject => Requirement::Reject,
            EntryType::InsecureAcceptAnything => Requirement::AcceptAnything,
            EntryType::Signed => {
                let signers = file
                    .signers
                    .into_iter()
                    .map(|s| self.signer(scope, s))
                    .collect::<Result<Vec<_>, _>>()?;
                let threshold = file.threshold.unwrap_or(1);
                if signers.is_empty() {
                    return Err(
                        self.invalid(format!("{scope}: type signed needs at least one signer"))
                    );
                }
                if threshold == 0 || threshold > signers.len() {
                    return Err(self.invalid(format!(
                        "{scope}: threshold {threshold} with {} signers (needs 1 to {0})",
                        signers.len()
                    )));
                }
                Requirement::Signed { signers, threshold }
            }
        };
        Ok(Entry {
            scope: scope.to_string(),
            requirement,
        })
    }

    fn signer(&mut self, scope: &str, s: SignerFile) -> Result<TrustedSigner, PolicyError> {
        let keyless_fields = s.identity.is_some()
            || s.identity_regexp.is_some()
            || s.issuer.is_some()
            || s.issuer_regexp.is_some();
        let root = self.root(s.trusted_root)?;
        match (s.key, keyless_fields) {
            (Some(key), false) => {
                let path = self.base.join(key);
                // One signer is one key: a threshold counts distinct holders.
                let mut keys = self.keys(&path)?;
                let (Some(key), None) = (keys.pop(), keys.pop()) else {
                    return Err(self.invalid(format!(
                        "{scope}: {} holds several public keys; give each its own signer",
                        path.display()
                    )));
                };
                Ok(TrustedSigner {
                    name: s.name.unwrap_or_else(|| path.display().to_string()),
                    kind: SignerKind::Key {
                        key,
                        require_log: s.transparency_log == LogRequirement::Required,
                        root,
                    },
                })
            }
            (None, true) => {
                let identity = self.matcher(scope, "identity", s.identity, s.identity_regexp)?;
                let issuer = self.matcher(scope, "issuer", s.issuer, s.issuer_regexp)?;
                let name = s.name.unwrap_or_else(|| identity_label(&identity));
                Ok(TrustedSigner {
                    name,
                    kind: SignerKind::Keyless {
                        identity,
                        issuer,
                        root,
                    },
                })
            }
            _ => Err(self.invalid(format!(
                "{scope}: a signer is either `key` or a keyless identity with its issuer"
            ))),
        }
    }

    /// Every public key in the PEM file at `path`.
    fn keys(&self, path: &Path) -> Result<Vec<TrustedKey>, PolicyError> {
        let pem = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        clb_cosign::load_trusted_keys(&pem, &path.display().to_string()).map_err(|source| {
            PolicyError::Key {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    fn matcher(
        &self,
        scope: &str,
        what: &str,
        exact: Option<String>,
        pattern: Option<String>,
    ) -> Result<Matcher, PolicyError> {
        match (exact, pattern) {
            (Some(exact), None) => Ok(Matcher::Exact(exact)),
            (None, Some(pattern)) => {
                Matcher::regex(&pattern).map_err(|source| PolicyError::Pattern {
                    path: self.policy.to_path_buf(),
                    source,
                })
            }
            _ => Err(self.invalid(format!(
                "{scope}: a keyless signer needs exactly one of `{what}` and `{what}-regexp`"
            ))),
        }
    }

    /// The trusted root at `path` (relative to the policy), else the host's, else the one
    /// clb embeds; each file parsed once per policy.
    fn root(&mut self, path: Option<PathBuf>) -> Result<Arc<SigstoreRoot>, PolicyError> {
        let path = match path {
            Some(p) => self.base.join(p),
            None if Path::new(HOST_TRUSTED_ROOT).exists() => PathBuf::from(HOST_TRUSTED_ROOT),
            None => PathBuf::new(),
        };
        if let Some(root) = self.roots.get(&path) {
            return Ok(root.clone());
        }
        let json = if path.as_os_str().is_empty() {
            clb_cosign::embedded_trusted_root(false).to_string()
        } else {
            std::fs::read_to_string(&path).map_err(|source| PolicyError::Read {
                path: path.clone(),
                source,
            })?
        };
        let root = Arc::new(SigstoreRoot::from_json(&json).map_err(|source| {
            PolicyError::TrustedRoot {
                path: path.clone(),
                source,
            }
        })?);
        self.roots.insert(path, root.clone());
        Ok(root)
    }
}

fn identity_label(identity: &Matcher) -> String {
    match identity {
        Matcher::Exact(s) => s.clone(),
        Matcher::Regex(r) => format!("/{}/", r.as_str()),
    }
}
