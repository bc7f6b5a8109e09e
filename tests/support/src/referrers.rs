//! A registry with the OCI referrers API, for tests: a proxy on 127.0.0.1 in front of a real
//! (plain-HTTP) [`Registry`], which as CNCF distribution 2.8 has no such API. Written from
//! distribution-spec v1.1 (spec.md "Pushing Manifests with Subject", "Listing Referrers",
//! "Referrers Tag Schema"), not from clb's client.
//!
//! Every request is forwarded (method, target, headers, body; buffered, not streamed) and the
//! answer relayed, with `Location` rewritten to point back at the proxy, except:
//!
//! - `PUT /v2/<name>/manifests/<ref>` of a manifest with a `subject`: forwarded; when the
//!   registry accepts it, its descriptor (`mediaType`, `digest` = sha256 of the body, `size`,
//!   `artifactType` = the manifest's `artifactType`, else its `config.mediaType`, else none,
//!   and its `annotations`) is listed under (name, subject digest), and the answer carries
//!   `OCI-Subject: <subject digest>`.
//! - `GET /v2/<name>/referrers/<digest>[?artifactType=X]`: 200 with an OCI image index of the
//!   descriptors listed for that subject (empty for an unknown one), filtered by `artifactType`
//!   when asked (then with `OCI-Filters-Applied: artifactType`); 400 `DIGEST_INVALID` for a
//!   malformed digest. Never 404, as the spec requires of a registry with the API.
//! - `GET`/`HEAD /v2/<name>/manifests/sha256-<64 hex>` (a referrers fallback tag): 404
//!   `MANIFEST_UNKNOWN`, whatever upstream holds, so a client that passes proves it used the
//!   API.
//!
//! Not modelled: deleting a manifest does not drop it from the list, no pagination (`Link`),
//! the proxy's own answers do not check credentials (forwarded requests keep theirs).
//! Requests may come with `Content-Length` or chunked bodies and `Expect: 100-continue`; every
//! answer closes the connection.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::http_request;
use crate::serve::{Request, accept_loop, read_request};
use crate::{Registry, sha256_digest};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Headers that belong to one connection, not to the request or answer they travel with.
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "expect",
    "host",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

#[derive(Default)]
struct State {
    /// (repository name, subject digest) → descriptors, in push order.
    referrers: BTreeMap<(String, String), Vec<Value>>,
    /// "METHOD target" of every request, in arrival order.
    log: Vec<String>,
}

