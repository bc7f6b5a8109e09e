//! Hostile and broken registries (docs/reliability.md): a proxy in front of the real registry
//! misbehaves on chosen requests. Each case ends with the image staged as published, or with
//! one line of reason, its exit code and the state tree unchanged; the peak RSS of clb is
//! measured (GNU time) and printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clb_testsupport::{HostileProxy, Misbehavior, Registry, RegistryOptions, hash_tree};

/// Every case must stay within this much memory (the budget of docs/performance.md).
const RSS_LIMIT_KIB: u64 = 64 << 10;

/// `clb ARGS` under GNU time: its output and its peak RSS in KiB.
fn clb_measured(args: &[String]) -> (Output, u64) {
    let rss_file = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(rss_file.path())
        .arg(clb_bin())
        .args(args)
        .output()
        .expect("run clb under /usr/bin/time (package time)");
    let text = std::fs::read_to_string(rss_file.path()).unwrap();
    let rss = text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no RSS from /usr/bin/time: {text:?}"));
    (out, rss)
}

/// `clb upgrade` of `image` into `state` (verified with the fixture's key), measured.
fn upgrade(fx: &Fixture, state: &Path, image: &str, extra: &[&str]) -> (Output, u64) {
    let mut args: Vec<String> = [
        "--json",
        "--state-dir",
        state.to_str().unwrap(),
        "upgrade",
        "-d",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(image.to_string());
    args.extend(["--key".to_string(), fx.pubkey.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(fx.registry_flags());
    clb_measured(&args)
}

/// A signed one-layer image whose layer is a small blob; returns that blob's digest.
fn small_image(fx: &Fixture, repo_tag: &str) -> String {
    // Content of its own, so that no other image of the test shares the layer.
    image_of(fx, repo_tag, repo_tag.as_bytes())
}

/// A signed one-layer image holding `content` in one file; returns its layer's digest.
fn image_of(fx: &Fixture, repo_tag: &str, content: &[u8]) -> String {
    let dir = tree(
        &fx.work.path().join(repo_tag.replace([':', '/'], "-")),
        &[("etc/motd", content)],
    );
    fx.push(&[&dir], repo_tag, &[]);
    fx.sign(repo_tag);
    skopeo_layers(&fx.reg, repo_tag).remove(0)
}

const SQUASHFS: &str = "application/vnd.clb.layer.v1.squashfs";
const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Pushes `blob` as the one layer (of `media_type`) of a signed image `repo:tag`, written by
/// hand (not by `clb push`); returns the layer's digest.
fn push_signed_layer(fx: &Fixture, repo_tag: &str, media_type: &str, blob: &[u8]) -> String {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let config = fx.reg.push_blob(repo, b"{}").unwrap();
    let layer = fx.reg.push_blob(repo, blob).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": 2},
        "layers": [{"mediaType": media_type, "digest": layer, "size": blob.len()}]
    });
    fx.reg
        .push_manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        )
        .unwrap();
    fx.sign(repo_tag);
    layer
}

/// A state directory with a system installed (a first image, straight from the registry):
/// what a hostile registry meets on a real host.
fn installed(fx: &Fixture, name: &str) -> std::path::PathBuf {
    let state = fx.new_state_dir(name);
    if fx
        .reg
        .request("GET", "/v2/base/os/manifests/v0", &[], b"")
        .map(|r| r.status)
        != Ok(200)
    {
        small_image(fx, "base/os:v0");
    }
    assert_ok(&fx.upgrade(&state, "base/os:v0", &[]));
    state
}

/// The source (registry) digests of the layers of the slot the next boot tries.
fn staged_sources(state: &Path) -> Vec<String> {
    let status: serde_json::Value = serde_json::from_slice(
        &clb(&["--json", "--state-dir", state.to_str().unwrap(), "status"]).stdout,
    )
    .unwrap();
    let active = status["active"].as_str().unwrap();
    let slot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join(format!("slots/{active}.json"))).unwrap())
            .unwrap();
    slot["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["source_digest"].as_str().unwrap().to_string())
        .collect()
}

fn blob_path(digest: &str) -> String {
    format!("/blobs/{digest}")
}

