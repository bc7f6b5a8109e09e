//! The referrers-API proxy in front of a real `docker-registry`, driven with the raw HTTP client
//! and with the independent cosign signer (tests/cosign_signer.py).

// Test code: panicking with a message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::process::Command;

use clb_testsupport::{
    HttpResponse, PYTHON, ReferrersProxy, Registry, http_request, media_types, require_tool,
    run_cmd, sha256_digest, tar_gz_dir, workspace_root, write_oci_layout,
};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const SIG_TYPE: &str = "application/vnd.example.signature.v1+json";
const SBOM_CONFIG: &str = "application/vnd.example.sbom.config.v1+json";

fn request(addr: &str, method: &str, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(addr, method, target, headers, &[])
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// Monolithic blob upload through `addr`; returns the digest and the upload Location.
fn push_blob(addr: &str, repo: &str, data: &[u8]) -> (String, String) {
    let digest = sha256_digest(data);
    let r = http_request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        &[],
    )
    .expect("POST upload");
    assert_eq!(r.status, 202, "POST upload: {}", r.text());
    let location = r.header("location").expect("Location").to_owned();
    let target = location
        .strip_prefix(&format!("http://{addr}"))
        .unwrap_or(&location)
        .to_owned();
    let sep = if target.contains('?') { '&' } else { '?' };
    let r = http_request(
        addr,
        "PUT",
        &format!("{target}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    )
    .expect("PUT blob");
    assert_eq!(r.status, 201, "PUT blob: {}", r.text());
    (digest, location)
}

fn put_manifest(
    addr: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> HttpResponse {
    let r = http_request(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        body,
    )
    .expect("PUT manifest");
    assert_eq!(r.status, 201, "PUT manifest {reference}: {}", r.text());
    r
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialise JSON")
}

/// Pushes a one-layer OCI image as `repo:v1` through `addr`; returns its manifest.
fn push_image(addr: &str, repo: &str) -> Vec<u8> {
    let (config, _) = push_blob(addr, repo, br#"{"architecture":"amd64","os":"linux"}"#);
    let (layer, _) = push_blob(addr, repo, b"layer bytes");
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": 37},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer, "size": 11}],
    }));
    put_manifest(addr, repo, "v1", OCI_MANIFEST, &manifest);
    manifest
}

fn descriptor(media_type: &str, body: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256_digest(body), "size": body.len()})
}

fn index_manifests(r: &HttpResponse) -> Vec<Value> {
    assert_eq!(r.status, 200, "referrers: {}", r.text());
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    let index: Value = serde_json::from_slice(&r.body).expect("referrers answer is JSON");
    assert_eq!(index["schemaVersion"], 2, "{index}");
    assert_eq!(index["mediaType"], OCI_INDEX, "{index}");
    index["manifests"]
        .as_array()
        .expect("manifests list")
        .clone()
}

