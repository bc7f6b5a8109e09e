//! Fetching `http://` URLs with a tiny std-only HTTP/1.1 client, and `https://` through `curl`.
//!
//! No TLS client is linked into clb for this: cloud-config URLs are fetched rarely, and the
//! system `curl` already knows the host's CA store and proxies. Without `curl`, `https://` is a
//! clear error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clb_command::CommandError;

const MAX_REDIRECTS: usize = 5;

/// Why a fetch failed. The URL is the one asked for (before redirects).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL or the server's answer is not usable: an error status, a bad header, a body cut
    /// short, too many redirects.
    #[error("fetch {url}: {problem}")]
    Http { url: String, problem: String },
    /// The network or a local file failed; `action` says what was being done.
    #[error("fetch {url}: {action}")]
    Io {
        url: String,
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// `https://` goes through curl (no TLS client is built in), which is missing or failed.
    #[error("fetch {url} with curl")]
    Curl {
        url: String,
        #[source]
        source: CommandError,
    },
}

/// Fetch `url` into `out` (the whole body). `timeout` bounds connecting and each read.
pub fn fetch(url: &str, timeout: Duration, out: &mut dyn Write) -> Result<(), FetchError> {
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        if current.starts_with("https://") {
            return fetch_curl(url, &current, timeout, out);
        }
        match get_http(url, &current, timeout, out)? {
            None => return Ok(()),
            Some(location) => current = location,
        }
    }
    Err(http_err(url, "too many redirects"))
}

/// Fetch into memory, refusing bodies over `limit` bytes.
pub fn fetch_bytes(url: &str, timeout: Duration, limit: usize) -> Result<Vec<u8>, FetchError> {
    let mut buf = LimitedVec {
        data: Vec::new(),
        limit,
    };
    fetch(url, timeout, &mut buf)?;
    Ok(buf.data)
}

/// A sink that refuses to grow past `limit` bytes.
pub(crate) struct LimitedVec {
    pub data: Vec<u8>,
    pub limit: usize,
}

/// The write error of a [`LimitedVec`] that would grow past its limit: the fetch reports it as
/// an unusable answer, not as a failed write.
#[derive(Debug, thiserror::Error)]
#[error("body larger than {0} bytes")]
struct TooLarge(usize);

impl Write for LimitedVec {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.data.len() + b.len() > self.limit {
            return Err(std::io::Error::other(TooLarge(self.limit)));
        }
        self.data.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A failed write of the body to the caller's sink: a full disk, or the size limit.
fn store_err(url: &str) -> impl FnOnce(std::io::Error) -> FetchError {
    move |e| match e.get_ref().and_then(|i| i.downcast_ref::<TooLarge>()) {
        Some(too_large) => http_err(url, too_large.to_string()),
        None => io_err(url, "store the body")(e),
    }
}

/// Copies the body from `from` to `out`, telling a failed read of the response from a failed
/// write to the sink; Ok(bytes copied).
fn copy_body(url: &str, from: &mut dyn Read, out: &mut dyn Write) -> Result<u64, FetchError> {
    let mut buf = [0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(url, "read the response")(e)),
        };
        out.write_all(&buf[..n]).map_err(store_err(url))?;
        copied += n as u64;
    }
}

pub(crate) fn http_err(url: &str, problem: impl Into<String>) -> FetchError {
    FetchError::Http {
        url: url.to_string(),
        problem: problem.into(),
    }
}

fn io_err(url: &str, action: impl Into<String>) -> impl FnOnce(std::io::Error) -> FetchError {
    let (url, action) = (url.to_string(), action.into());
    move |source| FetchError::Io {
        url,
        action,
        source,
    }
}

/// `current` through curl (which follows the redirects itself); errors name `url`, the one
/// asked for.
fn fetch_curl(
    url: &str,
    current: &str,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), FetchError> {
    let output = clb_command::run_output(
        Command::new("curl")
            .args(["-fsSL", "--proto", "=https,http", "--max-time"])
            .arg(timeout.as_secs().max(1).to_string())
            .arg("--")
            .arg(current),
    )
    .map_err(|source| FetchError::Curl {
        url: url.to_string(),
        source,
    })?;
    out.write_all(&output.stdout).map_err(store_err(url))
}

/// One GET of `current`. Returns the redirect target on 3xx, None when the body was written.
/// Errors name `url`, the one asked for.
fn get_http(
    url: &str,
    current: &str,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<Option<String>, FetchError> {
    let get = Request {
        method: "GET",
        headers: &[],
        connect_timeout: timeout,
        read_timeout: timeout,
    };
    let head = exchange(url, current, &get, out)?;
    if (300..400).contains(&head.status) {
        let loc = head
            .header("location")
            .ok_or_else(|| http_err(url, format!("HTTP {} without Location", head.status)))?;
        let next = if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else if loc.starts_with('/') {
            format!("http://{}{loc}", head.authority)
        } else {
            return Err(http_err(url, format!("unsupported redirect to {loc:?}")));
        };
        return Ok(Some(next));
    }
    if head.status != 200 {
        return Err(http_err(url, format!("HTTP {}", head.status)));
    }
    Ok(None)
}

/// How one plain-HTTP request is made.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// Sent after the fixed ones (Host, User-Agent, Accept, Connection: close).
    pub headers: &'a [(&'a str, &'a str)],
    pub connect_timeout: Duration,
    /// Bounds each read and write, not the whole exchange.
    pub read_timeout: Duration,
}

