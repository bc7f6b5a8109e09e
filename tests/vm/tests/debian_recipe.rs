//! The Debian OS recipe (`packaging/os/debian/build`, docs/os-recipe.md) without a VM: it
//! builds (or finds in its cache) the base and kernel layers, publishes v1 and a v2 with extra
//! files and an enabled unit, and independent tools check what reached the registry:
//!
//! - `skopeo inspect --raw`: three native SquashFS layers each; v2 shares v1's base and kernel
//!   layer digests (an upgrade fetches one layer), and its release layer differs.
//! - `skopeo copy` to an OCI layout, `unsquashfs -lln` of each layer: base has systemd and no
//!   kernel, kernel has /boot/vmlinuz-*, the initrd and clb, and its deletions as overlayfs
//!   whiteouts (0/0 character devices); the release layer has the empty machine-id, the
//!   release file and the user's files.
//! - `lsinitramfs` of the initrd taken out of the pushed kernel layer: clb's hook and script.
//! - The three layers loop-mounted and stacked with overlayfs, as the initrd does: what the
//!   kernel layer deleted is gone, the machine-id is empty, the release is v2.
//! - Both publishing runs took base and kernel from the cache (the recipe's own "cache hit"
//!   lines).
//!
//! A second test checks the claim the recipe rests on with a small tree: an overlayfs upper
//! directory (whiteouts, an opaque directory) pushed as it is with `clb push --format squashfs`
//! means, stacked, what it meant under overlayfs.
//!
//! Needs root, debootstrap (installed by the recipe when missing) and the Debian archive apt
//! uses, skopeo, squashfs-tools (unsquashfs), squashfs-tools-ng, initramfs-tools-core
//! (lsinitramfs), attr, docker-registry, dpkg-dev. No QEMU.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clb_testsupport::{Registry, require_tool};
use clb_vm_tests::binaries::binaries;
use clb_vm_tests::cmd::run;
use clb_vm_tests::debian;

const SQUASHFS: &str = "application/vnd.clb.layer.v1.squashfs";

/// One `unsquashfs -lln` entry.
#[derive(Debug)]
struct Entry {
    mode: String,
    /// Size, or `major, minor` of a device.
    size: String,
    /// Path inside the layer, without `squashfs-root/`.
    path: String,
    /// A symlink's target.
    target: Option<String>,
}

fn list(blob: &Path) -> Vec<Entry> {
    run(Command::new("unsquashfs").arg("-lln").arg(blob))
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let at = t.iter().position(|w| w.starts_with("squashfs-root"))?;
            let path = t[at].strip_prefix("squashfs-root")?.trim_start_matches('/');
            Some(Entry {
                mode: t[0].to_string(),
                size: t[2..at - 2].join(" "),
                path: path.to_string(),
                target: (t.get(at + 1) == Some(&"->")).then(|| t[at + 2..].join(" ")),
            })
        })
        .collect()
}

fn find<'a>(entries: &'a [Entry], path: &str) -> Option<&'a Entry> {
    entries.iter().find(|e| e.path == path)
}

fn has_prefix(entries: &[Entry], prefix: &str) -> bool {
    entries.iter().any(|e| e.path.starts_with(prefix))
}

fn is_whiteout(e: &Entry) -> bool {
    e.mode.starts_with('c') && e.size.replace(' ', "") == "0,0"
}

/// `skopeo copy` of `image` into the OCI layout `layout`; returns the layer blobs, bottom first.
fn pull(reg: &Registry, image: &str, layout: &Path, manifest: &serde_json::Value) -> Vec<PathBuf> {
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .args(reg.skopeo_src_flags())
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:pulled", layout.display())));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap();
            layout
                .join("blobs/sha256")
                .join(d.strip_prefix("sha256:").unwrap())
        })
        .collect()
}

/// Runs `script` (sh) in a private mount namespace with `args` as $1...; its stdout.
fn in_namespace(script: &str, args: &[&Path]) -> String {
    run(Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-euc",
            script,
            "sh",
        ])
        .args(args))
}

/// KEY=VALUE lines as pairs.
fn facts(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fact<'a>(facts: &'a [(String, String)], key: &str) -> &'a str {
    facts
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} missing from {facts:?}"))
}

