//! A tiny HTTP/1.1 client for netboot: plain TCP (no TLS), `GET` only, one connection per
//! request (`Connection: close`), bodies with `Content-Length`, chunked or up to EOF,
//! redirects to other `http://` locations. Hosts are IPv4/IPv6 literals: there is no name
//! resolution in the initramfs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// An `http://` URL with a literal address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub addr: SocketAddr,
    /// The `Host:` header value (as written in the URL).
    pub host: String,
    /// Absolute path (with query, if any), starting with `/`.
    pub path: String,
}

impl Url {
    /// `http://IP[:PORT]/PATH` (IPv6 in brackets). Names are refused: the initramfs has no
    /// resolver.
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s}: unclosed [ in the host"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let ip: IpAddr = host.parse().map_err(|_| {
            format!("{s}: the host must be an IP address (no name resolution at boot)")
        })?;
        let port: u16 = match port {
            None => 80,
            Some(p) => p
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{s}: bad port {p:?}"))?,
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("{s}: spaces or control characters in the path"));
        }
        Ok(Url {
            addr: SocketAddr::new(ip, port),
            host: authority.to_string(),
            path: path.to_string(),
        })
    }

    /// The same server, another absolute path.
    pub fn with_path(&self, path: &str) -> Url {
        Url {
            path: path.to_string(),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.host, self.path)
    }
}

/// Why a GET did not deliver a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// A final status other than 200 (404, 500, ...).
    Status(u16),
    /// Connection, protocol or sink failure.
    Io(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Status(s) => write!(f, "HTTP {s}"),
            HttpError::Io(e) => f.write_str(e),
        }
    }
}

const MAX_REDIRECTS: usize = 5;
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// GET `url` and stream the body of the 200 response into `sink`; returns the body size.
/// `timeout` bounds the connect and each read or write.
pub fn get(url: &Url, sink: &mut dyn Write, timeout: Duration) -> Result<u64, HttpError> {
    let mut url = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        match get_once(&url, sink, timeout)? {
            Outcome::Body(n) => return Ok(n),
            Outcome::Redirect(location) => {
                url = if location.starts_with('/') {
                    url.with_path(&location)
                } else {
                    Url::parse(&location)
                        .map_err(|e| HttpError::Io(format!("redirect from {url}: {e}")))?
                };
            }
        }
    }
    Err(HttpError::Io(format!(
        "{url}: more than {MAX_REDIRECTS} redirects"
    )))
}

/// How a response ended: a body of this many bytes, or a redirect to a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Body(u64),
    Redirect(String),
}

fn io(url: &Url, what: &str, e: std::io::Error) -> HttpError {
    HttpError::Io(format!("{url}: {what}: {e}"))
}

fn get_once(url: &Url, sink: &mut dyn Write, timeout: Duration) -> Result<Outcome, HttpError> {
    let stream =
        TcpStream::connect_timeout(&url.addr, timeout).map_err(|e| io(url, "connect", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| io(url, "socket", e))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: clb-initrd/{}\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n",
        url.path,
        url.host,
        env!("CARGO_PKG_VERSION")
    );
    (&stream)
        .write_all(request.as_bytes())
        .map_err(|e| io(url, "send", e))?;
    let mut reader = BufReader::with_capacity(64 * 1024, &stream);
    read_response(&mut reader, sink, url)
}

/// Reads one response from `reader`: the body of a 200 into `sink`, or where a redirect
/// points. `url` only names the request in errors. Apart from the socket this is all a
/// server's bytes reach, so it is what `fuzz/` feeds with arbitrary input.
pub fn read_response(
    reader: &mut impl BufRead,
    sink: &mut dyn Write,
    url: &Url,
) -> Result<Outcome, HttpError> {
    let reader = &mut *reader;
    let head = read_head(reader).map_err(|e| io(url, "response", e))?;
    if (300..400).contains(&head.status)
        && head.status != 304
        && let Some(loc) = head.location
    {
        return Ok(Outcome::Redirect(loc));
    }
    if head.status != 200 {
        return Err(HttpError::Status(head.status));
    }
    let n = if head.chunked {
        copy_chunked(reader, sink).map_err(|e| io(url, "body", e))?
    } else if let Some(len) = head.content_length {
        let n = std::io::copy(&mut reader.take(len), sink).map_err(|e| io(url, "body", e))?;
        if n != len {
            return Err(HttpError::Io(format!(
                "{url}: connection closed after {n} of {len} bytes"
            )));
        }
        n
    } else {
        std::io::copy(reader, sink).map_err(|e| io(url, "body", e))?
    };
    Ok(Outcome::Body(n))
}

struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    location: Option<String>,
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

