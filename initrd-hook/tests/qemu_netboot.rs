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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clb_testsupport::{Registry, require_tool, sha256_digest};
use serde_json::Value;

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const LAYER_MEDIA_TYPE: &str = "application/vnd.clb.layer.v1.squashfs";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> String {
    let printable = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {printable}: {e}"));
    assert!(
        out.status.success(),
        "{printable} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Kit {
    kernel: PathBuf,
    initrd: PathBuf,
    clb: PathBuf,
    busybox: PathBuf,
}

fn prepare(work: &Path) -> Kit {
    for tool in [
        "qemu-system-x86_64",
        "busybox",
        "docker-registry",
        "skopeo",
        "mkfs.ext4",
        "apt-get",
        "dpkg",
    ] {
        require_tool(tool);
    }
    let root = workspace();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo)
        .args(["build", "-q", "-p", "clb"])
        .current_dir(&root));
    let hook = run(&mut Command::new(root.join("initrd-hook/build-static.sh")));
    let hook = PathBuf::from(hook.trim());
    let kernel_out = run(&mut Command::new(root.join("tests/vm/fetch-kernel.sh")));
    let mut lines = kernel_out.lines();
    let kernel = PathBuf::from(lines.next().expect("vmlinuz line"));
    let modules_dir = PathBuf::from(lines.next().expect("modules line"));

    let initrd = work.join("initrd-net.img");
    let mut opts = clb_mkinitrd::MkinitrdOptions::new(&hook, &initrd);
    opts.modules_dir = Some(modules_dir);
    opts.add_modules(["virtio_net"]);
    let busybox = clb_mkinitrd::find_busybox().expect("a static busybox");
    opts.busybox = Some(busybox.clone());
    let stats = clb_mkinitrd::build(&opts).expect("mkinitrd");
    eprintln!(
        "initrd: {} modules {:?}, {} bytes",
        stats.modules.len(),
        stats.modules,
        stats.compressed_bytes
    );
    assert!(
        stats.modules.iter().any(|m| m == "virtio_net"),
        "{:?}",
        stats.modules
    );
    Kit {
        kernel,
        initrd,
        clb: root.join("target/debug/clb"),
        busybox: require_tool("busybox"),
    }
}

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

/// A busybox base layer and a top layer with /sbin/init and the release.
fn test_os(work: &Path, busybox: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let base = work.join("net-base");
    let top = work.join("net-top");
    for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::fs::copy(busybox, base.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "poweroff"] {
        std::os::unix::fs::symlink("busybox", base.join("bin").join(applet)).unwrap();
    }
    std::fs::write(base.join("etc/base-marker"), "yes\n").unwrap();
    std::fs::create_dir_all(top.join("sbin")).unwrap();
    std::fs::create_dir_all(top.join("etc")).unwrap();
    let init = top.join("sbin/init");
    std::fs::write(&init, INIT_NET).unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(top.join("etc/clb-test-release"), "RELEASE=net1\n").unwrap();
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
    let (base, top) = test_os(work, &kit.busybox);
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

/// A static file server for `root` under the URL prefix `/net/`: one thread per connection,
/// `Connection: close`, big files chunked, small ones with `Content-Length`. Records
/// "STATUS PATH" per request.
struct Server {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(root: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (root, log) = (root.clone(), log2.clone());
                std::thread::spawn(move || {
                    if let Err(e) = serve_one(conn, &root, &log) {
                        log.lock().unwrap().push(format!("ERR {e}"));
                    }
                });
            }
        });
        Server { port, log }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

fn serve_one(conn: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    r.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let file = path
        .strip_prefix("/net/")
        .filter(|p| !p.split('/').any(|c| c == ".." || c.is_empty()))
        .map(|p| root.join(p))
        .filter(|p| p.is_file());
    let mut w = std::io::BufWriter::new(conn);
    match file {
        None => {
            log.lock().unwrap().push(format!("404 {path}"));
            w.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n",
            )?;
        }
        Some(f) => {
            let mut data = Vec::new();
            std::fs::File::open(&f)?.read_to_end(&mut data)?;
            let chunked = data.len() > 64 * 1024;
            log.lock().unwrap().push(format!(
                "200 {path} {}",
                if chunked { "chunked" } else { "length" }
            ));
            if chunked {
                w.write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                )?;
                for c in data.chunks(20_000) {
                    write!(w, "{:x}\r\n", c.len())?;
                    w.write_all(c)?;
                    w.write_all(b"\r\n")?;
                }
                w.write_all(b"0\r\n\r\n")?;
            } else {
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len()
                )?;
                w.write_all(&data)?;
            }
        }
    }
    w.flush()
}

/// Boot once with the given kernel options and extra QEMU arguments; returns the console.
fn boot(kit: &Kit, work: &Path, name: &str, append: &str, extra: &[String]) -> String {
    let console = work.join(format!("console-{name}.log"));
    let _ = std::fs::remove_file(&console);
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-smp", "1", "-nodefaults"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&kit.kernel)
        .arg("-initrd")
        .arg(&kit.initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=5 loglevel=4 {append}"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64");
    let timed_out = loop {
        if child.try_wait().expect("wait qemu").is_some() {
            break false;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut qemu_err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut qemu_err);
    }
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    eprintln!(
        "---- boot {name}: {:.1} s ----\n{}",
        start.elapsed().as_secs_f64(),
        text.lines()
            .filter(|l| l.contains("clb-initrd")
                || l.contains("CLB-TEST-OS")
                || l.contains("panic"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !timed_out,
        "boot {name} hung (killed after {BOOT_TIMEOUT:?}):\n{text}\n{qemu_err}"
    );
    assert!(
        !text.is_empty(),
        "boot {name}: no console output; qemu said:\n{qemu_err}"
    );
    text
}

/// QEMU user networking that only reaches the test server: `restrict=on`, and 10.0.2.100:80
/// forwarded (a `busybox nc` per connection) to 127.0.0.1:port.
fn net_args(kit: &Kit, port: u16) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!(
            "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:{} nc 127.0.0.1 {port}",
            kit.busybox.display()
        ),
        "-device".into(),
        "virtio-net-pci,netdev=n0,romfile=".into(),
    ]
}

fn test_os_line(console: &str) -> &str {
    console
        .lines()
        .find(|l| l.starts_with("CLB-TEST-OS release="))
        .unwrap_or_else(|| panic!("the test OS did not report:\n{console}"))
}

fn error_lines(console: &str) -> Vec<&str> {
    console
        .lines()
        .filter(|l| l.contains("clb-initrd: error:"))
        .collect()
}

#[test]
fn qemu_netboot_http_and_file() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let kit = prepare(work);
    let p = publish(&kit, work);
    let server = Server::start(p.layout.clone());
    let net = net_args(&kit, server.port);
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
        let how = if size > 64 * 1024 {
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
    let line = test_os_line(&c);
    assert!(
        line.starts_with("CLB-TEST-OS release=net1 slot=none mode=netboot env_slot=net base=yes"),
        "{line}"
    );
}
