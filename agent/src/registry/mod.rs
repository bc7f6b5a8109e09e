//! Registry client on top of oci-client: credentials, HTTPS with system or extra CAs, plain
//! HTTP only when asked (or for loopback registries that do not speak TLS), platform
//! resolution of image indexes, and resumable, digest-checked blob downloads with retries.

pub mod auth;
mod bounded;
mod download;
mod errors;
pub mod manifest;
pub mod platform;
pub mod reference;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest, Sha256};

pub use auth::CredentialSource;
pub use bounded::MAX_MANIFEST_BYTES;
pub use download::DownloadProgress;
pub use manifest::Manifest;
pub use platform::Platform;

use crate::error::{ClbError, Result};
use errors::{is_transport_error, map_oci_error};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
/// Longest one attempt at a small request may take (see `Registry::call_small`). With the
/// default 5 attempts a server that never finishes is given up on in under 4 minutes.
pub const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub credentials: CredentialSource,
    /// Allow plain HTTP to every registry (`--insecure`).
    pub insecure: bool,
    /// Extra trusted CA certificates (PEM), on top of the system ones.
    pub ca_files: Vec<PathBuf>,
    /// Platform to pick from image indexes; the host's when `None`.
    pub platform: Option<Platform>,
    /// Attempts per request on 5xx, timeouts and dropped connections.
    pub attempts: u32,
}

/// An image manifest resolved for one platform.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub reference: Reference,
    /// Digest the reference points at (an index for multi-arch images).
    pub top_digest: String,
    /// Digest of the platform's image manifest: what gets staged.
    pub manifest_digest: String,
    pub manifest: OciImageManifest,
}

