//! Every failure class ends with one error line, its documented exit code, and the state
//! exactly as before (a hash over the whole state tree).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn unchanged(state: &Path, before: &str, what: &str) {
    assert_eq!(hash_tree(state), before, "{what} changed the state");
}

#[test]
fn verification_failures_are_refused_and_change_nothing() {
    require_tool(clb_testsupport::PYTHON);
    let (fx, state, _r) = staged();
    let before = hash_tree(&state);

    // Unsigned.
    assert_fails(&fx.upgrade(&state, "os:v2", &[]), 4, "verification failed");
    unchanged(&state, &before, "unsigned image");

    // Signed (in the legacy layout, corrupted below), but with a key we do not trust.
    fx.sign_as("os:v2", "sig");
    let other = fx.work.path().join("other");
    assert_ok(&clb(&[
        "keygen",
        "--output-key-prefix",
        other.to_str().unwrap(),
    ]));
    let out = clb_owned(&[
        "--state-dir".into(),
        state.display().to_string(),
        "upgrade".into(),
        "-d".into(),
        fx.image("os:v2"),
        "--key".into(),
        other.with_extension("pub").display().to_string(),
    ]);
    assert_fails(&out, 4, "verification failed");
    unchanged(&state, &before, "wrong key");

    // Key rotation: the old key and the right key together verify.
    let v1_state = fx.new_state_dir("rotation");
    let out = clb_owned(&[
        "--state-dir".into(),
        v1_state.display().to_string(),
        "upgrade".into(),
        "-d".into(),
        fx.image("os:v2"),
        "--key".into(),
        other.with_extension("pub").display().to_string(),
        "--key".into(),
        fx.pubkey.display().to_string(),
    ]);
    assert_ok(&out);

    // A corrupted signature: flip a character of the annotation and push the manifest back.
    let digest = fx.reg.skopeo_inspect("os:v2", false).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let sig_tag = digest.replace(':', "-") + ".sig";
    let resp = fx
        .reg
        .request(
            "GET",
            &format!("/v2/os/manifests/{sig_tag}"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            &[],
        )
        .unwrap();
    let mut sig_manifest: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    let annotation =
        &mut sig_manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"];
    let mut sig = annotation.as_str().unwrap().to_string();
    let flipped = if sig.as_bytes()[10] == b'A' { "B" } else { "A" };
    sig.replace_range(10..11, flipped);
    *annotation = serde_json::Value::String(sig);
    fx.reg
        .push_manifest(
            "os",
            &sig_tag,
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&sig_manifest).unwrap(),
        )
        .unwrap();
    assert_fails(&fx.upgrade(&state, "os:v2", &[]), 4, "verification failed");
    unchanged(&state, &before, "corrupted signature");

    // A valid signature over a payload that names another digest (independent signer).
    let pykey = fx.work.path().join("py");
    run_signer(&["keygen", pykey.to_str().unwrap()]);
    let v1_digest = fx.reg.skopeo_inspect("os:v1", false).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    fx.push(&[&_r.base, &_r.tops[1]], "os:v3", &["--format", "squashfs"]);
    let v3_digest = fx.reg.skopeo_inspect("os:v3", false).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    run_signer(&[
        "sign",
        "--key",
        pykey.with_extension("key").to_str().unwrap(),
        "--registry",
        &fx.reg.addr(),
        "--repo",
        "os",
        "--digest",
        &v3_digest,
        "--payload-digest-override",
        &v1_digest,
    ]);
    let py_pub = pykey.with_extension("pub").display().to_string();
    let out = clb_owned(&[
        "--state-dir".into(),
        state.display().to_string(),
        "upgrade".into(),
        "-d".into(),
        fx.image("os:v3"),
        "--key".into(),
        py_pub.clone(),
    ]);
    assert_fails(&out, 4, "verification failed");
    unchanged(&state, &before, "payload for another digest");

    // The same independent signer, signing the right digest, is accepted (cosign interop).
    run_signer(&[
        "sign",
        "--key",
        pykey.with_extension("key").to_str().unwrap(),
        "--registry",
        &fx.reg.addr(),
        "--repo",
        "os",
        "--digest",
        &v3_digest,
    ]);
    let out = clb_owned(&[
        "--json".into(),
        "--state-dir".into(),
        state.display().to_string(),
        "upgrade".into(),
        "-d".into(),
        fx.image("os:v3"),
        "--key".into(),
        py_pub,
    ]);
    assert_ok(&out);
}

#[test]
fn registry_and_input_failures_change_nothing() {
    let (mut fx, state, r) = staged();
    let before = hash_tree(&state);

    // Invalid input: a malformed reference.
    let out = clb(&[
        "--state-dir",
        state.to_str().unwrap(),
        "upgrade",
        "-d",
        "UPPER//case::",
        "--no-verify",
    ]);
    assert_fails(&out, 3, "invalid input");
    // Not found: an unknown tag.
    assert_fails(&fx.upgrade(&state, "os:nope", &[]), 10, "not found");
    // No key and no --no-verify.
    let out = clb_owned(&[
        "--state-dir".into(),
        state.display().to_string(),
        "upgrade".into(),
        "-d".into(),
        fx.image("os:v2"),
    ]);
    assert_fails(&out, 3, "--key");
    unchanged(&state, &before, "invalid input");

    // Digest mismatch: the registry serves a blob whose bytes no longer match its digest.
    fx.push(
        &[
            &r.base,
            &tree(&fx.work.path().join("top-x"), &[("x", &noise(5000, 9))]),
        ],
        "os:x",
        &[],
    );
    fx.sign("os:x");
    let top = skopeo_layers(&fx.reg, "os:x")[1].clone();
    corrupt_blob(&fx.reg, &top, |len| len - 1);
    assert_fails(&fx.upgrade(&state, "os:x", &[]), 5, "digest mismatch");
    unchanged(&state, &before, "digest mismatch");

    // Locked: another holder (here this test process, through flock like clb) has the lock.
    let holder = std::fs::File::open(&state).unwrap();
    holder.lock().unwrap();
    assert_fails(&fx.upgrade(&state, "os:v2", &["--no-verify"]), 9, "locked");
    drop(holder);
    unchanged(&state, &before, "locked");

    // Registry unreachable.
    fx.reg.stop();
    assert_fails(
        &fx.upgrade(&state, "os:v2", &["--no-verify", "--retries", "2"]),
        6,
        "unreachable",
    );
    unchanged(&state, &before, "unreachable registry");
}