struct Shared {
    /// The upstream registry, `127.0.0.1:PORT`.
    upstream: String,
    /// This proxy, `127.0.0.1:PORT`.
    own: String,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A referrers-API registry on 127.0.0.1 in front of a plain-HTTP [`Registry`]; see the module
/// documentation. Stops on drop.
pub struct ReferrersProxy {
    addr: String,
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ReferrersProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferrersProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

impl ReferrersProxy {
    /// Starts a proxy on an ephemeral port of 127.0.0.1 forwarding to `upstream`, which must
    /// serve plain HTTP (panics otherwise, or if the port cannot be bound).
    pub fn start(upstream: &Registry) -> ReferrersProxy {
        assert!(
            !upstream.is_tls(),
            "ReferrersProxy forwards plain HTTP only; {upstream:?} serves TLS"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the referrers proxy");
        let port = listener.local_addr().expect("proxy local address").port();
        let addr = format!("127.0.0.1:{port}");
        let shared = Arc::new(Shared {
            upstream: upstream.addr(),
            own: addr.clone(),
            state: Mutex::new(State::default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = shared.clone();
            accept_loop(listener, stop.clone(), move |conn| serve(&conn, &shared))
        };
        ReferrersProxy {
            addr,
            port,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`: the registry host clients are pointed at.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT/<repo_and_ref>`, e.g. `image_ref("t/img:v1")`.
    pub fn image_ref(&self, repo_and_ref: &str) -> String {
        format!("{}/{repo_and_ref}", self.addr)
    }

    /// Lists `descriptor` (any JSON, e.g. one naming a blob that does not exist) among the
    /// referrers of `name`@`subject_digest`, after those already there.
    pub fn add_referrer(&self, name: &str, subject_digest: &str, descriptor: Value) {
        self.shared
            .lock()
            .referrers
            .entry((name.to_owned(), subject_digest.to_owned()))
            .or_default()
            .push(descriptor);
    }

    /// The descriptors listed for `name`@`subject_digest` (unfiltered).
    pub fn referrers(&self, name: &str, subject_digest: &str) -> Vec<Value> {
        self.shared
            .lock()
            .referrers
            .get(&(name.to_owned(), subject_digest.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// `"METHOD path?query"` of every request received so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }
}

impl Drop for ReferrersProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// One answer to write back.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The `Content-Length` to announce when it is not the body's (an answer to HEAD).
    pub content_length: Option<usize>,
}

impl Answer {
    fn json(status: u16, content_type: &str, body: &Value) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.to_string().into_bytes(),
            content_length: None,
        }
    }

    /// A distribution-spec error body.
    pub(crate) fn error(status: u16, code: &str, message: &str, detail: &str) -> Answer {
        let body = json!({"errors": [{"code": code, "message": message, "detail": detail}]});
        Answer::json(status, "application/json", &body)
    }
}

fn serve(conn: &TcpStream, shared: &Shared) {
    let timeout = Some(Duration::from_secs(30));
    let _ = conn.set_read_timeout(timeout);
    let _ = conn.set_write_timeout(timeout);
    let Some(req) = read_request(conn) else {
        return;
    };
    shared
        .lock()
        .log
        .push(format!("{} {}", req.method, req.path));
    let answer = handle(&req, shared);
    write_answer(conn, &req.method, &answer);
}

fn handle(req: &Request, shared: &Shared) -> Answer {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let method = req.method.as_str();
    if let Some((name, reference)) = split_route(path, "/manifests/") {
        if matches!(method, "GET" | "HEAD") && is_fallback_tag(reference) {
            return Answer::error(
                404,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
                "referrers fallback tags are hidden: this registry has the referrers API",
            );
        }
        if method == "PUT" {
            return put_manifest(req, name, shared);
        }
    }
    if let Some((name, digest)) = split_route(path, "/referrers/")
        && method == "GET"
    {
        return list_referrers(name, digest, query, shared);
    }
    forward(req, &shared.upstream, &shared.own)
}

/// `/v2/<name><sep><last>` → (name, last), where `last` has no `/`.
fn split_route<'a>(path: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let rest = path.strip_prefix("/v2/")?;
    let at = rest.rfind(sep)?;
    let (name, last) = (&rest[..at], &rest[at + sep.len()..]);
    (!name.is_empty() && !last.is_empty() && !last.contains('/')).then_some((name, last))
}

fn is_fallback_tag(reference: &str) -> bool {
    reference
        .strip_prefix("sha256-")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A digest as the spec's grammar has it (`algorithm:encoded`), with sha256 and sha512
/// checked for their exact lowercase-hex length.
fn valid_digest(digest: &str) -> bool {
    let Some((algo, encoded)) = digest.split_once(':') else {
        return false;
    };
    let hex_of = |n: usize| {
        encoded.len() == n
            && encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match algo {
        "sha256" => hex_of(64),
        "sha512" => hex_of(128),
        _ => {
            !algo.is_empty()
                && algo
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                && !encoded.is_empty()
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
        }
    }
}

fn put_manifest(req: &Request, name: &str, shared: &Shared) -> Answer {
    let mut answer = forward(req, &shared.upstream, &shared.own);
    if !(200..300).contains(&answer.status) {
        return answer;
    }
    let Ok(manifest) = serde_json::from_slice::<Value>(&req.body) else {
        return answer;
    };
    let Some(subject) = manifest.pointer("/subject/digest").and_then(Value::as_str) else {
        return answer;
    };
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let media_type = text(manifest.get("mediaType"))
        .or_else(|| {
            req.header("content-type")
                .map(|ct| ct.split(';').next().unwrap_or_default().trim().to_owned())
        })
        .unwrap_or_default();
    let digest = sha256_digest(&req.body);
    let mut desc = json!({"mediaType": media_type, "digest": digest, "size": req.body.len()});
    if let Some(at) =
        text(manifest.get("artifactType")).or_else(|| text(manifest.pointer("/config/mediaType")))
    {
        desc["artifactType"] = Value::String(at);
    }
    if let Some(ann) = manifest
        .get("annotations")
        .filter(|a| a.as_object().is_some_and(|o| !o.is_empty()))
    {
        desc["annotations"] = ann.clone();
    }
    {
        let mut state = shared.lock();
        let list = state
            .referrers
            .entry((name.to_owned(), subject.to_owned()))
            .or_default();
        // Pushing the same manifest again does not list it twice.
        list.retain(|d| d.get("digest").and_then(Value::as_str) != Some(digest.as_str()));
        list.push(desc);
    }
    answer
        .headers
        .push(("OCI-Subject".to_owned(), subject.to_owned()));
    answer
}

fn list_referrers(name: &str, digest: &str, query: &str, shared: &Shared) -> Answer {
    if !valid_digest(digest) {
        return Answer::error(400, "DIGEST_INVALID", "provided digest is invalid", digest);
    }
    let filter = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "artifactType")
        .map(|(_, v)| percent_decode(v));
    let manifests: Vec<Value> = shared
        .lock()
        .referrers
        .get(&(name.to_owned(), digest.to_owned()))
        .into_iter()
        .flatten()
        .filter(|d| {
            filter
                .as_deref()
                .is_none_or(|at| d.get("artifactType").and_then(Value::as_str) == Some(at))
        })
        .cloned()
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut answer = Answer::json(200, OCI_INDEX, &index);
    if filter.is_some() {
        answer
            .headers
            .push(("OCI-Filters-Applied".to_owned(), "artifactType".to_owned()));
    }
    answer
}

/// `%XX` decoding of a query value. `+` stays `+`: media types have no spaces, and clients
/// that do not escape the `+` of `...+json` must still match.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `req` to `upstream` and turns the answer into ours (`Location`s pointing upstream
/// point at `own` instead); 502 if upstream cannot be reached.
pub(crate) fn forward(req: &Request, upstream: &str, own: &str) -> Answer {
    let headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .filter(|(k, _)| !HOP_BY_HOP.iter().any(|h| k.eq_ignore_ascii_case(h)))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let resp = match http_request(upstream, &req.method, &req.path, &headers, &req.body) {
        Ok(resp) => resp,
        Err(e) => return Answer::error(502, "UNAVAILABLE", "upstream registry unreachable", &e),
    };
    let upstream_url = format!("http://{upstream}");
    let own_url = format!("http://{own}");
    let mut content_length = None;
    let mut headers = Vec::new();
    for (k, v) in resp.headers {
        if k.eq_ignore_ascii_case("content-length") && req.method == "HEAD" {
            content_length = v.parse().ok();
        }
        if HOP_BY_HOP.iter().any(|h| k.eq_ignore_ascii_case(h)) {
            continue;
        }
        let v = match v.strip_prefix(&upstream_url) {
            Some(rest) if k.eq_ignore_ascii_case("location") => format!("{own_url}{rest}"),
            _ => v,
        };
        headers.push((k, v));
    }
    Answer {
        status: resp.status,
        headers,
        body: resp.body,
        content_length,
    }
}

pub(crate) fn write_answer(mut conn: &TcpStream, method: &str, answer: &Answer) {
    let reason = match answer.status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", answer.status);
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let length = answer.content_length.unwrap_or(answer.body.len());
    head.push_str(&format!(
        "Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ));
    let body: &[u8] = if method == "HEAD" { &[] } else { &answer.body };
    let _ = conn
        .write_all(head.as_bytes())
        .and_then(|()| conn.write_all(body));
    let _ = conn.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_name_and_last_segment() {
        assert_eq!(
            split_route("/v2/a/b/manifests/v1", "/manifests/"),
            Some(("a/b", "v1"))
        );
        assert_eq!(
            split_route("/v2/a/referrers/sha256:ab", "/referrers/"),
            Some(("a", "sha256:ab"))
        );
        assert_eq!(split_route("/v2/manifests/v1", "/manifests/"), None);
        assert_eq!(split_route("/v2/a/manifests/", "/manifests/"), None);
    }

    #[test]
    fn fallback_tags_and_digests_are_recognised() {
        let hex = "a".repeat(64);
        assert!(is_fallback_tag(&format!("sha256-{hex}")));
        assert!(!is_fallback_tag("sha256-abc"));
        assert!(!is_fallback_tag("v1"));
        assert!(valid_digest(&format!("sha256:{hex}")));
        assert!(!valid_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!valid_digest("sha256:abc"));
        assert!(!valid_digest("nodigest"));
    }

    #[test]
    fn query_values_are_percent_decoded_keeping_plus() {
        assert_eq!(
            percent_decode("application%2Fvnd.x.v1%2Bjson"),
            "application/vnd.x.v1+json"
        );
        assert_eq!(
            percent_decode("application/vnd.x.v1+json"),
            "application/vnd.x.v1+json"
        );
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }
}
