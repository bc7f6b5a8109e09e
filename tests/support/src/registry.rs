//! A real `docker-registry` (CNCF distribution 2.8) process on 127.0.0.1.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::accesslog::{AccessLogEntry, BlobFetch, LogMarker, as_blob_fetch, parse_access_line};
use crate::http::{HttpResponse, base64, http_request};
use crate::token::{TOKEN_ISSUER, TOKEN_SERVICE, TokenServer, fetch_token, parse_bearer_challenge};
use crate::{require_tool, run_cmd, sha256_digest};

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const SYNC_PREFIX: &str = "/v2/?clb-log-sync=";
static SYNC_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How to run a [`Registry`]. `Default` is plain HTTP without auth.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a server certificate for `127.0.0.1` signed by a fresh self-signed CA
    /// (see [`Registry::ca_cert_path`]).
    pub tls: bool,
    /// Require HTTP basic auth with this `(user, password)` (htpasswd file, bcrypt). Works with
    /// or without TLS: distribution 2.8 does not enforce TLS for htpasswd (checked), although
    /// real deployments should use it.
    pub auth: Option<(String, String)>,
    /// Serve `auth` through Docker token auth (a [`TokenServer`] issuing ES256 JWTs) instead
    /// of htpasswd: clients must take the bearer path. Ignored without `auth`.
    pub token_auth: bool,
}

impl RegistryOptions {
    /// Plain HTTP, no auth.
    pub fn plain() -> Self {
        Self::default()
    }

    /// HTTPS with a self-signed CA, no auth.
    pub fn tls() -> Self {
        RegistryOptions {
            tls: true,
            ..Self::default()
        }
    }

    /// Adds htpasswd basic auth for `user`/`pass`.
    pub fn with_auth(mut self, user: &str, pass: &str) -> Self {
        self.auth = Some((user.to_string(), pass.to_string()));
        self.token_auth = false;
        self
    }

    /// Adds Docker token auth for `user`/`pass`: the registry accepts only bearer tokens from
    /// a [`TokenServer`] the fixture runs (see [`Registry::token_server`]), which grants pull
    /// and push to `user` and nothing to anonymous clients.
    pub fn with_token_auth(mut self, user: &str, pass: &str) -> Self {
        self.auth = Some((user.to_string(), pass.to_string()));
        self.token_auth = true;
        self
    }
}