#[test]
fn hostile_layer_is_refused_and_changes_nothing() {
    require_tool(clb_testsupport::PYTHON);
    require_tool("skopeo");
    let (fx, state, _r) = staged();
    let before = hash_tree(&state);
    for (name, script) in [
        ("dotdot", "t.addfile(tarfile.TarInfo('../escape'))"),
        ("absolute", "t.addfile(tarfile.TarInfo('/etc/passwd'))"),
        (
            "hardlink",
            "i=tarfile.TarInfo('x'); i.type=tarfile.LNKTYPE; i.linkname='../../etc/shadow'; t.addfile(i)",
        ),
    ] {
        let layout = fx.work.path().join(format!("layout-{name}"));
        let py = format!(
            "import tarfile,gzip,io,sys\nb=io.BytesIO()\nt=tarfile.open(fileobj=b,mode='w')\n{script}\nt.close()\nsys.stdout.buffer.write(gzip.compress(b.getvalue()))"
        );
        let out = Command::new(clb_testsupport::PYTHON)
            .args(["-c", &py])
            .output()
            .unwrap();
        assert!(out.status.success());
        clb_testsupport::write_oci_layout(
            &layout,
            &[out.stdout],
            "application/vnd.oci.image.layer.v1.tar+gzip",
        );
        fx.reg
            .skopeo_copy_to(&layout, &format!("evil:{name}"))
            .unwrap();
        assert_fails(
            &fx.upgrade(&state, &format!("evil:{name}"), &["--no-verify"]),
            3,
            "refusing layer entry",
        );
        unchanged(&state, &before, name);
    }
}

#[test]
fn no_space_is_detected_before_downloading() {
    let fx = Fixture::new();
    let big = tree(&fx.work.path().join("big"), &[("blob", &noise(3 << 20, 5))]);
    fx.push(&[&big], "big:v1", &[]);
    fx.sign("big:v1");
    let state = fx.new_state_dir("small");
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=2m",
            "tmpfs",
            state.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "mounting a small tmpfs");
    let before = hash_tree(&state);
    let out = fx.upgrade(&state, "big:v1", &[]);
    let after = hash_tree(&state);
    let _ = Command::new("umount").arg(&state).status();
    assert_fails(&out, 8, "not enough space");
    assert_eq!(before, after, "no-space failure changed the state");
}

#[test]
fn tls_registry_with_htpasswd() {
    require_tool("htpasswd");
    let reg = Registry::start(RegistryOptions::tls().with_auth("alice", "s3cret")).unwrap();
    let fx = Fixture::with_registry(reg);
    let r = releases(fx.work.path(), &["v1"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.sign("os:v1");
    let state = fx.new_state_dir("state");
    let before = hash_tree(&state);
    let ca = fx.reg.ca_cert_path().unwrap().display().to_string();
    let base: Vec<String> = vec![
        "--state-dir".into(),
        state.display().to_string(),
        "upgrade".into(),
        "-d".into(),
        fx.image("os:v1"),
        "--key".into(),
        fx.pubkey.display().to_string(),
        "--ca-file".into(),
        ca.clone(),
    ];
    // Wrong password: auth refused.
    let mut wrong = base.clone();
    wrong.extend(["--creds".into(), "alice:wrong".into()]);
    assert_fails(&clb_owned(&wrong), 7, "authentication");
    unchanged(&state, &before, "auth refused");

    // Credentials from a docker-style auth file (REGISTRY_AUTH_FILE).
    let auth_file = fx.work.path().join("auth.json");
    let encoded = base64_encode(b"alice:s3cret");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{encoded}"}}}}}}"#,
            fx.reg.addr()
        ),
    )
    .unwrap();
    let out = Command::new(clb_bin())
        .args(&base)
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("s3cret"), "credentials must never be logged");
    assert_eq!(fx.status(&state)["active"], "a");
}

fn base64_encode(data: &[u8]) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    out.stdin.as_ref().unwrap().write_all(data).unwrap();
    let o = out.wait_with_output().unwrap();
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn failure_after_some_layers_were_stored_undoes_them() {
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.sign("os:v1");
    // Corrupt the top layer in the registry's storage: the base converts and is stored
    // first (one job at a time), then the top fails its digest check.
    let top = skopeo_layers(&fx.reg, "os:v1")[1].clone();
    corrupt_blob(&fx.reg, &top, |_| 0);
    let state = fx.new_state_dir("fresh");
    let before = hash_tree(&state);
    assert_fails(
        &fx.upgrade(&state, "os:v1", &["--jobs", "1"]),
        5,
        "digest mismatch",
    );
    unchanged(
        &state,
        &before,
        "a failure after the first layer was stored",
    );
}
