//! Netboot in QEMU (TCG), issue 3 test 8(e): the test OS is published as native SquashFS
//! layers (`clb push --format squashfs`) to a local registry, copied to an OCI layout with
//! `skopeo copy`, and an extra optional layer (absent from the layout) is added to the
//! manifest. A tiny static HTTP server on 127.0.0.1 serves the layout; the guest reaches it
//! only through QEMU user networking with `restrict=on` and a `guestfwd` to 10.0.2.100:80.
//!
//! Boots: (1) `ip=dhcp clb.source=http://10.0.2.100/net/` with the pinned digest: the optional
//! layer is reported missing and the test OS runs; (2) a wrong `clb.digest`: one refusal line,
//! kernel panic; (3) a manifest whose missing layer is not optional: one error line, panic;
//! (4) `clb.source=file://CLBNET/` from an ext4 disk holding the same layout.
//!
//! Needs root, qemu-system-x86, busybox-static, docker-registry, skopeo, e2fsprogs and apt
//! access for the kernel (cached in /var/cache/clb-test-kernel). Missing prerequisites fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clb_testsupport::{Registry, require_tool, sha256_digest};
use clb_vm_tests::cmd::run;
use clb_vm_tests::fileserver::{CHUNKED_ABOVE, Server};
use clb_vm_tests::kit::{self, Kit};
use clb_vm_tests::qemu::{Qemu, error_lines, restricted_net_args};
use clb_vm_tests::testos::{self, test_os_line};
use serde_json::Value;

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const LAYER_MEDIA_TYPE: &str = "application/vnd.clb.layer.v1.squashfs";

/// The init: what the hook recorded of a netboot (mode, slot, skipped layers) and that the
/// base layer is there.
const INIT_NET: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
. /etc/clb-test-release
slot=$(cat /run/clb/booted_slot 2>/dev/null || echo none)
mode=none
for m in active passive recovery netboot; do [ -e /run/clb/${m}_mode ] && mode=$m; done
. /run/clb/initrd.env
echo "CLB-TEST-OS release=$RELEASE slot=$slot mode=$mode env_slot=$CLB_SLOT base=$(cat /etc/base-marker) skipped=$CLB_SKIPPED"
poweroff -f
"#;

/// The kit's busybox base with a marker file, and a top layer with [`INIT_NET`].
fn test_os(work: &Path) -> (PathBuf, PathBuf) {
    let base = work.join("net-base");
    let top = work.join("net-top");
    testos::base_layer(&base);
    std::fs::write(base.join("etc/base-marker"), "yes\n").unwrap();
    testos::top_layer_with_init(&top, "net1", INIT_NET);
    (base, top)
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// Write `manifest` as a blob of the layout (and optionally as the layout's image), return its
/// digest.
fn add_manifest(layout: &Path, manifest: &Value, make_index: bool) -> String {
    let bytes = serde_json::to_vec_pretty(manifest).unwrap();
    let digest = sha256_digest(&bytes);
    std::fs::write(blob_path(layout, &digest), &bytes).unwrap();
    if make_index {
        let index_path = layout.join("index.json");
        let mut index: Value =
            serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
        index["manifests"][0]["digest"] = Value::String(digest.clone());
        index["manifests"][0]["size"] = Value::from(bytes.len());
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    }
    digest
}

struct Published {
    layout: PathBuf,
    /// The manifest with the optional missing layer (the layout's image).
    digest: String,
    /// The same, with the missing layer not optional (`required.json`).
    required_digest: String,
    missing_layer: String,
    layer_digests: Vec<String>,
}

/// clb push → registry → skopeo copy → OCI layout; then the extra layer.
fn publish(kit: &Kit, work: &Path) -> Published {
    let reg = Registry::start_plain();
    let (base, top) = test_os(work);
    let image = reg.image_ref("net:v1");
    run(Command::new(&kit.clb)
        .args(["push", "--format", "squashfs"])
        .arg(&base)
        .arg(&top)
        .arg(&image));
    let layout = work.join("layout");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .args(reg.skopeo_src_flags())
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:v1", layout.display())));
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let pushed = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(blob_path(&layout, &pushed)).unwrap()).unwrap();
    let layers = manifest["layers"].as_array_mut().unwrap();
    assert_eq!(layers.len(), 2, "{layers:?}");
    for l in layers.iter() {
        assert_eq!(l["mediaType"], LAYER_MEDIA_TYPE, "{l}");
    }
    let layer_digests: Vec<String> = layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    // An optional layer (say, debugging tools) the server does not have.
    let absent = b"an optional layer nobody uploaded".to_vec();
    let missing_layer = sha256_digest(&absent);
    layers.push(serde_json::json!({
        "mediaType": LAYER_MEDIA_TYPE,
        "digest": missing_layer,
        "size": absent.len(),
        "annotations": { "dev.clb.layer.optional": "true" }
    }));
    let digest = add_manifest(&layout, &manifest, true);
    std::fs::write(
        layout.join("manifest.json"),
        std::fs::read(blob_path(&layout, &digest)).unwrap(),
    )
    .unwrap();
    manifest["layers"][2]["annotations"] = serde_json::json!({});
    let required_digest = add_manifest(&layout, &manifest, false);
    std::fs::write(
        layout.join("required.json"),
        std::fs::read(blob_path(&layout, &required_digest)).unwrap(),
    )
    .unwrap();
    Published {
        layout,
        digest,
        required_digest,
        missing_layer,
        layer_digests,
    }
}