fn write(root: &Path, rel: &str, content: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// In the directory $1, mounts the layers $2 $3 $4 (bottom first) read-only and stacks them
/// like the initrd; prints facts. The mounts end with the namespace.
const STACK: &str = r#"
cd "$1"
mkdir base kernel release root
mount -o loop,ro "$2" base
mount -o loop,ro "$3" kernel
mount -o loop,ro "$4" release
mount -t overlay overlay -o lowerdir=release:kernel:base root
present() { if [ -e "$1" ] || [ -L "$1" ]; then echo present; else echo absent; fi; }
echo "status_old_base=$(present base/var/lib/dpkg/status-old)"
echo "status_old_stack=$(present root/var/lib/dpkg/status-old)"
echo "opaque=$(getfattr --only-values -n trusted.overlay.opaque kernel/etc/initramfs-tools)"
echo "initramfs_conf=$(present root/etc/initramfs-tools/initramfs.conf)"
echo "machine_id_size=$(stat -c %s root/etc/machine-id)"
echo "dbus_machine_id=$(readlink root/var/lib/dbus/machine-id)"
echo "release=$(cat root/etc/clb-release)"
echo "image_version=$(. root/usr/lib/os-release; echo "$IMAGE_VERSION")"
echo "hostname=$(cat root/etc/hostname)"
echo "locale=$(cat root/etc/locale.conf)"
echo "hello=$(readlink root/etc/systemd/system/multi-user.target.wants/clb-hello.service)"
echo "hello_script=$(stat -c %a root/usr/local/lib/clb-hello)"
echo "mark_good=$(ls root/usr/lib/systemd/system/*.wants/ root/etc/systemd/system/*.wants/ | grep -c '^clb-mark-good.service$')"
echo "init=$(readlink root/sbin/init)"
echo "clb=$(stat -c %a root/usr/bin/clb)"
echo "hook=$(stat -c %a root/usr/lib/clb/clb-initrd)"
echo "apt_lists=$(ls root/var/lib/apt/lists | grep -vc '^\(lock\|partial\|auxfiles\)$' || true)"
echo "debs=$(find root/var/cache/apt/archives -name '*.deb' | wc -l)"
echo "dev=$(ls -A root/dev | wc -l)"
"#;

#[test]
fn debian_recipe_publishes_layered_releases_from_its_cache() {
    for tool in [
        "skopeo",
        "unsquashfs",
        "lsinitramfs",
        "getfattr",
        "unshare",
        "docker-registry",
        "dpkg-deb",
    ] {
        require_tool(tool);
    }
    debian::require_root();

    // Errors are one line with the reason.
    let out = Command::new(debian::script())
        .arg("--bogus")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "debian-recipe: error: unknown argument '--bogus' (see --help)\n"
    );

    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let recipe = debian::Recipe::prepare(work);
    let version = recipe.kernel_version();
    assert!(version.ends_with("-amd64"), "{version}");
    let reg = Registry::start_plain();

    let extra = work.join("extra");
    write(
        &extra,
        "etc/systemd/system/clb-hello.service",
        "[Unit]\nDescription=clb test unit\n\n[Service]\nType=oneshot\n\
         ExecStart=/usr/local/lib/clb-hello\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    write(
        &extra,
        "usr/local/lib/clb-hello",
        "#!/bin/sh\necho hello\n",
        0o755,
    );
    // The release directory's own mode must not reach the image's / (a temp dir is 0700).
    std::fs::set_permissions(&extra, std::fs::Permissions::from_mode(0o700)).unwrap();

    let v1 = recipe.publish_as(&reg, "debian:v1", "v1", &[], &[]);
    let v2 = recipe.publish_as(&reg, "debian:v2", "v2", &[&extra], &["clb-hello.service"]);
    for run in [&v1, &v2] {
        assert!(
            run.cache_hit("base") && run.cache_hit("kernel"),
            "a run after prepare() takes base and kernel from the cache:\n{}",
            run.log
        );
    }
    eprintln!(
        "timings: prepare {:.0} s (base {}, kernel {}), publish v1 {:.0} s, v2 {:.0} s",
        recipe.prepared.seconds,
        if recipe.prepared.cache_hit("base") {
            "cached"
        } else {
            "built"
        },
        if recipe.prepared.cache_hit("kernel") {
            "cached"
        } else {
            "built"
        },
        v1.seconds,
        v2.seconds
    );

    // The manifests: three SquashFS layers; v2 differs from v1 only in its release layer.
    let m1 = reg.skopeo_inspect("debian:v1", true).unwrap();
    let m2 = reg.skopeo_inspect("debian:v2", true).unwrap();
    let layers = |m: &serde_json::Value| -> Vec<(String, String, u64)> {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["mediaType"].as_str().unwrap().to_string(),
                    l["digest"].as_str().unwrap().to_string(),
                    l["size"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let (l1, l2) = (layers(&m1), layers(&m2));
    assert_eq!(l1.len(), 3, "base, kernel, release: {m1}");
    assert!(l1.iter().chain(&l2).all(|l| l.0 == SQUASHFS), "{m1}\n{m2}");
    assert_eq!(l1[..2], l2[..2], "v2 shares v1's base and kernel layers");
    assert_ne!(l1[2].1, l2[2].1, "each release has its own top layer");
    assert!(
        l2[2].2 < 64 * 1024,
        "the release layer is small: {:?}",
        l2[2]
    );
    let inspected = reg.skopeo_inspect("debian:v2", false).unwrap();
    assert_eq!(
        inspected["Digest"].as_str(),
        v2.digest.as_deref(),
        "the recipe reports the digest the registry serves"
    );

    let layout = work.join("layout");
    let blobs = pull(&reg, &reg.image_ref("debian:v2"), &layout, &m2);

    // The layers, listed by unsquashfs.
    let base = list(&blobs[0]);
    assert!(
        find(&base, "usr/lib/systemd/systemd").is_some(),
        "systemd in base"
    );
    assert!(
        find(&base, "usr/bin/tar2sqfs").is_some(),
        "clb's dependencies in base"
    );
    assert!(!has_prefix(&base, "boot/vmlinuz"), "no kernel in base");
    assert!(
        !has_prefix(&base, "usr/lib/modules/"),
        "no kernel modules in base"
    );
    assert!(
        !has_prefix(&base, "var/lib/apt/lists/deb"),
        "no apt lists in base"
    );
    assert_eq!(find(&base, "etc/machine-id").unwrap().size, "0");

    let kernel = list(&blobs[1]);
    let vmlinuz = format!("boot/vmlinuz-{version}");
    let initrd = format!("boot/initrd.img-{version}");
    assert!(
        find(&kernel, &vmlinuz).is_some(),
        "{vmlinuz} in the kernel layer"
    );
    assert!(
        find(&kernel, &initrd).is_some(),
        "{initrd} in the kernel layer"
    );
    assert!(has_prefix(
        &kernel,
        &format!("usr/lib/modules/{version}/kernel/")
    ));
    assert!(find(&kernel, "usr/bin/clb").is_some(), "clb installed");
    assert!(
        find(&kernel, "usr/lib/clb/clb-initrd").is_some(),
        "the hook installed"
    );
    let whiteouts: Vec<&str> = kernel
        .iter()
        .filter(|e| is_whiteout(e))
        .map(|e| e.path.as_str())
        .collect();
    assert!(
        whiteouts.contains(&"var/lib/dpkg/status-old"),
        "the kernel layer's deletions are overlayfs whiteouts in the pushed layer: {whiteouts:?}"
    );

    let release = list(&blobs[2]);
    assert_eq!(find(&release, "etc/machine-id").unwrap().size, "0");
    assert!(find(&release, "etc/clb-release").is_some());
    assert!(find(&release, "etc/systemd/system/clb-hello.service").is_some());
    assert_eq!(
        find(
            &release,
            "etc/systemd/system/multi-user.target.wants/clb-hello.service"
        )
        .and_then(|e| e.target.clone())
        .as_deref(),
        Some("/etc/systemd/system/clb-hello.service")
    );
    assert!(
        !release
            .iter()
            .any(|e| e.path.starts_with("usr/lib/modules")),
        "the release layer holds only the release"
    );

    // The image's own initrd, out of the pushed kernel layer: clb's initramfs-tools hook.
    let boot = work.join("kernel-boot");
    run(Command::new("unsquashfs")
        .args(["-q", "-d"])
        .arg(&boot)
        .arg(&blobs[1])
        .arg(&initrd));
    let files = run(Command::new("lsinitramfs").arg(boot.join(&initrd)));
    for want in ["usr/lib/clb/clb-initrd", "scripts/clb"] {
        assert!(
            files.lines().any(|l| l == want),
            "{want} missing from {initrd}:\n{files}"
        );
    }
    assert!(
        files
            .lines()
            .any(|l| l.ends_with("/squashfs.ko") || l.ends_with("/overlay.ko")),
        "the hook's modules are in the initrd"
    );

    // The stack, as the initrd builds it.
    let root_mode = run(Command::new("stat").args(["-c", "%a"]).arg(&v2.release));
    assert_eq!(root_mode.trim(), "755", "the release layer's root");
    let stack = work.join("stack");
    std::fs::create_dir(&stack).unwrap();
    let f = facts(&in_namespace(
        STACK,
        &[&stack, &blobs[0], &blobs[1], &blobs[2]],
    ));
    eprintln!("stack: {f:?}");
    for (key, want) in [
        ("status_old_base", "present"),
        ("status_old_stack", "absent"),
        ("opaque", "y"),
        ("initramfs_conf", "present"),
        ("machine_id_size", "0"),
        ("dbus_machine_id", "/etc/machine-id"),
        ("release", "v2"),
        ("image_version", "v2"),
        ("hostname", "clb-debian"),
        ("locale", "LANG=C.UTF-8"),
        ("hello", "/etc/systemd/system/clb-hello.service"),
        ("hello_script", "755"),
        ("mark_good", "1"),
        ("init", "/lib/systemd/systemd"),
        ("clb", "755"),
        ("hook", "755"),
        ("apt_lists", "0"),
        ("debs", "0"),
        ("dev", "0"),
    ] {
        assert_eq!(fact(&f, key), want, "{key}: {f:?}");
    }
}

/// What the recipe relies on: the upper directory of an overlayfs (a whiteout for a deleted
/// file, an opaque directory for a directory deleted and made again) pushed as it is is a
/// layer that means, stacked, what it meant under overlayfs.
#[test]
fn an_overlayfs_upper_dir_is_a_squashfs_layer_as_it_is() {
    for tool in [
        "skopeo",
        "unsquashfs",
        "unshare",
        "docker-registry",
        "tar2sqfs",
    ] {
        require_tool(tool);
    }
    debian::require_root();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let (lower, upper) = (work.join("lower"), work.join("upper"));
    write(&lower, "gone", "lower\n", 0o644);
    write(&lower, "also-gone", "lower\n", 0o644);
    write(&lower, "dir/old", "lower\n", 0o644);
    write(&lower, "kept", "lower\n", 0o644);
    in_namespace(
        r#"
        mkdir -p "$2" "$3" "$4"
        mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3,redirect_dir=off,metacopy=off,index=off" "$4"
        rm "$4/gone" "$4/also-gone"
        rm -r "$4/dir"
        mkdir "$4/dir"
        echo upper > "$4/dir/new"
        umount "$4"
        "#,
        &[&lower, &upper, &work.join("ovl-work"), &work.join("merged")],
    );

    let reg = Registry::start_plain();
    let image = reg.image_ref("upper:v1");
    run(Command::new(&binaries().clb)
        .args(["-q", "push", "--format", "squashfs"])
        .arg(&lower)
        .arg(&upper)
        .arg(&image));
    let m = reg.skopeo_inspect("upper:v1", true).unwrap();
    let blobs = pull(&reg, &image, &work.join("layout"), &m);
    let top = list(&blobs[1]);
    for gone in ["gone", "also-gone"] {
        // overlayfs links its whiteouts to one inode: hard links in the layer, still 0/0.
        assert!(
            find(&top, gone).is_some_and(is_whiteout),
            "{gone} is a whiteout: {top:?}"
        );
    }
    let f = facts(&in_namespace(
        r#"
        mkdir -p "$1" && cd "$1"
        mkdir l0 l1 root
        mount -o loop,ro "$2" l0
        mount -o loop,ro "$3" l1
        mount -t overlay overlay -o lowerdir=l1:l0 root
        echo "files=$(cd root && find . | sort | tr '\n' ' ')"
        echo "opaque=$(getfattr --only-values -n trusted.overlay.opaque l1/dir)"
        "#,
        &[&work.join("stack"), &blobs[0], &blobs[1]],
    ));
    assert_eq!(fact(&f, "files"), ". ./dir ./dir/new ./kept ");
    assert_eq!(fact(&f, "opaque"), "y");
}