fn read_line(r: &mut impl BufRead, budget: &mut usize) -> std::io::Result<String> {
    let mut line = Vec::new();
    let n = r.take(*budget as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if n > *budget {
        return Err(bad("header too long".into()));
    }
    *budget -= n;
    let s = String::from_utf8_lossy(&line);
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// Status line and headers; 1xx interim responses are skipped.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Head> {
    let mut budget = MAX_HEADER_BYTES;
    loop {
        let status_line = read_line(r, &mut budget)?;
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| bad(format!("not an HTTP/1.x status line: {status_line:?}")))?;
        let mut head = Head {
            status,
            content_length: None,
            chunked: false,
            location: None,
        };
        loop {
            let line = read_line(r, &mut budget)?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad(format!("bad header line {line:?}")));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    let n = value
                        .parse()
                        .map_err(|_| bad(format!("bad Content-Length {value:?}")))?;
                    if head.content_length.is_some_and(|old| old != n) {
                        return Err(bad("conflicting Content-Length headers".into()));
                    }
                    head.content_length = Some(n);
                }
                "transfer-encoding" => {
                    head.chunked = value
                        .rsplit(',')
                        .next()
                        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
                    if !head.chunked {
                        return Err(bad(format!("unsupported Transfer-Encoding {value:?}")));
                    }
                }
                "location" => head.location = Some(value.to_string()),
                _ => {}
            }
        }
        if !(100..200).contains(&status) {
            return Ok(head);
        }
    }
}

fn copy_chunked(r: &mut impl BufRead, sink: &mut dyn Write) -> std::io::Result<u64> {
    let mut total = 0u64;
    loop {
        let mut budget = 1024;
        let line = read_line(r, &mut budget)?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(hex, 16)
            .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers up to the empty line.
            let mut budget = MAX_HEADER_BYTES;
            while !read_line(r, &mut budget)?.is_empty() {}
            return Ok(total);
        }
        let n = std::io::copy(&mut r.take(size), sink)?;
        if n != size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("connection closed inside a chunk ({n} of {size} bytes)"),
            ));
        }
        total += n;
        let mut budget = 2;
        if !read_line(r, &mut budget)?.is_empty() {
            return Err(bad("missing CRLF after a chunk".into()));
        }
    }
}

#[cfg(test)]
pub mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server: answers each connection with the next canned response and returns
    /// the requests it saw.
    pub fn serve(responses: Vec<Vec<u8>>) -> (Url, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for resp in responses {
                let (mut s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut req = String::new();
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    req.push_str(&line);
                }
                seen.push(req);
                s.write_all(&resp).unwrap();
            }
            seen
        });
        (
            Url::parse(&format!("http://127.0.0.1:{port}/x/y")).unwrap(),
            h,
        )
    }

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://10.0.2.100/net/").unwrap();
        assert_eq!(u.addr, "10.0.2.100:80".parse().unwrap());
        assert_eq!(u.path, "/net/");
        assert_eq!(u.host, "10.0.2.100");
        let u = Url::parse("http://[::1]:8080").unwrap();
        assert_eq!(u.addr, "[::1]:8080".parse().unwrap());
        assert_eq!(u.path, "/");
        assert_eq!(u.to_string(), "http://[::1]:8080/");
        for bad in [
            "https://1.2.3.4/",
            "http://example.org/x",
            "http://1.2.3.4:0/",
            "http://1.2.3.4:x/",
            "http://1.2.3.4/a b",
            "http://[::1/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_length_chunked_and_eof_bodies() {
        let (url, h) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: y\r\n\r\n"
                .to_vec(),
            b"HTTP/1.0 200 OK\r\n\r\nto the end".to_vec(),
        ]);
        let mut out = Vec::new();
        assert_eq!(get(&url, &mut out, T).unwrap(), 5);
        assert_eq!(out, b"hello");
        out.clear();
        assert_eq!(get(&url, &mut out, T).unwrap(), 19);
        assert_eq!(out, b"abc0123456789abcdef");
        out.clear();
        get(&url, &mut out, T).unwrap();
        assert_eq!(out, b"to the end");
        let reqs = h.join().unwrap();
        assert!(reqs[0].starts_with("GET /x/y HTTP/1.1\r\n"), "{reqs:?}");
        assert!(reqs[0].contains("Host: 127.0.0.1:"), "{reqs:?}");
        assert!(reqs[0].contains("Connection: close"), "{reqs:?}");
    }

    #[test]
    fn statuses_truncation_and_redirects() {
        let (url, h) = serve(vec![
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec(),
            b"HTTP/1.1 302 Found\r\nLocation: /moved\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            b"garbage\r\n\r\n".to_vec(),
        ]);
        let mut out = Vec::new();
        assert_eq!(get(&url, &mut out, T), Err(HttpError::Status(404)));
        let e = get(&url, &mut out, T).unwrap_err();
        assert!(e.to_string().contains("after 5 of 10 bytes"), "{e}");
        out.clear();
        assert_eq!(get(&url, &mut out, T).unwrap(), 2);
        assert_eq!(out, b"ok");
        let e = get(&url, &mut out, T).unwrap_err();
        assert!(e.to_string().contains("not an HTTP/1.x status line"), "{e}");
        let reqs = h.join().unwrap();
        assert!(reqs[3].starts_with("GET /moved "), "{reqs:?}");
        // Nobody listening: a connect error, not a hang.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = Url::parse(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
        drop(l);
        let e = get(&dead, &mut out, T).unwrap_err();
        assert!(e.to_string().contains("connect"), "{e}");
    }
}