fn report(case: &str, rss: u64, took: Duration) {
    println!(
        "hostile registry: {case}: peak RSS {} KiB, {:.1} s",
        rss,
        took.as_secs_f64()
    );
    assert!(
        rss <= RSS_LIMIT_KIB,
        "{case}: peak RSS {rss} KiB over {RSS_LIMIT_KIB} KiB"
    );
}

/// The state after a refused upgrade: as before, byte for byte.
fn assert_unchanged(state: &Path, before: &str, case: &str) {
    assert_eq!(hash_tree(state), before, "{case}: the state tree changed");
}

/// The same after a download that got some bytes: those are kept to resume (a prefix of the
/// blob, in `tmp/`), and apart from them the state is as before. True if a prefix was kept.
fn assert_unchanged_but_resumable(
    fx: &Fixture,
    state: &Path,
    before: &str,
    repo: &str,
    layer: &str,
    case: &str,
) -> bool {
    let partial = state
        .join("tmp")
        .join(format!("{}.partial", layer.replace(':', "-")));
    let kept = partial.exists();
    if kept {
        let prefix = std::fs::read(&partial).unwrap();
        let blob = fx
            .reg
            .request("GET", &format!("/v2/{repo}{}", blob_path(layer)), &[], b"")
            .unwrap()
            .body;
        assert!(
            !prefix.is_empty() && prefix.len() < blob.len() && blob.starts_with(&prefix),
            "{case}: the kept partial download is a prefix of the blob"
        );
        std::fs::remove_file(&partial).unwrap();
    }
    assert_unchanged(state, before, case);
    kept
}

#[test]
fn server_error_storms_are_ridden_out_or_given_up_on_cleanly() {
    let fx = Fixture::new();
    let layer = small_image(&fx, "storm/os:v1");

    // A short storm on the layer: the retries see it through.
    let proxy = HostileProxy::start(&fx.reg, &blob_path(&layer), Misbehavior::ServerErrors(3));
    let state = fx.new_state_dir("short-storm");
    let started = Instant::now();
    let (out, rss) = upgrade(&fx, &state, &proxy.image_ref("storm/os:v1"), &[]);
    assert_ok(&out);
    assert_eq!(proxy.hits(), 4, "three 503s, then the layer");
    report("short 5xx storm", rss, started.elapsed());

    // A storm that does not end, on the manifest and on the layer: given up on.
    for target in ["/manifests/v1", &blob_path(&layer)] {
        let proxy = HostileProxy::start(&fx.reg, target, Misbehavior::ServerErrors(usize::MAX));
        let state = installed(&fx, &format!("storm{}", target.len()));
        let before = hash_tree(&state);
        let started = Instant::now();
        let (out, rss) = upgrade(
            &fx,
            &state,
            &proxy.image_ref("storm/os:v1"),
            &["--retries", "3"],
        );
        let line = assert_fails(&out, 6, "503");
        assert_eq!(proxy.hits(), 3, "{target}: one request per attempt: {line}");
        assert_unchanged(&state, &before, target);
        report(
            &format!("endless 5xx storm on {target}"),
            rss,
            started.elapsed(),
        );
    }
}

#[test]
fn a_reset_at_every_byte_offset_of_a_blob_resumes_to_the_right_layer() {
    let fx = Fixture::new();
    let layer = small_image(&fx, "reset/os:v1");
    let size = fx
        .reg
        .request(
            "GET",
            &format!("/v2/reset/os{}", blob_path(&layer)),
            &[],
            b"",
        )
        .unwrap()
        .body
        .len();
    assert!(size > 50 && size < 4096, "a small blob: {size} bytes");
    let mut worst = 0;
    let started = Instant::now();
    for offset in 0..size {
        let proxy =
            HostileProxy::start(&fx.reg, &blob_path(&layer), Misbehavior::ResetAfter(offset));
        let state = fx.new_state_dir(&format!("reset-{offset}"));
        let (out, rss) = upgrade(
            &fx,
            &state,
            &proxy.image_ref("reset/os:v1"),
            &["--download-only"],
        );
        assert_ok(&out);
        assert_eq!(
            proxy.hits(),
            1,
            "offset {offset}: the connection was reset once"
        );
        let gets: Vec<_> = proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.contains(&layer))
            .collect();
        assert_eq!(
            gets.len(),
            2,
            "offset {offset}: one reset, one resume: {gets:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if offset > 0 {
            let range = gets[1].range.clone().unwrap_or_default();
            assert!(
                range == format!("bytes={offset}-")
                    || range == format!("bytes={offset}-{}", size - 1),
                "offset {offset}: resumed where the reset left off: {range:?}"
            );
        }
        worst = worst.max(rss);
    }
    report(
        &format!("a reset at each of {size} offsets"),
        worst,
        started.elapsed(),
    );
}