/// A running `docker-registry` on 127.0.0.1 with storage, config, TLS material and log in its
/// own temporary directory. Killed (and reaped) on drop; the directory is removed.
///
/// The process's stdout and stderr (application log and combined access log) go to
/// [`Registry::log_path`].
pub struct Registry {
    child: Option<Child>,
    port: u16,
    opts: RegistryOptions,
    config_path: PathBuf,
    log_path: PathBuf,
    storage: PathBuf,
    ca_cert: Option<PathBuf>,
    cert_dir: Option<PathBuf>,
    token: Option<TokenServer>,
    // Last field: removed after everything else.
    dir: TempDir,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Registry {
    /// Starts a registry with `opts` on a free port of 127.0.0.1 and waits (up to 10 s) until
    /// `GET /v2/` answers 200 or 401. Errors carry the process's captured log.
    ///
    /// Needs `docker-registry`, plus `openssl` for TLS, `htpasswd` for basic auth, `python3`
    /// (with `cryptography`) for token auth and `curl` for TLS probing; panics with the
    /// "missing test prerequisite" message if one is missing.
    pub fn start(opts: RegistryOptions) -> Result<Registry, String> {
        require_tool("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("clb-registry-")
            .tempdir()
            .map_err(|e| format!("create temp dir: {e}"))?;
        let storage = dir.path().join("data");
        fs::create_dir_all(&storage).map_err(|e| format!("create storage dir: {e}"))?;
        let (ca_cert, cert_dir) = if opts.tls {
            let (ca, cd) = make_tls(dir.path())?;
            (Some(ca), Some(cd))
        } else {
            (None, None)
        };
        let mut token = None;
        if let Some((user, pass)) = opts.auth.as_ref().filter(|_| opts.token_auth) {
            // Started first: the registry reads the signing certificate at startup.
            token = Some(TokenServer::start(dir.path(), user, pass)?);
        } else if let Some((user, pass)) = &opts.auth {
            require_tool("htpasswd");
            let line = run_cmd(Command::new("htpasswd").args(["-Bbn", user, pass]))?;
            fs::write(dir.path().join("htpasswd"), line)
                .map_err(|e| format!("write htpasswd: {e}"))?;
        }
        let mut reg = Registry {
            child: None,
            port: 0,
            opts,
            config_path: dir.path().join("config.yml"),
            log_path: dir.path().join("registry.log"),
            storage,
            ca_cert,
            cert_dir,
            token,
            dir,
        };
        let mut last_err = String::new();
        for _ in 0..8 {
            reg.port = free_port()?;
            match reg.spawn_and_wait() {
                Ok(()) => return Ok(reg),
                Err(e) if e.contains("address already in use") => last_err = e,
                Err(e) => return Err(e),
            }
        }
        Err(format!(
            "no free port after 8 attempts; last error: {last_err}"
        ))
    }

    /// [`Registry::start`] with plain HTTP, panicking with the error (and log) on failure.
    pub fn start_plain() -> Registry {
        Registry::start(RegistryOptions::plain())
            .unwrap_or_else(|e| panic!("start plain docker-registry: {e}"))
    }

    fn write_config(&self) -> Result<(), String> {
        let d = self.dir.path();
        let mut secret = [0u8; 16];
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_nanos())
            .unwrap_or(0);
        secret.copy_from_slice(&nanos.to_le_bytes()[..16]);
        let mut cfg = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: '{}'\n  delete:\n    enabled: true\n\
             \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{}\n  secret: '{}'\n",
            self.storage.display(),
            self.port,
            sha256_digest(&secret).trim_start_matches("sha256:"),
        );
        if self.opts.tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: '{}'\n    key: '{}'\n",
                d.join("tls/server.crt").display(),
                d.join("tls/server.key").display()
            ));
        }
        if let Some(token) = &self.token {
            cfg.push_str(&format!(
                "auth:\n  token:\n    realm: '{}'\n    service: {TOKEN_SERVICE}\n    \
                 issuer: {TOKEN_ISSUER}\n    rootcertbundle: '{}'\n",
                token.realm(),
                token.cert_path().display()
            ));
        } else if self.opts.auth.is_some() {
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: clb-test\n    path: '{}'\n",
                d.join("htpasswd").display()
            ));
        }
        fs::write(&self.config_path, cfg).map_err(|e| format!("write registry config: {e}"))
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.write_config()?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("open {}: {e}", self.log_path.display()))?;
        let start_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log2 = log.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn docker-registry: {e}"))?;
        self.child = Some(child);
        let log_since = |me: &Self| {
            let all = fs::read(&me.log_path).unwrap_or_default();
            let from = usize::try_from(start_offset).unwrap_or(0).min(all.len());
            String::from_utf8_lossy(&all[from..]).into_owned()
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_probe: String;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "docker-registry exited early ({status}) on port {}; log:\n{}",
                    self.port,
                    log_since(self)
                ));
            }
            match self.request_inner("GET", "/v2/", &[], &[], false) {
                Ok(r) if r.status == 200 || r.status == 401 => return Ok(()),
                Ok(r) => last_probe = format!("GET /v2/ answered {}: {}", r.status, r.text()),
                Err(e) => last_probe = e,
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "docker-registry not ready within {READY_TIMEOUT:?} on port {} \
                     (last probe: {last_probe}); log:\n{}",
                    self.port,
                    log_since(self)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the registry process (SIGKILL) and reaps it; storage and log are kept, so
    /// [`Registry::restart`] can bring it back. Simulates a registry outage. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a stopped registry on the same port with the same storage, config and log,
    /// waiting until it answers (stops it first if it is running).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn_and_wait()
    }

    /// True while the process started by this fixture is alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `127.0.0.1:PORT`: the registry host as used in image references.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// `127.0.0.1:PORT/<repo_and_ref>`, e.g. `image_ref("t/img:v1")`.
    pub fn image_ref(&self, repo_and_ref: &str) -> String {
        format!("{}/{repo_and_ref}", self.addr())
    }

    /// True when serving HTTPS.
    pub fn is_tls(&self) -> bool {
        self.opts.tls
    }

    /// The CA certificate (PEM) that signed the server certificate, when TLS is on.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// A directory holding only `ca.crt` (the CA), in the layout skopeo/containers expect for
    /// `--cert-dir`/`--src-cert-dir`/`--dest-cert-dir`, when TLS is on.
    pub fn cert_dir(&self) -> Option<&Path> {
        self.cert_dir.as_deref()
    }

    /// The token server of a [`RegistryOptions::with_token_auth`] registry, e.g. to read which
    /// tokens it issued ([`TokenServer::requests`]).
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// The `(user, password)` the registry requires, if auth is on (basic or token).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.opts
            .auth
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The filesystem storage root (`docker/registry/v2/...` below it), e.g. to corrupt or
    /// delete a stored blob in a test.
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The fixture's temporary directory (config, TLS material, htpasswd, log, storage).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file receiving the registry's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole captured log so far (lossy UTF-8).
    pub fn log_contents(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Sends one request to the registry (`target` like `/v2/t/x/tags/list`), with basic
    /// auth if the registry requires it, or for a token-auth registry the bearer flow (send
    /// anonymously, on a 401 fetch a token for the challenged scope, send again with it). Plain
    /// HTTP uses the built-in client; TLS uses `curl --cacert` (HTTP/1.1).
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse, String> {
        self.request_inner(method, target, headers, body, true)
    }

    fn request_inner(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        with_auth: bool,
    ) -> Result<HttpResponse, String> {
        let auth = self.opts.auth.as_ref().filter(|_| with_auth);
        if let Some((u, p)) = auth.filter(|_| self.token.is_some()) {
            // No token cache: one extra round trip per request is fine for a fixture, and the
            // challenge names the exact scope this request needs. The probe carries no body:
            // distribution answers 401 before reading it and closes, and the unread body then
            // makes the kernel reset the connection, racing our read of the 401.
            let first = self.request_inner(method, target, headers, &[], false)?;
            if first.status != 401 {
                if body.is_empty() {
                    return Ok(first);
                }
                return Err(format!(
                    "{method} {target}: expected a bearer challenge to the probe, got {}: {}",
                    first.status,
                    first.text()
                ));
            }
            let challenge = first
                .header("WWW-Authenticate")
                .and_then(parse_bearer_challenge)
                .ok_or_else(|| {
                    format!(
                        "{method} {target}: 401 without a bearer challenge: {:?}",
                        first.headers
                    )
                })?;
            let bearer = format!("Bearer {}", fetch_token(&challenge, Some((u, p)))?);
            let mut h: Vec<(&str, &str)> = headers.to_vec();
            h.push(("Authorization", &bearer));
            return self.request_inner(method, target, &h, body, false);
        }
        if !self.opts.tls {
            let value;
            let mut h: Vec<(&str, &str)> = headers.to_vec();
            if let Some((u, p)) = auth {
                value = format!("Basic {}", base64(format!("{u}:{p}").as_bytes()));
                h.push(("Authorization", &value));
            }
            return http_request(&self.addr(), method, target, &h, body);
        }
        curl_request(
            &format!("{}{target}", self.url()),
            self.ca_cert.as_deref(),
            auth,
            method,
            headers,
            body,
        )
    }

    /// Uploads `data` as a blob of `repo` (monolithic: `POST /v2/<repo>/blobs/uploads/` then
    /// `PUT <location>&digest=`) and returns its digest.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> Result<String, String> {
        let digest = sha256_digest(data);
        let r = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])?;
        if r.status != 202 {
            return Err(format!("POST upload: status {}: {}", r.status, r.text()));
        }
        let loc = r
            .header("Location")
            .ok_or("POST upload: no Location header")?;
        let target = loc.strip_prefix(&self.url()).unwrap_or(loc).to_string();
        let sep = if target.contains('?') { '&' } else { '?' };
        let r = self.request(
            "PUT",
            &format!("{target}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        )?;
        if r.status != 201 {
            return Err(format!("PUT blob: status {}: {}", r.status, r.text()));
        }
        Ok(digest)
    }

    /// Uploads a manifest `body` of `media_type` as `repo:reference` and returns its digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String, String> {
        let r = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            body,
        )?;
        if r.status != 201 {
            return Err(format!("PUT manifest: status {}: {}", r.status, r.text()));
        }
        Ok(sha256_digest(body))
    }

    /// skopeo flags for using this registry as a destination (`--dest-tls-verify=false` or
    /// `--dest-cert-dir`, plus `--dest-creds`).
    pub fn skopeo_dest_flags(&self) -> Vec<String> {
        self.skopeo_flags("--dest-")
    }

    /// skopeo flags for using this registry as a source (`copy`'s `--src-…`).
    pub fn skopeo_src_flags(&self) -> Vec<String> {
        self.skopeo_flags("--src-")
    }

    /// skopeo flags for commands with a single image (`inspect`, `delete`, …).
    pub fn skopeo_flags_single(&self) -> Vec<String> {
        self.skopeo_flags("--")
    }

    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut v = Vec::new();
        match &self.cert_dir {
            Some(d) => v.push(format!("{prefix}cert-dir={}", d.display())),
            None => v.push(format!("{prefix}tls-verify=false")),
        }
        if let Some((u, p)) = &self.opts.auth {
            v.push(format!("{prefix}creds={u}:{p}"));
        }
        v
    }

    /// Copies the OCI layout image `oci:<layout>` (tag-less: the single image in the layout)
    /// to `docker://<addr>/<repo_and_ref>` with `skopeo copy`, keeping manifests and blobs
    /// byte-for-byte (`--preserve-digests`).
    pub fn skopeo_copy_to(&self, layout: &Path, repo_and_ref: &str) -> Result<(), String> {
        require_tool("skopeo");
        run_cmd(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--preserve-digests"])
                .args(self.skopeo_dest_flags())
                .arg(format!("oci:{}", layout.display()))
                .arg(format!("docker://{}", self.image_ref(repo_and_ref))),
        )
        .map(|_| ())
    }

    /// `skopeo inspect [--raw]` of `docker://<addr>/<repo_and_ref>`, parsed as JSON.
    pub fn skopeo_inspect(
        &self,
        repo_and_ref: &str,
        raw: bool,
    ) -> Result<serde_json::Value, String> {
        require_tool("skopeo");
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect").args(self.skopeo_flags_single());
        if raw {
            cmd.arg("--raw");
        }
        let out = run_cmd(cmd.arg(format!("docker://{}", self.image_ref(repo_and_ref))))?;
        serde_json::from_slice(&out).map_err(|e| format!("skopeo inspect output not JSON: {e}"))
    }

    /// Makes sure every request answered so far is in the log: sends a marked `GET /v2/`
    /// (which [`Registry::requests_since`] hides) and waits (up to 5 s) until its access line
    /// appears. A no-op if the registry is stopped.
    pub fn sync_log(&self) {
        if self.child.is_none() {
            return;
        }
        let n = SYNC_COUNTER.fetch_add(1, Ordering::Relaxed);
        let target = format!("{SYNC_PREFIX}{}-{n}", std::process::id());
        // The answer does not matter (401 is fine), only its log line.
        let _ = self.request_inner("GET", &target, &[], &[], false);
        let needle = format!("\"GET {target} ");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.log_contents().contains(&needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "registry access log did not record {target} within 5 s; log:\n{}",
            self.log_contents()
        );
    }

    /// Marks the current end of the log (after [`Registry::sync_log`]); pass it to
    /// [`Registry::fetches_since`]/[`Registry::requests_since`] to see only later requests.
    pub fn clear_log_marker(&self) -> LogMarker {
        self.sync_log();
        LogMarker(fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0))
    }

    /// All requests logged since `marker` (after [`Registry::sync_log`]), from the combined
    /// access log, in log order; the fixture's own readiness and sync probes are left out.
    pub fn requests_since(&self, marker: &LogMarker) -> Vec<AccessLogEntry> {
        self.sync_log();
        let all = fs::read(&self.log_path).unwrap_or_default();
        let from = usize::try_from(marker.0)
            .unwrap_or(usize::MAX)
            .min(all.len());
        String::from_utf8_lossy(&all[from..])
            .lines()
            .filter_map(parse_access_line)
            .filter(|e| !e.uri.starts_with(SYNC_PREFIX))
            .collect()
    }

    /// Every request logged so far (see [`Registry::requests_since`]). Includes the readiness
    /// probes (`GET /v2/`).
    pub fn requests(&self) -> Vec<AccessLogEntry> {
        self.requests_since(&LogMarker(0))
    }

    /// Blob GETs (`GET /v2/<repo>/blobs/<digest>`, any status) logged since `marker`.
    pub fn fetches_since(&self, marker: &LogMarker) -> Vec<BlobFetch> {
        self.requests_since(marker)
            .iter()
            .filter_map(as_blob_fetch)
            .collect()
    }

    /// GETs of the blob `digest` logged since `marker`, waiting up to 10 s until there are at
    /// least `at_least`: distribution logs a response after the client has it, so a command
    /// can exit before the line of its last fetch is written.
    pub fn fetches_of(&self, marker: &LogMarker, digest: &str, at_least: usize) -> Vec<BlobFetch> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let fetches: Vec<_> = self
                .fetches_since(marker)
                .into_iter()
                .filter(|f| f.digest == digest)
                .collect();
            if fetches.len() >= at_least || std::time::Instant::now() > deadline {
                return fetches;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Every blob GET logged since the registry started (see [`Registry::fetches_since`]).
    pub fn blob_fetches(&self) -> Vec<BlobFetch> {
        self.fetches_since(&LogMarker(0))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago (bind port 0, read it, drop the listener). The caller
/// retries on collision.
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// Creates `tls/ca.{key,crt}` and `tls/server.{key,crt}` (EC P-256, SAN IP:127.0.0.1 and
/// DNS:localhost) and `certs/ca.crt`; returns (CA cert path, cert dir).
fn make_tls(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    require_tool("openssl");
    let tls = dir.join("tls");
    let certs = dir.join("certs");
    fs::create_dir_all(&tls).map_err(|e| format!("create tls dir: {e}"))?;
    fs::create_dir_all(&certs).map_err(|e| format!("create certs dir: {e}"))?;
    fs::write(
        tls.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .map_err(|e| format!("write server.ext: {e}"))?;
    let openssl = |args: &[&str]| run_cmd(Command::new("openssl").current_dir(&tls).args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=clb test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "2",
        "-days",
        "3650",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ])?;
    let ca = tls.join("ca.crt");
    fs::copy(&ca, certs.join("ca.crt")).map_err(|e| format!("copy ca.crt: {e}"))?;
    Ok((ca, certs))
}

/// One HTTPS request through the `curl` CLI.
fn curl_request(
    url: &str,
    cacert: Option<&Path>,
    auth: Option<&(String, String)>,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse, String> {
    require_tool("curl");
    let tmp = tempfile::tempdir().map_err(|e| format!("temp dir for curl: {e}"))?;
    let (hdr, out, inp) = (
        tmp.path().join("h"),
        tmp.path().join("o"),
        tmp.path().join("i"),
    );
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--globoff",
        "--http1.1",
        "--max-time",
        "30",
        "-H",
        "Expect:",
    ])
    .arg("-D")
    .arg(&hdr)
    .arg("-o")
    .arg(&out);
    if let Some(ca) = cacert {
        cmd.arg("--cacert").arg(ca);
    }
    if let Some((u, p)) = auth {
        cmd.arg("-u").arg(format!("{u}:{p}"));
    }
    if method == "HEAD" {
        cmd.arg("--head");
    } else {
        cmd.args(["-X", method]);
    }
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        fs::write(&inp, body).map_err(|e| format!("write curl body: {e}"))?;
        cmd.arg("--data-binary").arg(format!("@{}", inp.display()));
    }
    cmd.arg(url);
    run_cmd(&mut cmd)?;
    let head = fs::read_to_string(&hdr).map_err(|e| format!("read curl headers: {e}"))?;
    // Last header block (after any 1xx interim responses).
    let block = head
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .ok_or("curl wrote no response headers")?;
    let mut lines = block.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = fs::read(&out).unwrap_or_default();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}