/// A registry client and whether it speaks plain HTTP (what `Registry::call` hands each
/// attempt); derefs to the oci-client `Client`.
struct Conn {
    client: Client,
    plain: bool,
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

pub struct Registry {
    opts: RegistryOptions,
    https: Client,
    http: Client,
    manifests: bounded::ManifestGetter,
    /// Per registry: plain HTTP (`true`) or HTTPS, once known.
    plain: Mutex<HashMap<String, bool>>,
}

impl Registry {
    pub fn new(opts: RegistryOptions) -> Result<Self> {
        let mut certs = Vec::new();
        for file in &opts.ca_files {
            let data = std::fs::read(file)
                .map_err(ClbError::io(format!("reading CA file {}", file.display())))?;
            certs.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = |protocol| ClientConfig {
            protocol,
            extra_root_certificates: certs.clone(),
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("clb/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        // The manifest client is configured as oci-client configures its own.
        let mut pems = Vec::new();
        for cert in &certs {
            pems.push(
                reqwest::Certificate::from_pem(&cert.data)
                    .map_err(|e| ClbError::Invalid(format!("CA certificate: {e}")))?,
            );
        }
        let manifest_client = reqwest::Client::builder()
            .tls_certs_merge(pems)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("clb/", env!("CARGO_PKG_VERSION")));
        Ok(Self {
            https: without_panic(|| Client::try_from(config(ClientProtocol::Https)))
                .map_err(|e| ClbError::Invalid(format!("TLS configuration: {e}")))?,
            http: without_panic(|| Client::try_from(config(ClientProtocol::Http)))
                .map_err(|e| ClbError::Invalid(format!("HTTP configuration: {e}")))?,
            manifests: without_panic(|| bounded::ManifestGetter::new(manifest_client))
                .map_err(|e| ClbError::Invalid(format!("TLS configuration: {e}")))?,
            opts: RegistryOptions {
                attempts: opts.attempts.max(1),
                ..opts
            },
            plain: Mutex::new(HashMap::new()),
        })
    }

    pub fn parse_reference(text: &str) -> Result<Reference> {
        reference::parse(text)
            .map_err(|e| ClbError::Invalid(format!("image reference {text:?}: {e}")))
    }

    fn auth(&self, reference: &Reference) -> Result<RegistryAuth> {
        self.opts
            .credentials
            .for_registry(reference.resolve_registry())
    }

    fn is_loopback(registry: &str) -> bool {
        let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
        matches!(host, "127.0.0.1" | "localhost" | "[::1]")
    }

    /// The client for a registry; for loopback registries without `--insecure` the first call
    /// tries HTTPS and falls back to HTTP if TLS does not answer (as docker does).
    fn client(&self, registry: &str) -> (Conn, bool) {
        if self.opts.insecure {
            return (self.conn(true), false);
        }
        let known = self
            .plain
            .lock()
            .ok()
            .and_then(|m| m.get(registry).copied());
        match known {
            Some(plain) => (self.conn(plain), false),
            None => (self.conn(false), Self::is_loopback(registry)),
        }
    }

    fn conn(&self, plain: bool) -> Conn {
        Conn {
            client: if plain { &self.http } else { &self.https }.clone(),
            plain,
        }
    }

    fn remember(&self, registry: &str, plain: bool) {
        if let Ok(mut m) = self.plain.lock() {
            m.insert(registry.to_string(), plain);
        }
    }

    /// Runs one registry call with protocol fallback for loopback registries and retries on
    /// transient failures. `what` names the object for error messages.
    async fn call<T, F, Fut>(&self, reference: &Reference, what: &str, op: F) -> Result<T>
    where
        F: Fn(Conn, RegistryAuth) -> Fut,
        Fut: std::future::Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
    {
        let registry = reference.resolve_registry().to_string();
        let auth = self.auth(reference)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (client, may_fall_back) = self.client(&registry);
            match op(client, auth.clone()).await {
                Ok(v) => {
                    if may_fall_back {
                        self.remember(&registry, false);
                    }
                    return Ok(v);
                }
                Err(e) if may_fall_back && is_transport_error(&e) => {
                    tracing::debug!(%registry, error = %e, "HTTPS failed on a loopback registry, trying plain HTTP");
                    match op(self.conn(true), auth.clone()).await {
                        Ok(v) => {
                            self.remember(&registry, true);
                            return Ok(v);
                        }
                        Err(e2) if !is_transport_error(&e2) => {
                            self.remember(&registry, true);
                            // Plain HTTP answered: a 5xx there is retried like any other.
                            if !errors::is_retryable(&e2) || attempt >= self.opts.attempts {
                                return Err(with_auth_hint(
                                    map_oci_error(e2, what),
                                    &auth,
                                    &registry,
                                ));
                            }
                            tracing::warn!(%registry, attempt, error = %e2, "registry request failed, retrying");
                        }
                        Err(_) => {
                            if attempt >= self.opts.attempts {
                                return Err(map_oci_error(e, what));
                            }
                        }
                    }
                }
                Err(e) => {
                    if !errors::is_retryable(&e) || attempt >= self.opts.attempts {
                        return Err(with_auth_hint(map_oci_error(e, what), &auth, &registry));
                    }
                    tracing::warn!(%registry, attempt, error = %e, "registry request failed, retrying");
                }
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// [`Self::call`] for a request whose whole answer is small (manifests, signature
    /// payloads, configs, referrers): each attempt must complete within
    /// [`SMALL_REQUEST_TIMEOUT`]. The client's read timeout is per read, so a server that
    /// drips a byte at a time would otherwise hold the request forever.
    async fn call_small<T, F, Fut>(&self, reference: &Reference, what: &str, op: F) -> Result<T>
    where
        F: Fn(Conn, RegistryAuth) -> Fut,
        Fut: std::future::Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
    {
        self.call(reference, what, |c, auth| {
            let attempt = tokio::time::timeout(SMALL_REQUEST_TIMEOUT, op(c, auth));
            async move {
                attempt.await.unwrap_or_else(|_| {
                    Err(oci_client::errors::OciDistributionError::IoError(
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "no complete answer within {} s",
                                SMALL_REQUEST_TIMEOUT.as_secs()
                            ),
                        ),
                    ))
                })
            }
        })
        .await
    }

    /// Resolves a reference to the platform's image manifest.
    pub async fn resolve(&self, reference: &Reference) -> Result<ResolvedImage> {
        let (raw, top_digest) = self.pull_manifest_raw(reference).await?;
        let platform = self.opts.platform.clone().unwrap_or_else(Platform::host);
        let name = reference.to_string();
        let (manifest, manifest_digest) = match manifest::parse(&raw, &name, &platform)? {
            Manifest::Image(m) => (*m, top_digest.clone()),
            Manifest::Index(digest) => {
                let by_digest = reference.clone_with_digest(digest.clone());
                let (raw, got) = self.pull_manifest_raw(&by_digest).await?;
                check_digest(&raw, &digest, &format!("manifest {digest}"))?;
                match manifest::parse(&raw, &name, &platform)? {
                    Manifest::Image(m) => (*m, got),
                    Manifest::Index(_) => {
                        return Err(ClbError::Invalid(format!(
                            "{reference}: the platform's entry {digest} is another index"
                        )));
                    }
                }
            }
        };
        Ok(ResolvedImage {
            reference: reference.clone(),
            top_digest,
            manifest_digest,
            manifest,
        })
    }

    /// A manifest's raw bytes and digest (checked against the bytes by oci-client).
    pub async fn pull_manifest_raw(&self, reference: &Reference) -> Result<(Vec<u8>, String)> {
        let what = format!("manifest {reference}");
        let (raw, digest) = self
            .call_small(reference, &what, |c, auth| async move {
                self.manifests
                    .get(&c, c.plain, reference, &auth, ACCEPTED)
                    .await
            })
            .await?;
        let raw = raw.to_vec();
        if let Some(expected) = reference.digest() {
            check_digest(&raw, expected, &what)?;
        }
        Ok((raw, digest))
    }

    /// Like [`Self::pull_manifest_raw`] but a missing tag is `None` (signature lookups).
    pub async fn pull_manifest_optional(
        &self,
        reference: &Reference,
    ) -> Result<Option<(Vec<u8>, String)>> {
        match self.pull_manifest_raw(reference).await {
            Ok(v) => Ok(Some(v)),
            Err(ClbError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A small blob fully in memory, digest-checked (signature payloads, configs).
    pub async fn pull_blob_bytes(&self, reference: &Reference, digest: &str) -> Result<Vec<u8>> {
        let what = format!("blob {digest}");
        let bytes = self
            .call_small(reference, &what, |c, auth| async move {
                c.store_auth_if_needed(reference.resolve_registry(), &auth)
                    .await;
                let mut buf = Vec::new();
                c.pull_blob(reference, digest, &mut buf).await?;
                Ok(buf)
            })
            .await?;
        check_digest(&bytes, digest, &what)?;
        Ok(bytes)
    }

    /// The referrers index of `subject` (a reference by digest) for `artifact_type`: the OCI
    /// 1.1 referrers API, or where a registry has none (it answers 404) the `sha256-<hex>`
    /// tag fallback, which oci-client tries by itself. No referrers: an empty index.
    pub async fn referrers(&self, subject: &Reference, artifact_type: &str) -> Result<Vec<u8>> {
        let what = format!("referrers of {subject}");
        let index = self
            .call_small(subject, &what, |c, auth| async move {
                c.store_auth_if_needed(subject.resolve_registry(), &auth)
                    .await;
                c.pull_referrers(subject, Some(artifact_type)).await
            })
            .await?;
        serde_json::to_vec(&index).map_err(|e| ClbError::Invalid(format!("{what}: {e}")))
    }

    pub async fn blob_exists(&self, reference: &Reference, digest: &str) -> Result<bool> {
        self.call(reference, &format!("blob {digest}"), |c, auth| async move {
            c.auth(reference, &auth, RegistryOperation::Push).await?;
            c.blob_exists(reference, digest).await
        })
        .await
    }

    pub async fn push_blob(
        &self,
        reference: &Reference,
        data: Vec<u8>,
        digest: &str,
    ) -> Result<()> {
        if self.blob_exists(reference, digest).await? {
            return Ok(());
        }
        let data = bytes::Bytes::from(data);
        self.call(reference, &format!("blob {digest}"), |c, auth| {
            let data = data.clone();
            async move {
                c.auth(reference, &auth, RegistryOperation::Push).await?;
                c.push_blob(reference, data, digest).await.map(|_| ())
            }
        })
        .await
    }

    /// Uploads a blob from a file in chunks (layers can be larger than memory should hold).
    pub async fn push_blob_file(
        &self,
        reference: &Reference,
        path: &std::path::Path,
        digest: &str,
        size: u64,
    ) -> Result<()> {
        if self.blob_exists(reference, digest).await? {
            return Ok(());
        }
        self.call(reference, &format!("blob {digest}"), |c, auth| async move {
            c.auth(reference, &auth, RegistryOperation::Push).await?;
            let file = tokio::fs::File::open(path).await?;
            c.push_blob_stream(reference, download::file_chunks(file), digest, Some(size))
                .await
                .map(|_| ())
        })
        .await
    }

    /// Pushes a manifest; returns its digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        body: Vec<u8>,
        media_type: &str,
    ) -> Result<String> {
        let digest = sha256_digest(&body);
        let content_type: http::HeaderValue = media_type
            .parse()
            .map_err(|_| ClbError::Invalid(format!("media type {media_type:?}")))?;
        let body = bytes::Bytes::from(body);
        self.call(reference, "manifest push", |c, auth| {
            let body = body.clone();
            let content_type = content_type.clone();
            async move {
                c.auth(reference, &auth, RegistryOperation::Push).await?;
                c.push_manifest_raw(reference, body, content_type)
                    .await
                    .map(|_| ())
            }
        })
        .await?;
        Ok(digest)
    }
}

/// oci-client cannot tell "wrong password" from "no access"; say which credentials were used.
fn with_auth_hint(e: ClbError, auth: &RegistryAuth, registry: &str) -> ClbError {
    match (e, auth) {
        (ClbError::AuthRefused(m), RegistryAuth::Anonymous) => ClbError::AuthRefused(format!(
            "{m} (no credentials for {registry}: use --creds or an auth file)"
        )),
        (ClbError::AuthRefused(m), _) => ClbError::AuthRefused(format!(
            "{m} (the credentials for {registry} were refused or lack access)"
        )),
        (other, _) => other,
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.min(5))
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn check_digest(bytes: &[u8], expected: &str, what: &str) -> Result<()> {
    let actual = sha256_digest(bytes);
    if !expected.starts_with("sha256:") {
        return Err(ClbError::Invalid(format!(
            "{what}: unsupported digest algorithm in {expected}"
        )));
    }
    if actual != expected {
        return Err(ClbError::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Builds a reqwest client (ours, or oci-client's inside `try_from`): reqwest panics when the
/// system has no CA certificates at all (no ca-certificates package): that becomes an error
/// that says what to install, not a crash. The panic hook is silenced meanwhile so the
/// message is printed once, by the caller.
fn without_panic<T, E: std::fmt::Display>(
    build: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // AssertUnwindSafe: what the closure owns is dropped with it; nothing it touches
    // outlives a panic.
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build));
    std::panic::set_hook(hook);
    match built {
        Ok(Ok(client)) => Ok(client),
        // reqwest says only "builder error"; a missing CA bundle is by far the likeliest cause.
        Ok(Err(e)) => Err(format!(
            "{e} (no trusted CA certificates? install the Debian package ca-certificates)"
        )),
        Err(_) => Err(
            "no trusted CA certificates on this system: install the Debian package \
                       ca-certificates (or point SSL_CERT_FILE at a bundle)"
                .into(),
        ),
    }
}
