//! Transport behaviour: an upgrade killed mid-download resumes with an HTTP Range request
//! instead of refetching; images copied in by skopeo stage; indexes resolve per platform.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A TCP proxy that cuts the first `cuts` responses carrying a body after `limit` bytes
/// (a flaky network): the client must retry and resume with a Range request.
fn cutting_proxy(upstream: String, limit: usize, cuts: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let remaining = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(cuts));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
            });
            let remaining = remaining.clone();
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let mut sent = 0usize;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    if sent > limit
                        && remaining
                            .fetch_update(
                                std::sync::atomic::Ordering::SeqCst,
                                std::sync::atomic::Ordering::SeqCst,
                                |r| r.checked_sub(1),
                            )
                            .is_ok()
                    {
                        let _ = c_write.shutdown(std::net::Shutdown::Both);
                        let _ = s_read.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Pushes a one-layer image holding `size` bytes of noise; returns its layer's digest.
fn push_big(fx: &Fixture, repo_tag: &str, size: usize, seed: u64) -> String {
    let dir = fx.work.path().join(repo_tag.replace(':', "-"));
    let big = tree(&dir, &[("payload.bin", &noise(size, seed))]);
    fx.push(&[&big], repo_tag, &[]);
    skopeo_layers(&fx.reg, repo_tag)[0].clone()
}

/// `clb --json --state-dir STATE upgrade --no-verify -d ADDR/REPO_TAG` (`ADDR` a proxy).
fn upgrade_via(addr: &str, state: &Path, repo_tag: &str) -> std::process::Output {
    clb_owned(&[
        "--json".into(),
        "--state-dir".into(),
        state.display().to_string(),
        "upgrade".into(),
        "--no-verify".into(),
        "-d".into(),
        format!("{addr}/{repo_tag}"),
    ])
}

/// `clb --state-dir STATE upgrade --no-verify -d ADDR/REPO_TAG` with logs at `rust_log`.
fn upgrade_command(addr: &str, state: &Path, repo_tag: &str, rust_log: &str) -> Command {
    let mut cmd = Command::new(clb_bin());
    cmd.arg("--state-dir")
        .arg(state)
        .args([
            "upgrade",
            "--no-verify",
            "-d",
            &format!("{addr}/{repo_tag}"),
        ])
        .env("RUST_LOG", rust_log);
    cmd
}

/// The one layer image in a state directory's store.
fn only_layer(state: &Path) -> PathBuf {
    let images: Vec<_> = std::fs::read_dir(state.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
    images[0].clone()
}

/// Where an interrupted download of `digest` waits in a state directory.
fn partial_path(state: &Path, digest: &str) -> PathBuf {
    state
        .join("tmp")
        .join(format!("{}.partial", digest.replace(':', "-")))
}

#[test]
fn dropped_connections_are_retried_with_range_requests() {
    let fx = Fixture::new();
    let layer = push_big(&fx, "flaky:v1", 4 << 20, 4);
    let proxy = cutting_proxy(fx.reg.addr(), 1 << 20, 2);
    let state = fx.new_state_dir("state");
    let marker = fx.reg.clear_log_marker();
    let out = upgrade_via(&proxy, &state, "flaky:v1");
    assert_ok(&out);
    assert_eq!(json(&out)["layers_downloaded"], 1);
    let fetches = fx.reg.fetches_of(&marker, &layer, 3);
    assert!(
        fetches.len() >= 3,
        "two cut transfers and a finishing one: {fetches:?}"
    );
    assert!(
        fetches.iter().filter(|f| f.range).count() >= 2,
        "resumed with Range: {fetches:?}"
    );
}

#[test]
fn docker_v2_manifests_and_a_separate_signature_repository() {
    require_tool("skopeo");
    let fx = Fixture::new();
    let dir = tree(&fx.work.path().join("d"), &[("etc/release", b"docker\n")]);
    fx.push(&[&dir], "oci:v1", &[]);
    // skopeo converts the image to a Docker v2 schema 2 manifest on the way.
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--format",
            "v2s2",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{}", fx.image("oci:v1")))
        .arg(format!("docker://{}", fx.image("docker:v1")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = fx.reg.skopeo_inspect("docker:v1", true).unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    // Signatures kept in another repository, as with COSIGN_REPOSITORY.
    let sigrepo = fx.image("signatures");
    assert_ok(&clb_owned(&[
        "sign".into(),
        "--key".into(),
        fx.key.display().to_string(),
        fx.image("docker:v1"),
        "--signature-repository".into(),
        sigrepo.clone(),
    ]));
    let state = fx.new_state_dir("state");
    // Not found in the image's own repository...
    assert_fails(&fx.upgrade(&state, "docker:v1", &[]), 4, "no signature");
    // ...but found where we said.
    let out = fx.upgrade(&state, "docker:v1", &["--signature-repository", &sigrepo]);
    assert_ok(&out);
    assert_eq!(fx.status(&state)["slots"]["a"]["verified"], true);
}

#[test]
fn killed_upgrade_resumes_without_refetching() {
    let fx = Fixture::new();
    let size = 8 << 20;
    let layer = push_big(&fx, "big:v1", size, 3);
    // Responses at 1 MiB/s, so the download is still running when the test kills it.
    let throttle = common::bus::Throttle::start(fx.reg.addr(), 1 << 20);
    let proxy = throttle.addr();
    let state = fx.new_state_dir("state");
    let mut child = upgrade_command(proxy, &state, "big:v1", "warn")
        .spawn()
        .unwrap();
    let partial = partial_path(&state, &layer);
    let converted = state
        .join("tmp")
        .join(format!("{}.squashfs.tmp", layer.replace(':', "-")));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < (5 << 20) {
        assert!(Instant::now() < deadline, "download did not start");
        assert!(
            child.try_wait().unwrap().is_none(),
            "upgrade finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The layer is converted while it downloads: SquashFS output exists mid-download.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&converted).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "no conversion output while downloading"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    let had = std::fs::metadata(&partial).unwrap().len();
    assert!(
        had > 0 && had < size as u64,
        "a partial download is left: {had}"
    );
    assert!(
        fx.status(&state)["active"].is_null(),
        "nothing staged by the killed run"
    );

    // The registry logs the killed request once its connection closes; wait for it so that
    // it is not counted as part of the resumed run.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !fx.reg.blob_fetches().iter().any(|f| f.digest == layer) {
        assert!(Instant::now() < deadline, "killed request never logged");
        std::thread::sleep(Duration::from_millis(100));
    }
    let marker = fx.reg.clear_log_marker();
    let out = fx.upgrade(&state, "big:v1", &["--no-verify"]);
    assert_ok(&out);
    let fetches: Vec<_> = fx
        .reg
        .fetches_since(&marker)
        .into_iter()
        .filter(|f| f.digest == layer)
        .collect();
    assert_eq!(fetches.len(), 1, "{fetches:?}");
    assert!(
        fetches[0].range,
        "resumed with a Range request: {fetches:?}"
    );
    let sent = fetches[0].bytes.unwrap();
    assert!(
        sent <= (size as u64) - had + 4096,
        "only the rest was sent ({sent} bytes, had {had})"
    );
    assert!(!partial.exists(), "partial download consumed");
    assert!(
        !converted.exists(),
        "the killed run's conversion output was replaced"
    );
    assert_eq!(fx.status(&state)["active"], "a");
    // The resumed run converted the kept bytes and the rest: the layer holds the whole file.
    let image = only_layer(&state);
    let listed = Command::new("unsquashfs")
        .arg("-lls")
        .arg(&image)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listing.contains(&format!(" {size} ")) && listing.contains("payload.bin"),
        "{listing}"
    );
}

#[test]
fn a_blob_corrupted_mid_stream_stages_nothing() {
    let fx = Fixture::new();
    let layer = push_big(&fx, "big:v1", 4 << 20, 5);
    corrupt_blob(&fx.reg, &layer, |len| len / 2);
    // Slow enough that the converter reads the corrupted half before the digest is known.
    let throttle = common::bus::Throttle::start(fx.reg.addr(), 2 << 20);
    let state = fx.new_state_dir("state");
    let before = hash_tree(&state);
    let out = upgrade_via(throttle.addr(), &state, "big:v1");
    assert_fails(&out, 5, "digest mismatch");
    assert_eq!(
        hash_tree(&state),
        before,
        "a corrupt blob changed the state"
    );
}

/// A whole-blob response is checked by oci-client's stream, not hashed again by clb; when it
/// breaks, clb rebuilds its hash from the bytes kept before resuming. A byte corrupted before
/// the cut must still fail the digest at the end.
#[test]
fn a_blob_corrupted_before_a_cut_fails_its_digest_after_the_resume() {
    let fx = Fixture::new();
    let layer = push_big(&fx, "cut:v1", 4 << 20, 7);
    corrupt_blob(&fx.reg, &layer, |_| 300 << 10);
    let proxy = cutting_proxy(fx.reg.addr(), 1 << 20, 1);
    let state = fx.new_state_dir("state");
    let before = hash_tree(&state);
    let marker = fx.reg.clear_log_marker();
    let out = upgrade_via(&proxy, &state, "cut:v1");
    assert_fails(&out, 5, "digest mismatch");
    assert_eq!(
        hash_tree(&state),
        before,
        "a corrupt blob changed the state"
    );
    let fetches = fx.reg.fetches_of(&marker, &layer, 2);
    assert!(
        fetches.len() >= 2 && fetches[1..].iter().any(|f| f.range),
        "cut once, then resumed with a Range: {fetches:?}"
    );
}

#[test]
fn a_registry_ignoring_range_requests_gets_the_layer_converted_from_the_new_bytes() {
    let fx = Fixture::new();
    let size = 4 << 20;
    let layer = push_big(&fx, "big:v1", size, 6);
    // A previous run left half a download, but of wrong bytes: what the converter reads
    // first is stale, and the registry (behind a proxy that drops Range headers) answers
    // the resume with the whole blob, so the download starts the file over.
    let state = fx.new_state_dir("state");
    let partial = partial_path(&state, &layer);
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, noise(1 << 20, 99)).unwrap();
    let proxy = forwarder_with("127.0.0.1:0", fx.reg.addr(), drop_range_header);
    let marker = fx.reg.clear_log_marker();
    let out = upgrade_command(&proxy, &state, "big:v1", "info")
        .output()
        .unwrap();
    assert_ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("registry ignored the range request")
            && log.contains("download started over; converting the finished file"),
        "{log}"
    );
    let fetches = fx.reg.fetches_since(&marker);
    assert!(
        fetches.iter().any(|f| f.digest == layer && !f.range),
        "{fetches:?}"
    );
    // The layer holds the payload the registry served, not the stale bytes.
    let image = only_layer(&state);
    let extracted = fx.work.path().join("extracted");
    let unsquash = Command::new("unsquashfs")
        .args(["-q", "-d"])
        .arg(&extracted)
        .arg(&image)
        .output()
        .unwrap();
    assert!(unsquash.status.success(), "{unsquash:?}");
    assert!(std::fs::read(extracted.join("payload.bin")).unwrap() == noise(size, 6));
    assert!(!partial.exists());
}

#[test]
fn skopeo_copied_image_and_platform_index() {
    require_tool("skopeo");
    let fx = Fixture::new();
    // An image written as an OCI layout and copied in by skopeo (not by us).
    let amd = tree(&fx.work.path().join("amd"), &[("etc/arch", b"amd64\n")]);
    let arm = tree(&fx.work.path().join("arm"), &[("etc/arch", b"arm64\n")]);
    let layout = fx.work.path().join("layout");
    clb_testsupport::write_oci_layout(
        &layout,
        &[clb_testsupport::tar_gz_dir(&amd)],
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    fx.reg.skopeo_copy_to(&layout, "multi:amd64").unwrap();
    fx.push(&[&arm], "multi:arm64", &[]);
    let digest_of = |tag: &str| {
        fx.reg.skopeo_inspect(tag, false).unwrap()["Digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let size_of = |tag: &str| {
        fx.reg
            .request(
                "GET",
                &format!("/v2/multi/manifests/{tag}"),
                &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
                &[],
            )
            .unwrap()
            .body
            .len()
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of("multi:arm64"), "size": size_of("arm64"),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of("multi:amd64"), "size": size_of("amd64"),
             "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    });
    fx.reg
        .push_manifest(
            "multi",
            "latest",
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    // Signing the index digest covers every platform manifest it names.
    fx.sign("multi:latest");
    for (platform, expect) in [
        (None, "multi:amd64"),
        (Some("linux/arm64/v8"), "multi:arm64"),
    ] {
        let state = fx.new_state_dir(&format!("state-{expect}").replace(':', "-"));
        let mut extra = vec![];
        if let Some(p) = platform {
            extra.extend(["--platform", p]);
        }
        let out = fx.upgrade(&state, "multi:latest", &extra);
        assert_ok(&out);
        assert_eq!(json(&out)["digest"], digest_of(expect));
    }
    let state = fx.new_state_dir("state-s390x");
    assert_fails(
        &fx.upgrade(&state, "multi:latest", &["--platform", "linux/s390x"]),
        10,
        "platform",
    );
}

/// A plain TCP forwarder bound to `bind` (any loopback address).
fn forwarder(bind: &str, upstream: String) -> String {
    forwarder_with(bind, upstream, |request| request.to_vec())
}

/// Drops `Range` header lines from what a client sends (a registry that ignores ranges
/// answers every resume with the whole blob). Requests arrive in one read on loopback.
fn drop_range_header(request: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    let kept: Vec<&str> = text
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("range:"))
        .collect();
    kept.join("\r\n").into_bytes()
}

/// A TCP forwarder that passes what the client sends through `rewrite` (per read).
fn forwarder_with(bind: &str, upstream: String, rewrite: fn(&[u8]) -> Vec<u8>) -> String {
    let listener = TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut a, mut b) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match a.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if b.write_all(&rewrite(&buf[..n])).is_err() {
                        break;
                    }
                }
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
            let (mut c, mut d) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut d);
            });
        }
    });
    addr
}

