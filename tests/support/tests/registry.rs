//! The registry fixture against a real `docker-registry`, with independent clients.

// Test code: panicking with a message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use clb_testsupport::{Registry, RegistryOptions, http_request, require_tool, sha256_digest};

#[test]
fn plain_registry_push_and_fetch_is_seen_in_access_log() {
    let reg = Registry::start_plain();
    assert!(reg.addr().starts_with("127.0.0.1:"), "addr {}", reg.addr());
    let r = http_request(&reg.addr(), "GET", "/v2/", &[], &[]).expect("GET /v2/");
    assert_eq!(r.status, 200, "GET /v2/: {}", r.text());

    // Monolithic upload by hand with the raw client: POST, then PUT ?digest=.
    let data = b"clb test blob\n".repeat(100);
    let digest = sha256_digest(&data);
    let r = http_request(&reg.addr(), "POST", "/v2/t/x/blobs/uploads/", &[], &[]).expect("POST");
    assert_eq!(r.status, 202, "POST upload: {}", r.text());
    let loc = r.header("location").expect("Location header").to_string();
    let loc = loc.strip_prefix(&reg.url()).unwrap_or(&loc).to_string();
    let r = http_request(
        &reg.addr(),
        "PUT",
        &format!("{loc}&digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        &data,
    )
    .expect("PUT");
    assert_eq!(r.status, 201, "PUT blob: {}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert!(
        reg.blob_fetches().is_empty(),
        "uploads are not fetches: {:?}",
        reg.blob_fetches()
    );

    let marker = reg.clear_log_marker();
    let r = http_request(
        &reg.addr(),
        "GET",
        &format!("/v2/t/x/blobs/{digest}"),
        &[],
        &[],
    )
    .expect("GET blob");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data, "blob round trip");
    let fetches = reg.fetches_since(&marker);
    assert_eq!(fetches.len(), 1, "exactly one fetch: {fetches:?}");
    let f = &fetches[0];
    assert_eq!(
        (
            f.repo.as_str(),
            f.digest.as_str(),
            f.method.as_str(),
            f.status,
            f.bytes,
            f.range
        ),
        (
            "t/x",
            digest.as_str(),
            "GET",
            200,
            Some(data.len() as u64),
            false
        )
    );

    // A ranged GET and a HEAD: the first is a (partial) fetch, the second is not.
    let marker = reg.clear_log_marker();
    let r = http_request(
        &reg.addr(),
        "GET",
        &format!("/v2/t/x/blobs/{digest}"),
        &[("Range", "bytes=10-19")],
        &[],
    )
    .expect("ranged GET");
    assert_eq!((r.status, r.body.as_slice()), (206, &data[10..20]));
    let r = http_request(
        &reg.addr(),
        "HEAD",
        &format!("/v2/t/x/blobs/{digest}"),
        &[],
        &[],
    )
    .expect("HEAD");
    assert_eq!(r.status, 200);
    let fetches = reg.fetches_since(&marker);
    assert_eq!(fetches.len(), 1, "{fetches:?}");
    assert_eq!(
        (fetches[0].status, fetches[0].bytes, fetches[0].range),
        (206, Some(10), true)
    );
    let reqs = reg.requests_since(&marker);
    assert_eq!(
        reqs.iter().map(|e| e.method.as_str()).collect::<Vec<_>>(),
        ["GET", "HEAD"],
        "sync probes are hidden: {reqs:?}"
    );

    // Missing blob: logged as a fetch with status 404.
    let missing = sha256_digest(b"not there");
    let marker = reg.clear_log_marker();
    let r = http_request(
        &reg.addr(),
        "GET",
        &format!("/v2/t/x/blobs/{missing}"),
        &[],
        &[],
    )
    .expect("GET missing");
    assert_eq!(r.status, 404);
    let fetches = reg.fetches_since(&marker);
    assert_eq!(fetches.len(), 1, "{fetches:?}");
    assert_eq!(
        (fetches[0].digest.as_str(), fetches[0].status),
        (missing.as_str(), 404)
    );
    assert_eq!(
        reg.blob_fetches().len(),
        3,
        "all fetches: {:?}",
        reg.blob_fetches()
    );
    assert!(reg.log_contents().contains("response completed"));
}

#[test]
fn stop_and_restart_keep_storage_and_port() {
    let mut reg = Registry::start_plain();
    let digest = reg
        .push_blob("t/r", b"survives restarts")
        .expect("push blob");
    let addr = reg.addr();
    reg.stop();
    assert!(!reg.is_running());
    assert!(
        http_request(&addr, "GET", "/v2/", &[], &[]).is_err(),
        "stopped registry must refuse connections"
    );
    reg.restart().expect("restart");
    assert!(reg.is_running());
    assert_eq!(reg.addr(), addr);
    let r = reg
        .request("GET", &format!("/v2/t/r/blobs/{digest}"), &[], &[])
        .expect("GET after restart");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"survives restarts".as_slice())
    );
    assert_eq!(reg.blob_fetches().len(), 1, "log continues across restarts");
}

#[test]
fn tls_htpasswd_registry_with_curl() {
    require_tool("curl");
    let reg = Registry::start(RegistryOptions::tls().with_auth("user", "pass"))
        .expect("start TLS+htpasswd registry");
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let ca = reg.ca_cert_path().expect("CA cert with TLS");
    let curl = |extra: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(ca)
            .args(extra)
            .arg(format!("{}/v2/", reg.url()))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(&[]), "401", "no credentials");
    assert_eq!(curl(&["-u", "user:wrong"]), "401", "wrong password");
    assert_eq!(curl(&["-u", "user:pass"]), "200", "right credentials");

    // Without the CA, the certificate must not verify (it is really TLS, really self-signed).
    let st = Command::new("curl")
        .args(["-s", "-o", "/dev/null", &format!("{}/v2/", reg.url())])
        .status()
        .expect("run curl");
    assert_eq!(
        st.code(),
        Some(60),
        "curl without CA: peer certificate cannot be verified"
    );

    // The fixture's own client (curl-based under TLS) pushes and fetches with auth.
    let digest = reg
        .push_blob("t/tls", b"over tls")
        .expect("push blob over TLS");
    let marker = reg.clear_log_marker();
    let r = reg
        .request("GET", &format!("/v2/t/tls/blobs/{digest}"), &[], &[])
        .expect("GET blob over TLS");
    assert_eq!((r.status, r.body.as_slice()), (200, b"over tls".as_slice()));
    let f = reg.fetches_since(&marker);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].digest.as_str(), f[0].status), (digest.as_str(), 200));
}

#[test]
fn plain_htpasswd_registry_requires_credentials() {
    let reg = Registry::start(RegistryOptions::plain().with_auth("u", "p")).expect("start");
    let r = http_request(&reg.addr(), "GET", "/v2/", &[], &[]).expect("GET /v2/");
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic realm=")),
        "challenge: {:?}",
        r.headers
    );
    let r = reg
        .request("GET", "/v2/", &[], &[])
        .expect("GET /v2/ with auth");
    assert_eq!(r.status, 200);
}