#[test]
fn a_slow_loris_registry_is_cut_resumed_and_given_up_on_within_five_minutes() {
    let fx = Fixture::new();
    // Noise does not compress: 8 KiB take over two hours at a byte a second.
    let layer = image_of(&fx, "loris/os:v1", &noise(8192, 11));
    let proxy = HostileProxy::start(
        &fx.reg,
        &blob_path(&layer),
        Misbehavior::Drip(Duration::from_secs(1)),
    );
    let state = installed(&fx, "loris");
    let before = hash_tree(&state);
    let started = Instant::now();
    // The default retries.
    let (out, rss) = upgrade(&fx, &state, &proxy.image_ref("loris/os:v1"), &[]);
    let took = started.elapsed();
    assert_fails(&out, 6, "stalled");
    assert!(took < Duration::from_secs(300), "gave up after {took:?}");
    let gets: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(&layer))
        .collect();
    assert_eq!(gets.len(), 5, "one cut per attempt: {gets:?}");
    assert!(
        gets[1..].iter().all(|g| g.range.is_some()),
        "each attempt after the first resumes with a Range: {gets:?}"
    );
    // What arrived is kept for a later run to resume.
    assert!(
        assert_unchanged_but_resumable(&fx, &state, &before, "loris/os", &layer, "slow loris"),
        "the bytes that dripped in are kept"
    );
    report("slow loris (1 byte/s)", rss, took);
}

#[test]
fn a_content_length_that_lies_never_stages_wrong_bytes() {
    let fx = Fixture::new();
    let layer = small_image(&fx, "liar/os:v1");
    for delta in [-20i64, 20, 4096] {
        let proxy =
            HostileProxy::start(&fx.reg, &blob_path(&layer), Misbehavior::LyingLength(delta));
        let state = installed(&fx, &format!("liar{delta}"));
        let before = hash_tree(&state);
        let started = Instant::now();
        let (out, rss) = upgrade(&fx, &state, &proxy.image_ref("liar/os:v1"), &[]);
        // Announcing more than is sent: the body still has the descriptor's size and digest.
        // Announcing less: every answer ends early, a failed attempt each.
        if delta > 0 {
            assert_ok(&out);
            assert_eq!(staged_sources(&state), vec![layer.clone()], "delta {delta}");
        } else {
            assert_fails(&out, 6, "ended early");
            let case = format!("Content-Length off by {delta}");
            assert_unchanged_but_resumable(&fx, &state, &before, "liar/os", &layer, &case);
        }
        report(
            &format!("Content-Length off by {delta}"),
            rss,
            started.elapsed(),
        );
    }
}

#[test]
fn credentials_do_not_follow_a_redirect_to_another_host() {
    let fx = Fixture::with_registry(
        Registry::start(RegistryOptions::plain().with_auth("alice", "s3cret")).unwrap(),
    );
    let layer = small_image(&fx, "cdn/os:v1");
    let blob = fx
        .reg
        .request("GET", &format!("/v2/cdn/os{}", blob_path(&layer)), &[], b"")
        .unwrap()
        .body;
    // The other host: 127.0.0.2 serves the blob to anyone, as a CDN with signed URLs does.
    let cdn = HostileProxy::start_on(
        "127.0.0.2",
        &fx.reg.addr(),
        "/",
        Misbehavior::Replace {
            content_type: "application/octet-stream".into(),
            body: Arc::new(blob),
        },
    );
    let proxy = HostileProxy::start(
        &fx.reg,
        &blob_path(&layer),
        Misbehavior::RedirectTo(format!("http://{}", cdn.addr())),
    );
    let state = fx.new_state_dir("cdn");
    let started = Instant::now();
    let (out, rss) = upgrade(&fx, &state, &proxy.image_ref("cdn/os:v1"), &[]);
    assert_ok(&out);
    assert!(proxy.hits() >= 1, "the registry redirected the layer");
    assert!(
        proxy.requests().iter().any(|r| r.authorization.is_some()),
        "the registry itself was sent the credentials"
    );
    let at_cdn = cdn.requests();
    assert!(
        !at_cdn.is_empty(),
        "the layer was fetched from the other host"
    );
    assert!(
        at_cdn.iter().all(|r| r.authorization.is_none()),
        "credentials followed the redirect: {at_cdn:?}"
    );
    report("redirect to another host", rss, started.elapsed());
}