#[test]
fn referrers_api_lists_filters_and_hides_the_fallback_tag() {
    let reg = Registry::start_plain();
    let proxy = ReferrersProxy::start(&reg);
    assert!(proxy.addr().starts_with("127.0.0.1:"), "{}", proxy.addr());
    assert_eq!(proxy.addr(), format!("127.0.0.1:{}", proxy.port()));
    assert_ne!(proxy.port(), reg.port());
    let addr = proxy.addr();

    // Uploads go through the proxy: the Location the registry gives points back at it.
    let (_, location) = push_blob(&addr, "t/img", b"probe");
    assert!(
        location.starts_with(&format!("http://{addr}/")) || location.starts_with('/'),
        "Location not rewritten to the proxy: {location}"
    );
    let image = push_image(&addr, "t/img");
    let subject = descriptor(OCI_MANIFEST, &image);
    let subject_digest = sha256_digest(&image);

    // Plain requests are relayed: GET and HEAD of the image (HEAD keeps its Content-Length).
    let r = request(
        &addr,
        "GET",
        &format!("/v2/t/img/manifests/{subject_digest}"),
        &[("Accept", OCI_MANIFEST)],
    );
    assert_eq!((r.status, r.body.clone()), (200, image.clone()));
    let r = request(
        &addr,
        "HEAD",
        "/v2/t/img/manifests/v1",
        &[("Accept", OCI_MANIFEST)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(image.len().to_string().as_str())
    );
    assert_eq!(
        r.header("docker-content-digest"),
        Some(subject_digest.as_str())
    );

    // A manifest without a subject is not a referrer and gets no OCI-Subject.
    let r = put_manifest(&addr, "t/img", "v2", OCI_MANIFEST, &image);
    assert_eq!(r.header("oci-subject"), None);

    // Two referrers: one with artifactType, one whose type comes from its config.
    let (empty, _) = push_blob(&addr, "t/img", b"{}");
    let (sig_layer, _) = push_blob(&addr, "t/img", b"signature");
    let sig = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIG_TYPE,
        "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
        "layers": [{"mediaType": SIG_TYPE, "digest": sig_layer, "size": 9}],
        "subject": subject,
        "annotations": {"org.example.kind": "sig"},
    }));
    let sig_digest = sha256_digest(&sig);
    let r = put_manifest(&addr, "t/img", &sig_digest, OCI_MANIFEST, &sig);
    assert_eq!(
        r.header("oci-subject"),
        Some(subject_digest.as_str()),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("docker-content-digest"), Some(sig_digest.as_str()));

    let (sbom_config, _) = push_blob(&addr, "t/img", b"{\"sbom\":1}");
    let sbom = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": SBOM_CONFIG, "digest": sbom_config, "size": 10},
        "layers": [],
        "subject": subject,
    }));
    let r = put_manifest(&addr, "t/img", "sbom", OCI_MANIFEST, &sbom);
    assert_eq!(r.header("oci-subject"), Some(subject_digest.as_str()));
    // Pushed again: still listed once.
    put_manifest(&addr, "t/img", &sha256_digest(&sbom), OCI_MANIFEST, &sbom);

    let referrers_path = format!("/v2/t/img/referrers/{subject_digest}");
    let r = request(&addr, "GET", &referrers_path, &[("Accept", OCI_INDEX)]);
    assert_eq!(r.header("oci-filters-applied"), None);
    let mut want_sig = descriptor(OCI_MANIFEST, &sig);
    want_sig["artifactType"] = json!(SIG_TYPE);
    want_sig["annotations"] = json!({"org.example.kind": "sig"});
    let mut want_sbom = descriptor(OCI_MANIFEST, &sbom);
    want_sbom["artifactType"] = json!(SBOM_CONFIG);
    assert_eq!(
        index_manifests(&r),
        vec![want_sig.clone(), want_sbom.clone()]
    );

    // Filtered, with the type escaped or not.
    for query in [
        "artifactType=application%2Fvnd.example.signature.v1%2Bjson",
        "artifactType=application/vnd.example.signature.v1+json",
    ] {
        let r = request(&addr, "GET", &format!("{referrers_path}?{query}"), &[]);
        assert_eq!(
            r.header("oci-filters-applied"),
            Some("artifactType"),
            "{query}"
        );
        assert_eq!(index_manifests(&r), vec![want_sig.clone()], "{query}");
    }
    let r = request(
        &addr,
        "GET",
        &format!("{referrers_path}?artifactType=application/none"),
        &[],
    );
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert!(index_manifests(&r).is_empty());

    // Unknown subject: 200 and an empty list (never 404). Malformed digest: 400.
    let unknown = format!("sha256:{}", "0".repeat(64));
    let r = request(&addr, "GET", &format!("/v2/t/img/referrers/{unknown}"), &[]);
    assert!(index_manifests(&r).is_empty());
    let r = request(&addr, "GET", "/v2/t/img/referrers/sha256:nothex", &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("DIGEST_INVALID"), "{}", r.text());

    // The fallback tag is hidden even when upstream has one.
    let tag = subject_digest.replace(':', "-");
    let fallback = to_bytes(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [want_sig],
    }));
    reg.push_manifest("t/img", &tag, OCI_INDEX, &fallback)
        .expect("fallback tag upstream");
    let r = reg
        .request(
            "GET",
            &format!("/v2/t/img/manifests/{tag}"),
            &[("Accept", OCI_INDEX)],
            &[],
        )
        .expect("upstream GET");
    assert_eq!(r.status, 200, "the tag exists upstream: {}", r.text());
    for method in ["GET", "HEAD"] {
        let r = request(
            &addr,
            method,
            &format!("/v2/t/img/manifests/{tag}"),
            &[("Accept", OCI_INDEX)],
        );
        assert_eq!(r.status, 404, "{method} fallback tag");
        if method == "GET" {
            let body: Value = serde_json::from_slice(&r.body).expect("error body");
            assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{body}");
        }
    }

    // A descriptor added by the test, pointing at nothing, is listed after the pushed ones.
    let missing = json!({
        "mediaType": OCI_MANIFEST,
        "digest": format!("sha256:{}", "1".repeat(64)),
        "size": 123,
        "artifactType": SIG_TYPE,
    });
    proxy.add_referrer("t/img", &subject_digest, missing.clone());
    let r = request(
        &addr,
        "GET",
        &format!("{referrers_path}?artifactType={SIG_TYPE}"),
        &[],
    );
    let listed = index_manifests(&r);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[1], missing);
    assert_eq!(proxy.referrers("t/img", &subject_digest).len(), 3);
    // Other repositories have their own lists.
    let r = request(
        &addr,
        "GET",
        &format!("/v2/t/other/referrers/{subject_digest}"),
        &[],
    );
    assert!(index_manifests(&r).is_empty());

    let seen = proxy.requests();
    assert!(
        seen.contains(&format!("GET {referrers_path}?artifactType={SIG_TYPE}")),
        "{seen:#?}"
    );
    assert!(
        seen.contains(&format!("HEAD /v2/t/img/manifests/{tag}")),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("PUT /v2/t/img/manifests/sbom")),
        "{seen:#?}"
    );

    drop(proxy);
    assert!(
        TcpStream::connect(&addr).is_err(),
        "proxy still listening after drop"
    );
}

