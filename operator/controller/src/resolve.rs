//! Pinning a rollout's image: a tag is resolved to its manifest digest once, so that every
//! node gets the same release even if the tag moves meanwhile.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("image {image:?} is not a valid reference: {source}")]
    BadReference {
        image: String,
        #[source]
        source: oci_client::ParseError,
    },
    #[error("resolving {image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("{image} resolved to {digest:?}, not a sha256 digest")]
    NotSha256 { image: String, digest: String },
    #[error("no registry client: {0}")]
    Client(String),
}

/// Resolves tags anonymously (a private registry: put the digest in `spec.image`).
pub struct Resolver {
    client: Client,
}

impl Resolver {
    /// `insecure`: registries (`host:port`) spoken to over plain HTTP.
    pub fn new(insecure: Vec<String>) -> Result<Resolver, ResolveError> {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            ..ClientConfig::default()
        };
        Client::try_from(config)
            .map(|client| Resolver { client })
            .map_err(|e| ResolveError::Client(e.to_string()))
    }

    /// The digest `image` stands for now: the one in the reference, or its tag's.
    pub async fn digest(&self, image: &str) -> Result<String, ResolveError> {
        let reference = parse(image)?;
        if let Some(digest) = reference.digest() {
            return Ok(digest.to_string());
        }
        let digest = self
            .client
            .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
            .await
            .map_err(|source| ResolveError::Registry {
                image: image.to_string(),
                source,
            })?;
        if !is_sha256(&digest) {
            return Err(ResolveError::NotSha256 {
                image: image.to_string(),
                digest,
            });
        }
        Ok(digest)
    }
}

fn parse(image: &str) -> Result<Reference, ResolveError> {
    image.parse().map_err(|source| ResolveError::BadReference {
        image: image.to_string(),
        source,
    })
}

/// The digest written in `image` itself (`…@sha256:…`), if any: no registry needed.
pub fn digest_in(image: &str) -> Option<String> {
    let (_, digest) = image.rsplit_once('@')?;
    is_sha256(digest).then(|| digest.to_string())
}

pub fn is_sha256(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// What the nodes pull: `image` without its tag or digest, at `digest`
/// (`registry/repository@sha256:…`), as the user wrote the registry.
pub fn pinned_reference(image: &str, digest: &str) -> String {
    let name = image.rsplit_once('@').map_or(image, |(name, _)| name);
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last_slash = name.rfind('/').map_or(0, |at| at + 1);
    let name = match name[last_slash..].rfind(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    };
    format!("{name}@{digest}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_are_pinned_without_their_tag() {
        assert_eq!(
            pinned_reference("127.0.0.1:5000/os:v2", D),
            format!("127.0.0.1:5000/os@{D}")
        );
        assert_eq!(
            pinned_reference("registry.example/a/os", D),
            format!("registry.example/a/os@{D}")
        );
        assert_eq!(
            pinned_reference(&format!("reg:5000/os:v2@{D}"), D),
            format!("reg:5000/os@{D}")
        );
        assert_eq!(digest_in(&format!("reg/os@{D}")).as_deref(), Some(D));
        assert_eq!(digest_in("reg/os:v2"), None);
        assert!(!is_sha256("sha256:XYZ"));
    }
}