#[test]
fn a_native_squashfs_layer_that_is_not_squashfs_is_refused() {
    let fx = Fixture::new();
    let mut header_only = b"hsqs".to_vec();
    header_only.extend(noise(4092, 7));
    for (case, blob) in [
        ("random bytes", noise(8192, 3)),
        ("a magic and noise", header_only),
    ] {
        let tag = if case.starts_with("random") {
            "v1"
        } else {
            "v2"
        };
        push_signed_layer(&fx, &format!("fake/os:{tag}"), SQUASHFS, &blob);
        let state = installed(&fx, &format!("fake-{tag}"));
        let before = hash_tree(&state);
        let started = Instant::now();
        let (out, rss) = upgrade(&fx, &state, &fx.image(&format!("fake/os:{tag}")), &[]);
        assert_fails(&out, 3, "not a SquashFS 4.0 image");
        assert_unchanged(&state, &before, case);
        report(&format!("native layer of {case}"), rss, started.elapsed());
    }
}

#[test]
fn a_gzip_bomb_is_stopped_by_the_space_check_while_it_converts() {
    let fx = Fixture::new();
    // 1 GiB of zeros: `clb push` gzips them to a layer of about 1 MiB.
    let dir = fx.work.path().join("bomb");
    std::fs::create_dir_all(dir.join("var")).unwrap();
    let zeros = std::fs::File::create(dir.join("var/zeros")).unwrap();
    zeros.set_len(1 << 30).unwrap();
    fx.push(&[&dir], "bomb/os:v1", &[]);
    fx.sign("bomb/os:v1");

    // The state on a 32 MiB filesystem: room for the download many times over, and for the
    // SquashFS form (zeros make a tiny image), but a layer that inflates 30 times past the
    // free space is taken for the bomb it is.
    let fs = SmallFs::mount(&fx.work.path().join("small"), 32 << 20);
    let state = fs.0.join("state");
    std::fs::create_dir_all(&state).unwrap();
    small_image(&fx, "base/os:v0");
    assert_ok(&fx.upgrade(&state, "base/os:v0", &[]));
    let before = hash_tree(&state);
    let started = Instant::now();
    let (out, rss) = upgrade(&fx, &state, &fx.image("bomb/os:v1"), &[]);
    let line = assert_fails(&out, 8, "decompresses past");
    println!("gzip bomb: {line}");
    // Nothing left behind: neither the conversion nor the download.
    assert_unchanged(&state, &before, "gzip bomb");
    report("gzip bomb (1 GiB of zeros)", rss, started.elapsed());
}