/// Boot once with the given kernel options and extra QEMU arguments; returns the console.
fn boot(kit: &Kit, work: &Path, name: &str, append: &str, extra: &[String]) -> String {
    Qemu::direct(kit, append)
        .args(extra)
        .boot(work, name, BOOT_TIMEOUT)
        .console
}

#[test]
fn qemu_netboot_http_and_file() {
    require_tool("skopeo");
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    // virtio_net on top of the default modules: the guest's network card.
    let kit = kit::prepare_with(work, &["virtio_net"]);
    let p = publish(&kit, work);
    let server = Server::start(p.layout.clone());
    let net = restricted_net_args(server.port);
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_string();

    // (1) HTTP with DHCP, the layout form of clb.source: the optional layer is missing.
    let c = boot(
        &kit,
        work,
        "http",
        &format!(
            "ip=dhcp clb.source=http://10.0.2.100/net/ clb.digest={}",
            p.digest
        ),
        &net,
    );
    // slirp's DHCP offers no router when restrict=on: the server is on the link anyway.
    assert!(
        c.contains("clb-initrd: network: eth0 10.0.2.15/24 (dhcp)"),
        "{c}"
    );
    let skipped = format!(
        "clb-initrd: netboot: optional layer 3/3 {} missing, skipped (HTTP 404 for \
         http://10.0.2.100/net/blobs/sha256/{})",
        p.missing_layer,
        hex(&p.missing_layer)
    );
    assert!(c.contains(&skipped), "{c}");
    assert!(
        c.contains("clb-initrd: netboot: 2 layers (")
            && c.contains("from http://10.0.2.100/net/ in "),
        "{c}"
    );
    assert!(c.contains("clb-initrd: booting slot net ("), "{c}");
    let line = test_os_line(&c);
    assert_eq!(
        line,
        format!(
            "CLB-TEST-OS release=net1 slot=none mode=netboot env_slot=net base=yes skipped={}",
            p.missing_layer
        )
    );
    let reqs = server.requests();
    eprintln!("server log: {reqs:#?}");
    let mut want = vec![format!("200 /net/blobs/sha256/{} length", hex(&p.digest))];
    for d in &p.layer_digests {
        let size = std::fs::metadata(blob_path(&p.layout, d)).unwrap().len();
        let how = if size > CHUNKED_ABOVE as u64 {
            "chunked"
        } else {
            "length"
        };
        want.push(format!("200 /net/blobs/sha256/{} {how}", hex(d)));
    }
    want.push(format!("404 /net/blobs/sha256/{}", hex(&p.missing_layer)));
    assert_eq!(reqs, want, "one request each, 404 not retried");
    assert!(
        reqs.iter().any(|r| r.ends_with("chunked")) && reqs.iter().any(|r| r.ends_with("length")),
        "both body framings exercised: {reqs:?}"
    );

    // (2) A wrong pin (manifest file form, static address): refused, kernel panic.
    server.clear();
    let wrong = sha256_digest(b"not the manifest");
    let c = boot(
        &kit,
        work,
        "wrong-digest",
        &format!(
            "clb.ip=10.0.2.15/24:10.0.2.2 clb.source=http://10.0.2.100/net/manifest.json \
             clb.digest={wrong}"
        ),
        &net,
    );
    assert!(
        c.contains("clb-initrd: network: eth0 10.0.2.15/24 via 10.0.2.2 (static)"),
        "{c}"
    );
    let errors = error_lines(&c);
    assert_eq!(errors.len(), 1, "{c}");
    assert!(
        errors[0].contains(&format!(
            "clb-initrd: error: netboot: refusing to boot: http://10.0.2.100/net/manifest.json \
             has digest {}, expected {wrong}",
            p.digest
        )),
        "{c}"
    );
    assert!(c.contains("Kernel panic"), "{c}");
    assert!(!c.contains("CLB-TEST-OS"), "{c}");
    assert_eq!(
        server.requests(),
        vec!["200 /net/manifest.json length".to_string()],
        "no layer fetched"
    );

    // (3) The same missing layer, not optional: one error line, kernel panic.
    let c = boot(
        &kit,
        work,
        "required-missing",
        &format!(
            "ip=dhcp clb.source=http://10.0.2.100/net/required.json clb.digest={}",
            p.required_digest
        ),
        &net,
    );
    let errors = error_lines(&c);
    assert_eq!(errors.len(), 1, "{c}");
    assert!(
        errors[0].contains(&format!(
            "clb-initrd: error: netboot: layer 3/3 {} not available: HTTP 404",
            p.missing_layer
        )),
        "{c}"
    );
    assert!(
        c.contains("Kernel panic") && !c.contains("CLB-TEST-OS"),
        "{c}"
    );

    // (4) file://LABEL/: the same layout on an ext4 disk labelled CLBNET, no network.
    let disk = work.join("clbnet.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "CLBNET", "-d"])
        .arg(&p.layout)
        .arg(&disk)
        .arg("64M"));
    let c = boot(
        &kit,
        work,
        "file",
        &format!("clb.source=file://CLBNET/ clb.digest={}", p.digest),
        &[
            "-drive".into(),
            format!("file={},format=raw,if=virtio,readonly=on", disk.display()),
        ],
    );
    assert!(
        c.contains(&format!(
            "clb-initrd: netboot: optional layer 3/3 {} missing, skipped (file://CLBNET/blobs/sha256/{}: No such file or directory",
            p.missing_layer,
            hex(&p.missing_layer)
        )),
        "{c}"
    );
    testos::assert_test_os(
        &c,
        "CLB-TEST-OS release=net1 slot=none mode=netboot env_slot=net base=yes",
    );
}
