//! skopeo (an independent client) against the registry fixture and the OCI layout writer.

// Test code: panicking with a message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::process::Command;

use clb_testsupport::{
    Registry, RegistryOptions, media_types, require_tool, run_cmd, sha256_digest, tar_gz_dir,
    write_oci_layout,
};

fn tiny_layer() -> Vec<u8> {
    let src = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(src.path().join("etc")).expect("mkdir");
    fs::write(src.path().join("etc/os-release"), "ID=clbtest\n").expect("write");
    tar_gz_dir(src.path())
}

#[test]
fn tar_gz_dir_is_deterministic() {
    assert_eq!(tiny_layer(), tiny_layer());
}

#[test]
fn skopeo_copies_hand_written_layout_to_plain_registry_and_back() {
    require_tool("skopeo");
    let reg = Registry::start_plain();
    let layout = tempfile::tempdir().expect("tempdir");
    let layer = tiny_layer();
    let layer_digest = sha256_digest(&layer);
    let mdigest = write_oci_layout(
        layout.path(),
        std::slice::from_ref(&layer),
        media_types::LAYER_TAR_GZIP,
    );

    // Plain skopeo invocation, as a user would type it.
    run_cmd(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}", layout.path().display()),
        &format!("docker://{}", reg.image_ref("t/img:v1")),
    ]))
    .expect("skopeo copy to registry");

    let out = run_cmd(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}", reg.image_ref("t/img:v1")),
    ]))
    .expect("skopeo inspect --raw");
    assert_eq!(
        sha256_digest(&out),
        mdigest,
        "manifest stored byte-for-byte"
    );

    let info = reg
        .skopeo_inspect("t/img:v1", false)
        .expect("skopeo inspect");
    assert_eq!(info["Digest"], mdigest.as_str(), "{info}");
    assert_eq!(info["Layers"], serde_json::json!([layer_digest]), "{info}");
    assert_eq!(info["Os"], "linux", "{info}");

    // The registry itself serves the layer, and the fetch shows in the access log.
    let marker = reg.clear_log_marker();
    let r = reg
        .request("GET", &format!("/v2/t/img/blobs/{layer_digest}"), &[], &[])
        .expect("GET layer");
    assert_eq!((r.status, r.body == layer), (200, true));
    let f = reg.fetches_since(&marker);
    assert_eq!(f.len(), 1, "{f:?}");

    // And back into a fresh layout: same bytes.
    let back = tempfile::tempdir().expect("tempdir");
    run_cmd(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--preserve-digests"])
            .args(reg.skopeo_src_flags())
            .arg(format!("docker://{}", reg.image_ref("t/img:v1")))
            .arg(format!("oci:{}:v1", back.path().display())),
    )
    .expect("skopeo copy back");
    let hex = layer_digest.trim_start_matches("sha256:");
    assert_eq!(
        fs::read(back.path().join("blobs/sha256").join(hex)).expect("layer in copied layout"),
        layer
    );
}

#[test]
fn skopeo_pushes_to_tls_htpasswd_registry() {
    require_tool("skopeo");
    let reg = Registry::start(RegistryOptions::tls().with_auth("user", "pass")).expect("start");
    let layout = tempfile::tempdir().expect("tempdir");
    // A non-tar layer with our own media type: diff_id is the blob digest.
    let blob = b"pretend squashfs".to_vec();
    let mdigest = write_oci_layout(layout.path(), &[blob], "application/x-clb-test");
    reg.skopeo_copy_to(layout.path(), "t/native:v1")
        .expect("skopeo copy over TLS+auth");
    let info = reg.skopeo_inspect("t/native:v1", false).expect("inspect");
    assert_eq!(info["Digest"], mdigest.as_str(), "{info}");

    // Wrong credentials are refused.
    let err = run_cmd(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!(
                "--cert-dir={}",
                reg.cert_dir().expect("cert dir").display()
            ))
            .arg("--creds=user:wrong")
            .arg(format!("docker://{}", reg.image_ref("t/native:v1"))),
    )
    .expect_err("wrong password must fail");
    assert!(err.contains("unauthorized") || err.contains("401"), "{err}");
}
