//! Manifests fetched under a size bound. oci-client reads a manifest whole into memory, so a
//! registry could hand it 100 MB (or 100,000 layers) to hold; here the `Content-Length` is
//! checked before the body is read, and a body without one is read only up to the bound.
//! Authentication stays oci-client's (its token dance, its cache); this only sends the GET.

use oci_client::errors::OciDistributionError as E;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest, Sha256};

/// The largest manifest accepted: the size registries commonly accept on push (the
/// distribution spec asks them to take at least 4 MiB). An image of 100 layers is ~20 KiB.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A reqwest client configured as oci-client's (CAs, timeouts, user agent).
pub(super) struct ManifestGetter {
    http: reqwest::Client,
}

impl ManifestGetter {
    pub fn new(builder: reqwest::ClientBuilder) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: builder.build()?,
        })
    }

    /// GETs the manifest `reference` names, over plain HTTP when `plain`; returns its bytes
    /// and their digest.
    pub async fn get(
        &self,
        oci: &Client,
        plain: bool,
        reference: &Reference,
        auth: &RegistryAuth,
        accepted: &[&str],
    ) -> Result<(Vec<u8>, String), E> {
        let token = oci.auth(reference, auth, RegistryOperation::Pull).await?;
        let target = reference
            .digest()
            .or_else(|| reference.tag())
            .unwrap_or("latest");
        let url = format!(
            "{}://{}/v2/{}/manifests/{target}",
            if plain { "http" } else { "https" },
            reference.resolve_registry(),
            reference.repository()
        );
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, accepted.join(", "));
        request = match (token, auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        };
        let mut response = request.send().await?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            401 | 403 => return Err(E::UnauthorizedError { url }),
            404 => {
                return Err(E::ImageManifestNotFoundError(format!(
                    "{url}: manifest unknown"
                )));
            }
            _ => {
                let body = response.text().await.unwrap_or_default();
                let message = body.chars().take(200).collect();
                return Err(E::ServerError {
                    code: status,
                    url,
                    message,
                });
            }
        }
        let too_big = |size: String| {
            E::SpecViolationError(format!(
                "manifest {reference} is {size}, more than the {MAX_MANIFEST_BYTES} bytes accepted"
            ))
        };
        if let Some(length) = response.content_length()
            && length > MAX_MANIFEST_BYTES
        {
            return Err(too_big(format!("{length} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if (body.len() + chunk.len()) as u64 > MAX_MANIFEST_BYTES {
                return Err(too_big("larger".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        Ok((body, digest))
    }
}