/// The answer to a [`Request`], without its body.
pub(crate) struct Head {
    pub status: u16,
    /// `host[:port]` the request went to, for relative redirects.
    pub authority: String,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One plain-HTTP request to `current` (no redirects followed). The body is written to `out`
/// only when the status is 200; other bodies are not read. Errors name `url`.
pub(crate) fn exchange(
    url: &str,
    current: &str,
    request: &Request,
    out: &mut dyn Write,
) -> Result<Head, FetchError> {
    let rest = current
        .strip_prefix("http://")
        .ok_or_else(|| http_err(url, "unsupported URL scheme (http:// or https:// only)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(http_err(
            url,
            "bad host (credentials in URLs are not supported)",
        ));
    }
    // `host:port`, `[v6]:port`, or no port (`[v6]` ends in `]`, not in a port number).
    let host_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = host_port
        .to_socket_addrs()
        .map_err(io_err(url, format!("resolve {host_port}")))?
        .next()
        .ok_or_else(|| http_err(url, format!("{host_port} resolves to no address")))?;
    let mut stream = TcpStream::connect_timeout(&addr, request.connect_timeout)
        .map_err(io_err(url, format!("connect to {addr}")))?;
    let io = |e: std::io::Error| io_err(url, "read the response")(e);
    stream
        .set_read_timeout(Some(request.read_timeout))
        .and_then(|()| stream.set_write_timeout(Some(request.read_timeout)))
        .map_err(io_err(url, "set the timeouts"))?;
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: clb-cloud-config\r\nAccept: */*\r\nConnection: close\r\n",
        request.method
    );
    for (name, value) in request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if request.method != "GET" {
        // A PUT or POST without a body still says so: some servers wait for one otherwise.
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    // One write: a server may answer and close after the first packet it reads.
    stream
        .write_all(head.as_bytes())
        .map_err(io_err(url, "send the request"))?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(io)?;
    let status: u16 = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| http_err(url, format!("bad status line {:?}", status_line.trim())))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Err(http_err(url, "connection closed in the headers"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let head = Head {
        status,
        authority: authority.to_string(),
        headers,
    };
    if status != 200 {
        return Ok(head);
    }
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length: Option<u64> = head.header("content-length").and_then(|v| v.parse().ok());
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).map_err(io)?;
            let size_hex = size_line.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size_hex, 16)
                .map_err(|_| http_err(url, format!("bad chunk size {size_hex:?}")))?;
            if size == 0 {
                break;
            }
            let copied = copy_body(url, &mut (&mut reader).take(size), out)?;
            if copied != size {
                return Err(http_err(url, "connection closed in a chunk"));
            }
            let mut crlf = String::new();
            reader.read_line(&mut crlf).map_err(io)?;
        }
    } else if let Some(len) = length {
        let copied = copy_body(url, &mut reader.take(len), out)?;
        if copied != len {
            return Err(http_err(
                url,
                format!("body truncated: {copied} of {len} bytes"),
            ));
        }
    } else {
        copy_body(url, &mut reader, out)?;
    }
    Ok(head)
}

/// Fetch `url` to `dest` through a temporary file in the same directory, renamed into place
/// only when complete: a failed download never leaves a truncated file behind.
pub fn fetch_to_file(url: &str, timeout: Duration, dest: &Path) -> Result<(), FetchError> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(
        ".{}.clb-tmp",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)
            .map_err(io_err(url, format!("create {}", tmp.display())))?;
        fetch(url, timeout, &mut f)?;
        f.sync_all()
            .map_err(io_err(url, format!("flush {}", tmp.display())))?;
        std::fs::rename(&tmp, dest).map_err(io_err(url, format!("rename it to {}", dest.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Serves one answer with `body` (Content-Length) on a local port; the URL.
    fn serve(body: &'static [u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        });
        url
    }

    struct DiskFull;

    impl Write for DiskFull {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_body_over_the_limit_is_an_unusable_answer() {
        let url = serve(b"0123456789");
        let err = fetch_bytes(&url, Duration::from_secs(5), 4).unwrap_err();
        assert!(
            matches!(&err, FetchError::Http { problem, .. } if problem == "body larger than 4 bytes"),
            "{err:?}"
        );
        let url = serve(b"0123456789");
        assert_eq!(
            fetch_bytes(&url, Duration::from_secs(5), 10).unwrap(),
            b"0123456789"
        );
    }

    #[test]
    fn a_failed_write_is_not_a_failed_read() {
        let url = serve(b"0123456789");
        let err = fetch(&url, Duration::from_secs(5), &mut DiskFull).unwrap_err();
        match &err {
            FetchError::Io { action, source, .. } => {
                assert_eq!(action, "store the body");
                assert_eq!(source.raw_os_error(), Some(28));
            }
            other => panic!("{other:?}"),
        }
    }
}
