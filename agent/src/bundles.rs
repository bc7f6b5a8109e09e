//! `clb verify-bundle`: a Sigstore bundle checked offline for a file or a digest, as the
//! sigstore-conformance suite drives clients (docs/signatures.md).

use std::path::{Path, PathBuf};

use clb_cosign::{BundleVerified, Matcher, Signed, Signer};

use crate::error::{ClbError, Result};

/// Where clb looks for a host's trusted root when none is given.
pub const HOST_TRUSTED_ROOT: &str = "/etc/clb/trusted_root.json";

/// What to verify and against what.
#[derive(Debug, Clone)]
pub struct BundleRequest {
    pub bundle: PathBuf,
    pub trusted_root: Option<PathBuf>,
    /// The embedded staging root instead of production (when no file is given).
    pub staging: bool,
    pub signer: SignerSpec,
    /// A file's path, or `sha256:<64 hex>` that is not a path on disk.
    pub file_or_digest: String,
}

/// The signer as given on the command line.
#[derive(Debug, Clone)]
pub enum SignerSpec {
    Key(PathBuf),
    Identity {
        identity: String,
        identity_is_regex: bool,
        issuer: String,
        issuer_is_regex: bool,
    },
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ClbError::Invalid(format!("{what} {} does not exist", path.display()))
        } else {
            ClbError::io(format!("reading {what} {}", path.display()))(e)
        }
    })
}

/// `sha256:<64 lowercase or uppercase hex>` that names no file: the protocol's digest form.
fn as_digest(input: &str) -> Option<&str> {
    let hex = input.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && !Path::new(input).exists())
        .then_some(hex)
}

pub fn verify(req: &BundleRequest) -> Result<BundleVerified> {
    let bundle = read(&req.bundle, "bundle")?;
    let root = match &req.trusted_root {
        Some(p) => read(p, "trusted root")?,
        None if !req.staging && Path::new(HOST_TRUSTED_ROOT).exists() => {
            read(Path::new(HOST_TRUSTED_ROOT), "trusted root")?
        }
        None => clb_cosign::embedded_trusted_root(req.staging).to_string(),
    };
    let signer = match &req.signer {
        SignerSpec::Key(p) => Signer::Key {
            pem: read(p, "public key")?,
            require_log: true,
        },
        SignerSpec::Identity {
            identity,
            identity_is_regex,
            issuer,
            issuer_is_regex,
        } => {
            let matcher = |value: &String, regex: bool| -> Result<Matcher> {
                if regex {
                    Matcher::regex(value).map_err(|source| ClbError::Bundle {
                        location: "the command line".to_string(),
                        source,
                    })
                } else {
                    Ok(Matcher::Exact(value.clone()))
                }
            };
            Signer::Identity {
                identity: matcher(identity, *identity_is_regex)?,
                issuer: matcher(issuer, *issuer_is_regex)?,
            }
        }
    };
    let artifact;
    let signed = match as_digest(&req.file_or_digest) {
        Some(hex) => Signed::Sha256(hex),
        None => {
            artifact = std::fs::read(&req.file_or_digest)
                .map_err(ClbError::io(format!("reading {}", req.file_or_digest)))?;
            Signed::Bytes(&artifact)
        }
    };
    clb_cosign::verify_bundle(&bundle, &root, signed, &signer).map_err(|source| ClbError::Bundle {
        location: req.bundle.display().to_string(),
        source,
    })
}
