//! A hostile or broken registry, for tests: a proxy on 127.0.0.1 in front of a real
//! (plain-HTTP) [`Registry`] that forwards every request as the referrers proxy does, but
//! answers the requests whose path contains a chosen text with one [`Misbehavior`]. The
//! misbehaviours are HTTP/1.1's and the distribution spec's failure modes as a client meets
//! them on the wire (RFC 9110/9112: status codes, `Content-Length`, redirects; a TCP reset),
//! not modelled on clb's client.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Registry;
use crate::referrers::{Answer, HOP_BY_HOP, forward, write_answer};
use crate::serve::{accept_loop, read_request};

/// What the proxy does to the matching requests.
#[derive(Debug, Clone)]
pub enum Misbehavior {
    /// The first `n` matching requests get `503 Service Unavailable`.
    ServerErrors(usize),
    /// The first matching `GET` gets its head and `n` bytes of its body, then a TCP reset.
    ResetAfter(usize),
    /// Matching `GET`s get their head, then their body one byte per `interval`.
    Drip(Duration),
    /// Matching `GET`s announce a `Content-Length` off by this many bytes from their body (which
    /// is sent whole; the connection then closes).
    LyingLength(i64),
    /// Matching `GET`s are answered `307 Temporary Redirect` to this base URL plus their path.
    RedirectTo(String),
    /// Matching `GET`s are answered 200 with this content type and body.
    Replace {
        content_type: String,
        body: Arc<Vec<u8>>,
    },
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub range: Option<String>,
}

struct Shared {
    upstream: String,
    own: String,
    target: String,
    misbehavior: Misbehavior,
    /// Matching requests misbehaved to so far.
    hits: AtomicUsize,
    log: Mutex<Vec<SeenRequest>>,
}

/// See the module documentation. Stops on drop.
pub struct HostileProxy {
    addr: String,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl HostileProxy {
    /// A proxy on 127.0.0.1 in front of `upstream` (plain HTTP) that misbehaves on requests
    /// whose path contains `target`.
    pub fn start(upstream: &Registry, target: &str, misbehavior: Misbehavior) -> HostileProxy {
        Self::start_on("127.0.0.1", &upstream.addr(), target, misbehavior)
    }

    /// The same in front of any plain-HTTP server `upstream` (`HOST:PORT`), listening on
    /// `host` (another loopback address plays another host).
    pub fn start_on(host: &str, upstream: &str, target: &str, misbehavior: Misbehavior) -> Self {
        let listener = TcpListener::bind((host, 0)).expect("bind the hostile proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let addr = format!("{host}:{port}");
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            own: addr.clone(),
            target: target.to_owned(),
            misbehavior,
            hits: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = shared.clone();
            accept_loop(listener, stop.clone(), move |conn| serve(conn, &shared))
        };
        HostileProxy {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// `HOST:PORT/<repo_and_ref>`.
    pub fn image_ref(&self, repo_and_ref: &str) -> String {
        format!("{}/{repo_and_ref}", self.addr)
    }

    /// How many requests were misbehaved to.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for HostileProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(conn: TcpStream, shared: &Shared) {
    let timeout = Some(Duration::from_secs(30));
    let _ = conn.set_read_timeout(timeout);
    let _ = conn.set_write_timeout(timeout);
    let Some(req) = read_request(&conn) else {
        return;
    };
    shared
        .log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(SeenRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            authorization: req.header("authorization"),
            range: req.header("range"),
        });
    if !req.path.contains(&shared.target) {
        return write_answer(
            &conn,
            &req.method,
            &forward(&req, &shared.upstream, &shared.own),
        );
    }
    let hit = || shared.hits.fetch_add(1, Ordering::SeqCst);
    let get = req.method == "GET";
    match &shared.misbehavior {
        Misbehavior::ServerErrors(n) if hit() < *n => {
            let answer = Answer::error(503, "UNAVAILABLE", "service unavailable", "storm");
            write_answer(&conn, &req.method, &answer);
        }
        Misbehavior::ResetAfter(n) if get && shared.hits.load(Ordering::SeqCst) == 0 => {
            let answer = forward(&req, &shared.upstream, &shared.own);
            if answer.status != 200 && answer.status != 206 {
                return write_answer(&conn, &req.method, &answer);
            }
            hit();
            let head = head(&answer, answer.body.len());
            let cut = (*n).min(answer.body.len());
            let mut w = &conn;
            let _ = w
                .write_all(&head)
                .and_then(|()| w.write_all(&answer.body[..cut]));
            let _ = w.flush();
            reset(conn);
        }
        Misbehavior::Drip(interval) if get => {
            hit();
            let answer = forward(&req, &shared.upstream, &shared.own);
            let mut w = &conn;
            if w.write_all(&head(&answer, answer.body.len())).is_err() {
                return;
            }
            for byte in &answer.body {
                if w.write_all(std::slice::from_ref(byte))
                    .and_then(|()| w.flush())
                    .is_err()
                {
                    return;
                }
                std::thread::sleep(*interval);
            }
        }
        Misbehavior::LyingLength(delta) if get => {
            hit();
            let answer = forward(&req, &shared.upstream, &shared.own);
            let announced = (answer.body.len() as i64 + delta).max(0) as usize;
            let mut w = &conn;
            let _ = w
                .write_all(&head(&answer, announced))
                .and_then(|()| w.write_all(&answer.body));
            let _ = w.flush();
        }
        Misbehavior::RedirectTo(base) if get => {
            hit();
            let answer = Answer {
                status: 307,
                headers: vec![("Location".to_owned(), format!("{base}{}", req.path))],
                body: Vec::new(),
                content_length: None,
            };
            write_answer(&conn, &req.method, &answer);
        }
        Misbehavior::Replace { content_type, body } if get => {
            hit();
            let mut w = &conn;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nDocker-Content-Digest: {}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                crate::sha256_digest(body),
                body.len()
            );
            let _ = w
                .write_all(head.as_bytes())
                .and_then(|()| w.write_all(body));
            let _ = w.flush();
        }
        _ => write_answer(
            &conn,
            &req.method,
            &forward(&req, &shared.upstream, &shared.own),
        ),
    }
}

/// The status line and headers of `answer`, announcing `content_length`.
fn head(answer: &Answer, content_length: usize) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {} Answer\r\n", answer.status);
    for (name, value) in &answer.headers {
        if !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!(
        "Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    ));
    head.into_bytes()
}

/// Closes with a TCP reset (RST) rather than an orderly FIN: a linger time of zero.
fn reset(conn: TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(&conn, Some(Duration::ZERO));
    drop(conn);
}