#[test]
fn cosign_signer_uses_the_referrers_api_through_the_proxy() {
    let reg = Registry::start_plain();
    let proxy = ReferrersProxy::start(&reg);
    let image = push_image(&proxy.addr(), "t/signed");
    let digest = sha256_digest(&image);
    let script = workspace_root().join("tests/cosign_signer.py");
    let keys = tempfile::tempdir().expect("tempdir");
    let prefix = keys.path().join("k");
    let prefix = prefix.to_str().expect("utf-8 path");
    run_cmd(Command::new(PYTHON).arg(&script).args(["keygen", prefix])).expect("keygen");
    let out = run_cmd(Command::new(PYTHON).arg(&script).args([
        "sign-bundle",
        "--key",
        &format!("{prefix}.key"),
        "--registry",
        &proxy.addr(),
        "--repo",
        "t/signed",
        "--digest",
        &digest,
    ]))
    .expect("sign-bundle through the proxy");
    let artifact = String::from_utf8(out).expect("utf-8").trim().to_owned();

    // The signer saw the API answer 200 and so left the fallback tag alone, as cosign does.
    let tag = digest.replace(':', "-");
    let seen = proxy.requests();
    assert!(
        seen.contains(&format!("GET /v2/t/signed/referrers/{digest}")),
        "{seen:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.contains(&format!("/manifests/{tag}"))),
        "{seen:#?}"
    );
    let r = request(
        &proxy.addr(),
        "GET",
        &format!(
            "/v2/t/signed/referrers/{digest}?artifactType=application/vnd.dev.sigstore.bundle.v0.3%2Bjson"
        ),
        &[],
    );
    let listed = index_manifests(&r);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["digest"], artifact.as_str());
    assert_eq!(
        listed[0]["annotations"]["dev.sigstore.bundle.content"],
        "dsse-envelope"
    );
}

#[test]
fn skopeo_copies_through_the_proxy() {
    // A Go client: chunked upload bodies, keep-alive, redirects left to the client.
    require_tool("skopeo");
    let reg = Registry::start_plain();
    let proxy = ReferrersProxy::start(&reg);
    let layout = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    // Incompressible enough that the layer spans several upload chunks.
    let mut x = 1u32;
    let noise: Vec<u8> = (0..300_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect();
    std::fs::write(src.path().join("noise"), noise).expect("write");
    let layer = tar_gz_dir(src.path());
    let mdigest = write_oci_layout(
        layout.path(),
        std::slice::from_ref(&layer),
        media_types::LAYER_TAR_GZIP,
    );
    run_cmd(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}", layout.path().display()),
        &format!("docker://{}", proxy.image_ref("t/sk:v1")),
    ]))
    .expect("skopeo copy through the proxy");
    let r = reg
        .request(
            "GET",
            &format!("/v2/t/sk/blobs/{}", sha256_digest(&layer)),
            &[],
            &[],
        )
        .expect("upstream GET blob");
    assert_eq!(
        (r.status, r.body.len()),
        (200, layer.len()),
        "layer reached upstream"
    );
    let out = run_cmd(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}", proxy.image_ref("t/sk:v1")),
    ]))
    .expect("skopeo inspect through the proxy");
    assert_eq!(sha256_digest(&out), mdigest);
    assert!(
        proxy
            .requests()
            .iter()
            .any(|l| l.starts_with("PATCH /v2/t/sk/blobs/uploads/")
                || l.starts_with("PUT /v2/t/sk/blobs/uploads/")),
        "{:#?}",
        proxy.requests()
    );
}
