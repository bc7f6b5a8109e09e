//! A Docker token-auth server (`tests/token_server.py`) for registries started with
//! [`crate::RegistryOptions::with_token_auth`], and the client half of the bearer flow for the
//! fixture's own requests.
//!
//! The flow (distribution's `auth: token:`): the registry answers 401 with
//! `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`; the client fetches a JWT from
//! the realm with Basic credentials and retries with `Authorization: Bearer <JWT>`. The server
//! logs every token request (user, scopes, what was granted), which is how tests prove the
//! bearer path was used: distribution's access log does not record the `Authorization` header.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::http::{base64, http_request};
use crate::require_tool;

/// The `service` (JWT audience) the registry and the token server agree on.
pub const TOKEN_SERVICE: &str = "clb-test-registry";
/// The JWT issuer the registry trusts.
pub const TOKEN_ISSUER: &str = "clb-test-issuer";

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One `GET /token` as recorded by the token server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The authenticated user; `None` for anonymous or refused requests.
    pub user: Option<String>,
    /// `granted` (right credentials), `anonymous` (no `Authorization`: a token granting
    /// nothing), `bad-credentials` (answered 401) or `bad-service` (answered 400).
    pub outcome: String,
    /// HTTP status the token server answered.
    pub status: u16,
    /// The `scope` parameters as requested, e.g. `repository:os:pull,push`.
    pub scopes: Vec<String>,
    /// What the issued token grants: `(repository name, actions)`.
    pub access: Vec<(String, Vec<String>)>,
}

/// A running `tests/token_server.py` on 127.0.0.1, signing ES256 tokens with a fresh key whose
/// self-signed certificate is [`TokenServer::cert_path`]. Killed (and reaped) on drop.
#[derive(Debug)]
pub struct TokenServer {
    child: Option<Child>,
    port: u16,
    cert_path: PathBuf,
    log_path: PathBuf,
}