#[test]
fn plain_http_only_for_127_0_0_1_or_with_insecure() {
    let fx = Fixture::new();
    let dir = tree(&fx.work.path().join("d"), &[("etc/release", b"x\n")]);
    fx.push(&[&dir], "os:v1", &[]);
    // The same plain-HTTP registry seen at 127.0.0.2: not 127.0.0.1, so HTTPS is required.
    let other = forwarder("127.0.0.2:0", fx.reg.addr());
    let state = fx.new_state_dir("state");
    let before = hash_tree(&state);
    let image = format!("{other}/os:v1");
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "--state-dir".into(),
            state.display().to_string(),
            "upgrade".into(),
            "--no-verify".into(),
            "--retries".into(),
            "1".into(),
            "-d".into(),
            image.clone(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    assert_fails(&clb_owned(&args(&[])), 6, "unreachable");
    assert_eq!(hash_tree(&state), before);
    assert_ok(&clb_owned(&args(&["--insecure"])));
}

#[test]
fn progress_bars_on_a_terminal_log_lines_otherwise() {
    require_tool("script");
    let fx = Fixture::new();
    let dir = tree(&fx.work.path().join("d"), &[("blob", &noise(2 << 20, 7))]);
    fx.push(&[&dir], "os:v1", &[]);
    let layer = skopeo_layers(&fx.reg, "os:v1")[0].clone();
    let short = &layer["sha256:".len().."sha256:".len() + 12];
    // Under a pseudo-terminal (util-linux `script`): a bar per layer.
    let state = fx.new_state_dir("tty");
    let cmd = format!(
        "{} --state-dir {} upgrade --no-verify -d {}",
        clb_bin(),
        state.display(),
        fx.image("os:v1")
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains(short) && screen.contains("[=") && screen.contains("stored"),
        "progress bar expected: {screen}"
    );
    // Not a terminal: structured log lines instead, and no bar characters.
    let state = fx.new_state_dir("pipe");
    let out = Command::new(clb_bin())
        .args([
            "--state-dir",
            state.to_str().unwrap(),
            "upgrade",
            "--no-verify",
            "-d",
            &fx.image("os:v1"),
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("INFO") && log.contains("downloading") && log.contains(short),
        "{log}"
    );
    assert!(!log.contains("[="), "{log}");
}

/// A host without CA certificates (no ca-certificates package) gets a one-line reason and
/// exit 3, not a panic (reqwest panics when it finds no roots; the .deb depends on
/// ca-certificates so an installed clb always has them).
#[test]
fn no_system_ca_roots_is_a_clear_error_not_a_panic() {
    let (fx, state, _r) = staged();
    let empty = fx.work.path().join("no-certs");
    std::fs::create_dir(&empty).unwrap();
    let out = Command::new(clb_bin())
        .args(["--no-daemon", "--state-dir", state.to_str().unwrap()])
        .args(["upgrade", "--check", "-d", &fx.image("os:v2")])
        .env("SSL_CERT_FILE", empty.join("none.pem"))
        .env("SSL_CERT_DIR", &empty)
        .output()
        .unwrap();
    assert_fails(&out, 3, "install the Debian package ca-certificates");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
