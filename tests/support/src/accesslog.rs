//! Parsing of distribution 2.8's access log.
//!
//! For every request, distribution writes two lines to its output:
//!
//! ```text
//! time="…" level=info msg="response completed" … http.request.method=GET … http.request.uri="/v2/t/x/blobs/sha256:e997…" … http.response.status=200 http.response.written=10
//! 127.0.0.1 - - [23/Nov/2026:12:29:30 +0000] "GET /v2/t/x/blobs/sha256:e997… HTTP/1.1" 200 10 "" "curl/7.88.1"
//! ```
//!
//! The first is the application log (logrus; `msg="response completed with error"` at level
//! error for 4xx/5xx, and absent for requests rejected by auth); the second is the combined-format
//! access log (gorilla/handlers), written for every request once its handler returned. We parse
//! the access lines only: exactly one per request. Neither line records the `Range` header; a
//! ranged GET shows as status 206.

/// One request as recorded by the registry's combined-format access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Request target as sent (path and query).
    pub uri: String,
    /// Response status.
    pub status: u16,
    /// Response body bytes actually written (`None` if the log said `-`).
    pub bytes: Option<u64>,
}

/// A `GET /v2/<repo>/blobs/<digest>` seen by the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFetch {
    /// Repository name, e.g. `t/img`.
    pub repo: String,
    /// Blob digest from the URL, e.g. `sha256:…`.
    pub digest: String,
    /// Always `GET` (HEAD requests are not fetches; see [`crate::Registry::requests_since`]).
    pub method: String,
    /// Response status (200, 206, 401, 404, …).
    pub status: u16,
    /// Body bytes the registry wrote.
    pub bytes: Option<u64>,
    /// True when the response was partial content (206), i.e. the client sent a `Range`
    /// header. Distribution does not log the header itself.
    pub range: bool,
}

/// A position in the registry log; see [`crate::Registry::clear_log_marker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogMarker(pub(crate) u64);

/// Parses one combined-format access line; `None` for any other line.
pub(crate) fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    // `HOST IDENT USER [DATE] "METHOD URI PROTO" STATUS SIZE "REFERER" "UA"`
    if line.starts_with("time=") || line.starts_with('{') {
        return None;
    }
    let start = line.find("] \"")? + 3;
    let rest = &line[start..];
    let end = rest.find('"')?;
    let mut req = rest[..end].split(' ');
    let method = req.next()?.to_string();
    let uri = req.next()?.to_string();
    if !req.next()?.starts_with("HTTP/") {
        return None;
    }
    let mut tail = rest[end + 1..].split_whitespace();
    let status = tail.next()?.parse().ok()?;
    let size = tail.next()?;
    let bytes = if size == "-" {
        None
    } else {
        Some(size.parse().ok()?)
    };
    Some(AccessLogEntry {
        method,
        uri,
        status,
        bytes,
    })
}

/// Turns an access entry into a [`BlobFetch`] if it is a GET of `/v2/<repo>/blobs/<digest>`.
pub(crate) fn as_blob_fetch(e: &AccessLogEntry) -> Option<BlobFetch> {
    if e.method != "GET" {
        return None;
    }
    let path = e.uri.split('?').next()?;
    let rest = path.strip_prefix("/v2/")?;
    let idx = rest.rfind("/blobs/")?;
    let repo = &rest[..idx];
    let digest = &rest[idx + "/blobs/".len()..];
    if repo.is_empty() || digest.contains('/') || !digest.contains(':') {
        return None; // e.g. /blobs/uploads/…
    }
    Some(BlobFetch {
        repo: repo.to_string(),
        digest: digest.to_string(),
        method: e.method.clone(),
        status: e.status,
        bytes: e.bytes,
        range: e.status == 206,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e997afd18e5f6be004fc193aed2c90291e68ab2c7599a62538c935b7fca6ab0f";

    #[test]
    fn parses_real_distribution_lines() {
        let app = format!(
            r#"time="2026-11-23T12:29:30.123612559Z" level=info msg="response completed" go.version=go1.19.8 http.request.method=GET http.request.uri="/v2/t/x/blobs/{D}" http.response.status=200 http.response.written=10"#
        );
        assert_eq!(parse_access_line(&app), None);
        let line = format!(
            r#"127.0.0.1 - - [23/Nov/2026:12:29:30 +0000] "GET /v2/t/x/blobs/{D} HTTP/1.1" 206 4 "" "curl/7.88.1""#
        );
        let e = parse_access_line(&line).expect("access line parses");
        assert_eq!(e.method, "GET");
        assert_eq!(e.status, 206);
        assert_eq!(e.bytes, Some(4));
        let f = as_blob_fetch(&e).expect("is a blob fetch");
        assert_eq!(f.repo, "t/x");
        assert_eq!(f.digest, D);
        assert!(f.range);
    }

    #[test]
    fn uploads_heads_and_manifests_are_not_fetches() {
        for l in [
            r#"127.0.0.1 - - [x] "POST /v2/t/x/blobs/uploads/ HTTP/1.1" 202 0 "" "c""#,
            r#"127.0.0.1 - - [x] "GET /v2/t/x/blobs/uploads/abc?_state=1 HTTP/1.1" 204 0 "" "c""#,
            r#"127.0.0.1 - - [x] "HEAD /v2/t/x/blobs/sha256:00 HTTP/1.1" 200 0 "" "c""#,
            r#"127.0.0.1 - - [x] "GET /v2/t/x/manifests/v1 HTTP/1.1" 200 10 "" "c""#,
        ] {
            let e = parse_access_line(l).expect("access line parses");
            assert_eq!(as_blob_fetch(&e), None, "{l}");
        }
    }
}