impl TokenServer {
    /// Starts the server for `user`/`pass`, with its certificate, request log and stderr in
    /// `dir`, and waits (up to 10 s) until it listens. Needs `python3` with `cryptography`.
    pub fn start(dir: &Path, user: &str, pass: &str) -> Result<TokenServer, String> {
        require_tool(crate::PYTHON);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../token_server.py");
        let cert_path = dir.join("token-signer.crt");
        let log_path = dir.join("token-requests.jsonl");
        let stderr_path = dir.join("token-server.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| format!("create {}: {e}", stderr_path.display()))?;
        let mut child = Command::new(crate::PYTHON)
            .arg(&script)
            .args(["--user", user, "--password", pass])
            .args(["--service", TOKEN_SERVICE, "--issuer", TOKEN_ISSUER])
            .arg("--cert-out")
            .arg(&cert_path)
            .arg("--log")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn python3 {}: {e}", script.display()))?;
        // The script binds 127.0.0.1:0 itself and prints the port once listening, so there is
        // no free-port race. Read it on a thread: std has no read timeout for pipes.
        let stdout = child.stdout.take().ok_or("token server: no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = tx.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
        });
        let port = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line.trim().parse::<u16>().ok(),
            _ => None,
        };
        let mut server = TokenServer {
            child: Some(child),
            port: 0,
            cert_path,
            log_path,
        };
        match port {
            Some(p) if server.cert_path.is_file() => {
                server.port = p;
                Ok(server)
            }
            _ => {
                server.stop();
                Err(format!(
                    "token server {} did not start within {START_TIMEOUT:?}; stderr:\n{}",
                    script.display(),
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                ))
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The token endpoint, `http://127.0.0.1:PORT/token` (the registry's `realm`).
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The PEM certificate of the signing key (the registry's `rootcertbundle`).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The JSON-lines request log (see [`TokenServer::requests`]).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Every token request so far, in order. The server appends a line before it answers, so
    /// a request whose answer the client has seen is always here.
    pub fn requests(&self) -> Vec<TokenRequest> {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("token server log line not JSON ({e}): {l}"));
                let strings = |v: &serde_json::Value| -> Vec<String> {
                    v.as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                TokenRequest {
                    user: v["user"].as_str().map(str::to_string),
                    outcome: v["outcome"].as_str().unwrap_or_default().to_string(),
                    status: v["status"]
                        .as_u64()
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or(0),
                    scopes: strings(&v["scopes"]),
                    access: v["access"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|r| {
                                    (
                                        r["name"].as_str().unwrap_or_default().to_string(),
                                        strings(&r["actions"]),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The parameters of a `WWW-Authenticate: Bearer …` challenge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (quoted values; a scope may itself contain
/// commas, e.g. `pull,push`, so splitting on ',' would be wrong). `None` if not a Bearer
/// challenge or without a realm.
pub(crate) fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let (scheme, mut rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut c = BearerChallenge::default();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let after = after.strip_prefix('"')?;
        let end = after.find('"')?;
        let value = after[..end].to_string();
        rest = &after[end + 1..];
        match key.trim() {
            "realm" => c.realm = value,
            "service" => c.service = Some(value),
            "scope" => c.scope = Some(value),
            _ => {}
        }
    }
    (!c.realm.is_empty()).then_some(c)
}

/// Fetches a token for `challenge` from its (plain-HTTP, 127.0.0.1) realm, with Basic `creds`
/// or anonymously.
pub(crate) fn fetch_token(
    challenge: &BearerChallenge,
    creds: Option<(&str, &str)>,
) -> Result<String, String> {
    let rest = challenge
        .realm
        .strip_prefix("http://")
        .ok_or_else(|| format!("token realm is not plain http: {}", challenge.realm))?;
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut query = Vec::new();
    if let Some(s) = &challenge.service {
        query.push(format!("service={}", query_escape(s)));
    }
    if let Some(s) = &challenge.scope {
        query.push(format!("scope={}", query_escape(s)));
    }
    let target = format!(
        "{}?{}",
        if path.is_empty() { "/" } else { path },
        query.join("&")
    );
    let auth;
    let mut headers = Vec::new();
    if let Some((u, p)) = creds {
        auth = format!("Basic {}", base64(format!("{u}:{p}").as_bytes()));
        headers.push(("Authorization", auth.as_str()));
    }
    let r = http_request(addr, "GET", &target, &headers, &[])?;
    if r.status != 200 {
        return Err(format!("token request {target}: {} {}", r.status, r.text()));
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .map_err(|e| format!("token response not JSON ({e}): {}", r.text()))?;
    v["token"]
        .as_str()
        .or_else(|| v["access_token"].as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("token response without token: {}", r.text()))
}

/// Percent-encodes everything but RFC 3986 unreserved characters and the ':' ',' '/' that
/// scopes are made of (all legal in a query).
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b':' | b',' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_keep_commas_inside_quoted_scopes() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="svc",scope="repository:t/x:pull,push""#,
        )
        .expect("a bearer challenge");
        assert_eq!(c.realm, "http://127.0.0.1:1/token");
        assert_eq!(c.service.as_deref(), Some("svc"));
        assert_eq!(c.scope.as_deref(), Some("repository:t/x:pull,push"));
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
    }

    /// The whole loop against a real distribution: the registry refuses Basic, the fixture's
    /// own requests take the bearer path, anonymous tokens grant nothing, wrong credentials
    /// are refused by the token server.
    #[test]
    fn token_registry_accepts_only_bearer_tokens_from_the_token_server() {
        use crate::{Registry, RegistryOptions, sha256_digest};
        let reg = Registry::start(RegistryOptions::plain().with_token_auth("alice", "s3cret"))
            .unwrap_or_else(|e| panic!("start token-auth registry: {e}"));
        let ts = reg
            .token_server()
            .expect("token registry has a token server");

        // Basic credentials are not a way in: distribution's token controller wants Bearer.
        let basic = format!("Basic {}", base64(b"alice:s3cret"));
        let r = http_request(
            &reg.addr(),
            "GET",
            "/v2/t/x/tags/list",
            &[("Authorization", &basic)],
            &[],
        )
        .expect("GET with basic");
        assert_eq!(r.status, 401, "basic auth must be refused: {}", r.text());
        let challenge = parse_bearer_challenge(r.header("WWW-Authenticate").unwrap_or_default())
            .unwrap_or_else(|| panic!("bearer challenge expected: {:?}", r.headers));
        assert_eq!(challenge.realm, ts.realm());
        assert_eq!(challenge.service.as_deref(), Some(TOKEN_SERVICE));
        assert_eq!(challenge.scope.as_deref(), Some("repository:t/x:pull"));

        // The fixture's helpers do the bearer flow with the configured credentials.
        let digest = reg
            .push_blob("t/x", b"hello token")
            .expect("push_blob via bearer");
        assert_eq!(digest, sha256_digest(b"hello token"));
        let r = reg
            .request("GET", &format!("/v2/t/x/blobs/{digest}"), &[], &[])
            .expect("GET blob");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, b"hello token");
        let granted: Vec<_> = ts
            .requests()
            .into_iter()
            .filter(|t| t.outcome == "granted")
            .collect();
        assert!(
            // distribution lists a scope's actions in map order: "pull,push" or "push,pull".
            granted.iter().any(|t| t.user.as_deref() == Some("alice")
                && matches!(t.access.as_slice(), [(repo, actions)] if repo == "t/x" && {
                    let mut sorted = actions.clone();
                    sorted.sort();
                    sorted == ["pull", "push"]
                })),
            "a pull,push token for t/x: {granted:?}"
        );

        // Anonymous: a token is issued, but it grants nothing, so the registry says no.
        let anon = fetch_token(&challenge, None).expect("anonymous token");
        let r = http_request(
            &reg.addr(),
            "GET",
            &format!("/v2/t/x/blobs/{digest}"),
            &[("Authorization", &format!("Bearer {anon}"))],
            &[],
        )
        .expect("GET with anonymous token");
        assert_eq!(r.status, 401, "anonymous token must not pull: {}", r.text());
        assert!(r.text().contains("insufficient_scope") || r.text().contains("UNAUTHORIZED"));
        let last = ts.requests().pop().expect("anonymous request logged");
        assert_eq!((last.outcome.as_str(), last.access.len()), ("anonymous", 0));

        // Wrong credentials: the token server itself refuses.
        let err = fetch_token(&challenge, Some(("alice", "wrong"))).expect_err("wrong password");
        assert!(err.contains(": 401 "), "{err}");
        assert_eq!(ts.requests().pop().unwrap().outcome, "bad-credentials");
    }

    /// Over TLS the fixture's requests go through `curl`; the bearer header must too.
    #[test]
    fn tls_token_registry_fixture_requests_use_bearer_tokens() {
        use crate::{Registry, RegistryOptions};
        let reg = Registry::start(RegistryOptions::tls().with_token_auth("alice", "s3cret"))
            .unwrap_or_else(|e| panic!("start TLS token-auth registry: {e}"));
        let digest = reg
            .push_blob("t/y", b"over tls")
            .expect("push_blob via bearer");
        let r = reg
            .request("GET", &format!("/v2/t/y/blobs/{digest}"), &[], &[])
            .expect("GET blob");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"over tls"[..]));
        let ts = reg.token_server().expect("token server");
        assert!(ts.requests().iter().all(|t| t.outcome == "granted"));
    }
}