/// One ustar header block (POSIX.1-1988) for `name`: a directory or an empty file.
fn ustar_header(name: &str, dir: bool) -> [u8; 512] {
    let mut h = [0u8; 512];
    let field = |h: &mut [u8; 512], at: usize, text: &str| {
        h[at..at + text.len()].copy_from_slice(text.as_bytes());
    };
    field(&mut h, 0, name);
    field(&mut h, 100, if dir { "0000755\0" } else { "0000644\0" });
    field(&mut h, 108, "0000000\0");
    field(&mut h, 116, "0000000\0");
    field(&mut h, 124, "00000000000\0");
    field(&mut h, 136, "00000000000\0");
    field(&mut h, 156, if dir { "5" } else { "0" });
    field(&mut h, 257, "ustar\0");
    field(&mut h, 263, "00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    field(&mut h, 148, &format!("{sum:06o}\0 "));
    h
}

#[test]
fn a_layer_of_a_million_entries_stages_in_bounded_memory() {
    let fx = Fixture::new();
    // 1,000 directories of 1,000 empty files, gzipped by gzip(1) as it is written.
    let mut gzip = Command::new("gzip")
        .args(["-1", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = gzip.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut stdin);
        for d in 0..1000 {
            out.write_all(&ustar_header(&format!("d{d:03}/"), true))
                .unwrap();
            for f in 0..1000 {
                out.write_all(&ustar_header(&format!("d{d:03}/f{f:03}"), false))
                    .unwrap();
            }
        }
        out.write_all(&[0u8; 1024]).unwrap();
        out.flush().unwrap();
    });
    let layer_bytes = gzip.wait_with_output().unwrap().stdout;
    writer.join().unwrap();
    let entries = 1000 + 1000 * 1000;

    let layer = push_signed_layer(&fx, "many/os:v1", TAR_GZIP, &layer_bytes);
    let state = installed(&fx, "many");
    let started = Instant::now();
    let (out, rss) = upgrade(&fx, &state, &fx.image("many/os:v1"), &[]);
    let took = started.elapsed();
    assert_ok(&out);
    assert_eq!(staged_sources(&state), vec![layer.clone()]);
    // Cross-checked with unsquashfs: every entry is in the image.
    let active = fx.status(&state)["active"].as_str().unwrap().to_string();
    let slot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join(format!("slots/{active}.json"))).unwrap())
            .unwrap();
    let digest = slot["layers"][0]["digest"].as_str().unwrap();
    let image = state
        .join("layers")
        .join(format!("{}.squashfs", digest.replace(':', "-")));
    let listed = Command::new("unsquashfs")
        .args(["-l", "-d", ""])
        .arg(&image)
        .output()
        .unwrap();
    assert!(listed.status.success(), "unsquashfs -l {}", image.display());
    let listed = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.starts_with('/'))
        .count();
    assert_eq!(listed, entries, "entries in the SquashFS image");
    // tar2sqfs keeps the tree in memory (about 225 bytes an entry): the whole process tree
    // is measured, and bounded by the entry count, not by the layer's size.
    println!(
        "hostile registry: a layer of {entries} entries ({} KiB gzipped): peak RSS {rss} KiB (clb and tar2sqfs), {:.1} s",
        layer_bytes.len() >> 10,
        took.as_secs_f64()
    );
    assert!(rss < 512 << 10, "peak RSS {rss} KiB");
}

#[test]
fn a_huge_manifest_is_refused_by_its_size_before_it_is_read() {
    let fx = Fixture::new();
    small_image(&fx, "huge/os:v1");
    let layer = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": format!("sha256:{}", "a".repeat(64)), "size": 1
    });
    let many_layers = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": layer.clone(),
        "layers": vec![layer; 100_000],
    }))
    .unwrap();
    // 100 MB: a manifest whose annotation is padding.
    let mut padded = br#"{"schemaVersion":2,"annotations":{"pad":""#.to_vec();
    padded.resize(100_000_000 - 3, b'x');
    padded.extend_from_slice(br#""}}"#);
    for (case, body) in [("100,000 layers", many_layers), ("100 MB", padded)] {
        let size = body.len();
        let proxy = HostileProxy::start(
            &fx.reg,
            "/manifests/v1",
            Misbehavior::Replace {
                content_type: "application/vnd.oci.image.manifest.v1+json".into(),
                body: Arc::new(body),
            },
        );
        let state = installed(&fx, &format!("huge-{size}"));
        let before = hash_tree(&state);
        let started = Instant::now();
        let (out, rss) = upgrade(&fx, &state, &proxy.image_ref("huge/os:v1"), &[]);
        assert_fails(
            &out,
            3,
            &format!("is {size} bytes, more than the 4194304 bytes accepted"),
        );
        assert_eq!(proxy.hits(), 1, "{case}: not retried");
        assert_unchanged(&state, &before, case);
        // Never read into memory: clb's peak stays far below the manifest's size.
        report(
            &format!("a manifest of {case} ({size} bytes)"),
            rss,
            started.elapsed(),
        );
    }
}
