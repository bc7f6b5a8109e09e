//! Netboot (`clb.source=`, see docs/boot.md): fetch a layer-set manifest pinned by
//! `clb.digest=`, fetch its SquashFS layers into a tmpfs (checking each digest), and stack
//! them like a slot's layers. No COS_STATE and no boot counting: the "slot" is `net`.
//!
//! The manifest is an OCI image manifest whose layers have the media type
//! `application/vnd.clb.layer.v1.squashfs` (what `clb push --format squashfs` publishes);
//! blobs are read from `<base>/blobs/sha256/<hex>`, the OCI image-layout path, so a static
//! file server over an OCI layout directory (`skopeo copy ... oci:DIR`) is a netboot server.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::mount::{MountFlags, mount};
use sha2::{Digest, Sha256};

use crate::cmdline::{Config, IpSetting, Source};
use crate::http::{self, HttpError, Url};
use crate::mounts::{self, PRIVATE_DIR};
use crate::record::{self, Booted, NET_SLOT, RECORD_DIR};
use crate::{Fatal, network, say};

/// Media type of a native clb layer (the blob is a SquashFS image).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.clb.layer.v1.squashfs";
/// Layer annotation: `"true"` = the boot goes on without this layer when it is missing.
pub const OPTIONAL_ANNOTATION: &str = "dev.clb.layer.optional";

const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Transfers (connection or server errors, not 4xx) are tried this often, 1, 2, 4 s apart.
const ATTEMPTS: u32 = 4;
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// One layer of the manifest, bottom to top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub digest: String,
    pub size: u64,
    pub optional: bool,
}

/// Parse the layer-set manifest (an OCI image manifest of clb SquashFS layers).
pub fn parse_manifest(bytes: &[u8]) -> Result<Vec<LayerRef>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let media = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    if media.contains("index") || media.contains("manifest.list") || v.get("manifests").is_some() {
        return Err("is an image index; pin the digest of the image manifest itself".into());
    }
    if v.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
        return Err("not an OCI image manifest (schemaVersion 2)".into());
    }
    let layers = v
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or("no layers array")?;
    if layers.is_empty() {
        return Err("lists no layers".into());
    }
    let mut out = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let digest = l
            .get("digest")
            .and_then(|d| d.as_str())
            .filter(|d| valid_digest(d))
            .ok_or_else(|| format!("layer {i}: missing or bad sha256 digest"))?;
        let size = l
            .get("size")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| format!("layer {i}: missing size"))?;
        let mt = l.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
        if mt != LAYER_MEDIA_TYPE {
            return Err(format!(
                "layer {digest} has media type {mt:?}: netboot needs {LAYER_MEDIA_TYPE} layers \
                 (clb push --format squashfs, clb convert)"
            ));
        }
        let optional = l
            .get("annotations")
            .and_then(|a| a.get(OPTIONAL_ANNOTATION))
            .and_then(|o| o.as_str())
            == Some("true");
        out.push(LayerRef {
            digest: digest.to_string(),
            size,
            optional,
        });
    }
    Ok(out)
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Where the manifest and the blobs are, as absolute paths on the server or filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Ends with `/`; blobs are `<base>blobs/sha256/<hex>`.
    pub base: String,
    pub manifest: String,
}

/// `PATH/` (ending in a slash) is an OCI layout: the manifest is the blob named by the pinned
/// digest. Any other path is the manifest file itself; the blobs are next to it (or, when it
/// sits in `.../blobs/sha256/`, in that layout).
pub fn locate(path: &str, digest: &str) -> Location {
    if path.ends_with('/') {
        return Location {
            base: path.to_string(),
            manifest: format!("{path}blobs/sha256/{}", hex_of(digest)),
        };
    }
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    let base = dir.strip_suffix("blobs/sha256/").unwrap_or(dir);
    Location {
        base: if base.is_empty() { "/" } else { base }.to_string(),
        manifest: path.to_string(),
    }
}

impl Location {
    pub fn blob(&self, digest: &str) -> String {
        format!("{}blobs/sha256/{}", self.base, hex_of(digest))
    }
}

/// Why a fetch did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Not there (HTTP 4xx, no such file): not retried.
    Missing(String),
    /// Transfer failed (after the retries).
    Failed(String),
    /// Wrong content: never accepted, never retried.
    Mismatch(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Missing(s) | FetchError::Failed(s) | FetchError::Mismatch(s) => {
                f.write_str(s)
            }
        }
    }
}

/// Reads files of a netboot source.
pub trait Fetcher {
    /// Stream `path` into `sink`; returns its size.
    fn fetch(&self, path: &str, sink: &mut dyn Write) -> Result<u64, FetchError>;
    /// `path` as the user would write it (for messages).
    fn describe(&self, path: &str) -> String;
}

pub struct HttpFetcher {
    pub server: Url,
}

impl Fetcher for HttpFetcher {
    fn fetch(&self, path: &str, sink: &mut dyn Write) -> Result<u64, FetchError> {
        let url = self.server.with_path(path);
        http::get(&url, sink, HTTP_TIMEOUT).map_err(|e| match e {
            HttpError::Status(s) if (400..500).contains(&s) => {
                FetchError::Missing(format!("HTTP {s} for {url}"))
            }
            HttpError::Status(s) => FetchError::Failed(format!("HTTP {s} for {url}")),
            HttpError::Io(e) => FetchError::Failed(e),
        })
    }
    fn describe(&self, path: &str) -> String {
        self.server.with_path(path).to_string()
    }
}

pub struct FileFetcher {
    /// Where the source's `/` is (a mounted filesystem, or `/`).
    pub root: PathBuf,
    /// `file://LABEL` prefix for messages.
    pub shown: String,
}

impl Fetcher for FileFetcher {
    fn fetch(&self, path: &str, sink: &mut dyn Write) -> Result<u64, FetchError> {
        let p = self.root.join(path.trim_start_matches('/'));
        let mut f = File::open(&p).map_err(|e| {
            let msg = format!("{}: {e}", self.describe(path));
            if e.kind() == std::io::ErrorKind::NotFound {
                FetchError::Missing(msg)
            } else {
                FetchError::Failed(msg)
            }
        })?;
        std::io::copy(&mut f, sink)
            .map_err(|e| FetchError::Failed(format!("{}: {e}", self.describe(path))))
    }
    fn describe(&self, path: &str) -> String {
        format!("{}{path}", self.shown)
    }
}

/// Hashes what goes through and refuses more than `limit` bytes.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    n: u64,
    limit: u64,
    /// The source had more than `limit` bytes.
    overflow: bool,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.n + buf.len() as u64 > self.limit {
            self.overflow = true;
            return Err(std::io::Error::other(format!(
                "more than the expected {} bytes",
                self.limit
            )));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Fetch `path` into a fresh sink from `open` (once per attempt) and check its digest (and
/// size, when known). Missing files and wrong content are not retried.
pub fn fetch_verified<W: Write>(
    src: &dyn Fetcher,
    path: &str,
    digest: &str,
    size: Option<u64>,
    open: &mut dyn FnMut() -> Result<W, FetchError>,
    backoff: Duration,
) -> Result<W, FetchError> {
    let mut last = FetchError::Failed(format!("{}: not tried", src.describe(path)));
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(backoff * (1 << (attempt - 1)));
        }
        let mut w = HashWriter {
            inner: open()?,
            hasher: Sha256::new(),
            n: 0,
            limit: size.unwrap_or(MAX_MANIFEST_BYTES),
            overflow: false,
        };
        let result = src.fetch(path, &mut w);
        if w.overflow {
            return Err(FetchError::Mismatch(match size {
                Some(want) => format!(
                    "{} is more than the {want} bytes the manifest says",
                    src.describe(path)
                ),
                None => format!(
                    "{} is larger than {MAX_MANIFEST_BYTES} bytes",
                    src.describe(path)
                ),
            }));
        }
        match result.and_then(|n| {
            w.flush()
                .map(|()| n)
                .map_err(|e| FetchError::Failed(format!("{}: {e}", src.describe(path))))
        }) {
            Ok(n) => {
                if let Some(want) = size.filter(|want| *want != n) {
                    return Err(FetchError::Mismatch(format!(
                        "{} is {n} bytes, the manifest says {want}",
                        src.describe(path)
                    )));
                }
                let got = format!("sha256:{:x}", w.hasher.finalize());
                if got != digest {
                    return Err(FetchError::Mismatch(format!(
                        "{} has digest {got}, expected {digest}",
                        src.describe(path)
                    )));
                }
                return Ok(w.inner);
            }
            Err(e @ FetchError::Missing(_)) | Err(e @ FetchError::Mismatch(_)) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What a netboot fetched.
#[derive(Debug)]
pub struct Fetched {
    /// Layer files, bottom to top.
    pub files: Vec<PathBuf>,
    /// Digests of the optional layers that were not available.
    pub skipped: Vec<String>,
    pub bytes: u64,
}

/// Fetch and check the manifest, then every layer into `dir`.
pub fn fetch_all(
    src: &dyn Fetcher,
    loc: &Location,
    digest: &str,
    dir: &Path,
    backoff: Duration,
    debug: bool,
) -> Result<Fetched, Fatal> {
    let manifest = fetch_verified(
        src,
        &loc.manifest,
        digest,
        None,
        &mut || Ok(Vec::new()),
        backoff,
    )
    .map_err(|e| match e {
        FetchError::Mismatch(m) => Fatal(format!(
            "netboot: refusing to boot: {m} (clb.digest); the manifest is not the pinned one"
        )),
        other => Fatal(format!("netboot: cannot fetch the manifest: {other}")),
    })?;
    let what = src.describe(&loc.manifest);
    let layers =
        parse_manifest(&manifest).map_err(|e| Fatal(format!("netboot: manifest {what}: {e}")))?;
    write_file(&dir.join("manifest.json"), &manifest)?;
    let total = layers.len();
    let mut fetched = Fetched {
        files: Vec::new(),
        skipped: Vec::new(),
        bytes: 0,
    };
    for (i, layer) in layers.iter().enumerate() {
        let file = dir.join(format!("sha256-{}.squashfs", hex_of(&layer.digest)));
        let started = Instant::now();
        let result = fetch_verified(
            src,
            &loc.blob(&layer.digest),
            &layer.digest,
            Some(layer.size),
            &mut || {
                File::create(&file)
                    .map(BufWriter::new)
                    .map_err(|e| FetchError::Failed(format!("create {}: {e}", file.display())))
            },
            backoff,
        );
        match result {
            Ok(_) => {
                if debug {
                    say(format_args!(
                        "netboot: layer {}/{total} {} ({} bytes) in {} ms",
                        i + 1,
                        layer.digest,
                        layer.size,
                        started.elapsed().as_millis()
                    ));
                }
                fetched.bytes += layer.size;
                fetched.files.push(file);
            }
            Err(FetchError::Mismatch(m)) => {
                let _ = std::fs::remove_file(&file);
                return Err(Fatal(format!(
                    "netboot: layer {}/{total} {}: {m}",
                    i + 1,
                    layer.digest
                )));
            }
            Err(e) if layer.optional => {
                let _ = std::fs::remove_file(&file);
                say(format_args!(
                    "netboot: optional layer {}/{total} {} missing, skipped ({e})",
                    i + 1,
                    layer.digest
                ));
                fetched.skipped.push(layer.digest.clone());
            }
            Err(e) => {
                let _ = std::fs::remove_file(&file);
                return Err(Fatal(format!(
                    "netboot: layer {}/{total} {} not available: {e}",
                    i + 1,
                    layer.digest
                )));
            }
        }
    }
    if fetched.files.is_empty() {
        return Err(Fatal(format!(
            "netboot: manifest {what}: no layer could be fetched"
        )));
    }
    Ok(fetched)
}

fn write_file(p: &Path, bytes: &[u8]) -> Result<(), Fatal> {
    std::fs::write(p, bytes).map_err(|e| Fatal(format!("write {}: {e}", p.display())))
}

/// The netboot counterpart of `assemble::assemble`.
pub fn assemble(
    cfg: &Config,
    source: &Source,
    digest: &str,
    sysroot: &Path,
) -> Result<Booted, Fatal> {
    let private = PathBuf::from(PRIVATE_DIR);
    let started = Instant::now();
    // RAM for the layers (tmpfs default size: half the memory).
    let net = private.join("net");
    mounts::mkdir(&net)?;
    mount(
        "tmpfs",
        &net,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=0700"),
    )
    .map_err(|e| Fatal(format!("mount tmpfs on {}: {e}", net.display())))?;

    let (fetcher, path): (Box<dyn Fetcher>, &str) = match source {
        Source::Http(url) => {
            let setting = cfg.ip.or_else(|| {
                (cfg.kernel_ip_dhcp && std::process::id() == 1).then_some(IpSetting::Dhcp)
            });
            match setting {
                Some(s) => network::configure(s, cfg.netif.as_deref(), cfg.timeout, &private)?,
                None => say(format_args!(
                    "netboot: no clb.ip= or ip=dhcp: using the network as it is"
                )),
            }
            (
                Box::new(HttpFetcher {
                    server: url.clone(),
                }),
                url.path.as_str(),
            )
        }
        Source::File { label, path } => {
            let root = match label {
                Some(label) => {
                    let dev = mounts::wait_for_label(label, cfg.timeout)?;
                    let dir = private.join("source");
                    mounts::mount_device(&dev, &dir, MountFlags::RDONLY, label)?;
                    dir
                }
                None => PathBuf::from("/"),
            };
            let shown = format!("file://{}", label.as_deref().unwrap_or(""));
            (Box::new(FileFetcher { root, shown }), path.as_str())
        }
    };
    let loc = locate(path, digest);
    let fetched = fetch_all(
        fetcher.as_ref(),
        &loc,
        digest,
        &net,
        Duration::from_secs(1),
        cfg.debug,
    )?;
    say(format_args!(
        "netboot: {} layers ({} bytes) from {source} in {} ms{}",
        fetched.files.len(),
        fetched.bytes,
        started.elapsed().as_millis(),
        if fetched.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} optional skipped", fetched.skipped.len())
        }
    ));

    mounts::stack_layers(cfg, &fetched.files, sysroot)?;
    mounts::mount_oem_and_persistent(cfg, sysroot, false)?;
    record::write_netboot_record(
        Path::new(RECORD_DIR),
        source,
        digest,
        &fetched.files,
        &fetched.skipped,
    )?;
    Ok(Booted {
        slot: NET_SLOT.into(),
        image: format!("{source} {digest}"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sha(data: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(data))
    }

    fn manifest(layers: &[(&[u8], bool)], missing_extra: bool) -> Vec<u8> {
        let mut ls: Vec<serde_json::Value> = layers
            .iter()
            .map(|(d, opt)| {
                let mut l = serde_json::json!({
                    "mediaType": LAYER_MEDIA_TYPE, "digest": sha(d), "size": d.len()
                });
                if *opt {
                    l["annotations"] = serde_json::json!({ OPTIONAL_ANNOTATION: "true" });
                }
                l
            })
            .collect();
        if missing_extra {
            ls.push(serde_json::json!({
                "mediaType": LAYER_MEDIA_TYPE, "digest": sha(b"absent"), "size": 6,
                "annotations": { OPTIONAL_ANNOTATION: "true" }
            }));
        }
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(b"{}"), "size": 2},
            "layers": ls
        }))
        .unwrap()
    }

    /// An OCI layout with the manifest and the given blobs.
    fn layout(dir: &Path, manifest: &[u8], blobs: &[&[u8]]) -> String {
        let b = dir.join("blobs/sha256");
        std::fs::create_dir_all(&b).unwrap();
        for blob in blobs.iter().chain([&manifest]) {
            std::fs::write(b.join(hex_of(&sha(blob))), blob).unwrap();
        }
        std::fs::write(dir.join("manifest.json"), manifest).unwrap();
        sha(manifest)
    }

    #[test]
    fn locations() {
        let d = sha(b"m");
        let h = hex_of(&d).to_string();
        assert_eq!(
            locate("/net/", &d),
            Location {
                base: "/net/".into(),
                manifest: format!("/net/blobs/sha256/{h}")
            }
        );
        assert_eq!(locate("/net/manifest.json", &d).base, "/net/");
        assert_eq!(locate(&format!("/net/blobs/sha256/{h}"), &d).base, "/net/");
        assert_eq!(locate("/m.json", &d).base, "/");
        assert_eq!(locate("/", &d).blob(&d), format!("/blobs/sha256/{h}"));
    }

    #[test]
    fn manifests() {
        let m = manifest(&[(b"one", false), (b"two", true)], false);
        let l = parse_manifest(&m).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].digest, sha(b"one"));
        assert!(!l[0].optional && l[1].optional);
        assert_eq!(l[1].size, 3);
        let tar = br#"{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1}]}"#;
        assert!(
            parse_manifest(tar)
                .unwrap_err()
                .contains("--format squashfs")
        );
        let idx = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(parse_manifest(idx).unwrap_err().contains("image index"));
        assert!(parse_manifest(b"{").is_err());
        assert!(parse_manifest(br#"{"schemaVersion":2,"layers":[]}"#).is_err());
    }

    #[test]
    fn fetches_from_a_file_layout_skipping_optional_layers() {
        let dir = tempfile::tempdir().unwrap();
        let src_dir = dir.path().join("src");
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let m = manifest(&[(b"bottom", false), (b"top", false)], true);
        let d = layout(&src_dir, &m, &[b"bottom", b"top"]);
        let f = FileFetcher {
            root: src_dir.clone(),
            shown: "file://T".into(),
        };
        let got = fetch_all(&f, &locate("/", &d), &d, &out, Duration::ZERO, false).unwrap();
        assert_eq!(got.files.len(), 2);
        assert_eq!(std::fs::read(&got.files[1]).unwrap(), b"top");
        assert_eq!(got.skipped, vec![sha(b"absent")]);
        assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), m);
        // The same through the manifest file's path.
        let got = fetch_all(
            &f,
            &locate("/manifest.json", &d),
            &d,
            &out,
            Duration::ZERO,
            false,
        )
        .unwrap();
        assert_eq!(got.files.len(), 2);

        // A wrong pin: refused.
        let wrong = sha(b"other");
        let e = fetch_all(
            &f,
            &locate("/manifest.json", &wrong),
            &wrong,
            &out,
            Duration::ZERO,
            false,
        )
        .unwrap_err();
        assert!(e.0.starts_with("netboot: refusing to boot: file://T/manifest.json has digest"));

        // A required layer missing, then a corrupt one.
        std::fs::remove_file(src_dir.join("blobs/sha256").join(hex_of(&sha(b"top")))).unwrap();
        let e = fetch_all(&f, &locate("/", &d), &d, &out, Duration::ZERO, false).unwrap_err();
        assert!(
            e.0.contains("layer 2/3") && e.0.contains("not available"),
            "{e}"
        );
        std::fs::write(
            src_dir.join("blobs/sha256").join(hex_of(&sha(b"top"))),
            b"toq",
        )
        .unwrap();
        let e = fetch_all(&f, &locate("/", &d), &d, &out, Duration::ZERO, false).unwrap_err();
        assert!(
            e.0.contains("has digest") && e.0.contains("expected"),
            "{e}"
        );
        std::fs::write(
            src_dir.join("blobs/sha256").join(hex_of(&sha(b"top"))),
            b"tops",
        )
        .unwrap();
        let e = fetch_all(&f, &locate("/", &d), &d, &out, Duration::ZERO, false).unwrap_err();
        assert!(
            e.0.contains("more than the 3 bytes the manifest says"),
            "{e}"
        );
    }

    #[test]
    fn http_retries_server_errors_but_not_404() {
        let body = b"layer!".to_vec();
        let d = sha(&body);
        let ok = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        let mut ok = ok.into_bytes();
        ok.extend_from_slice(&body);
        let (url, h) = crate::http::tests::serve(vec![
            b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nla".to_vec(),
            ok,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ]);
        let f = HttpFetcher { server: url };
        let got = fetch_verified(
            &f,
            "/b",
            &d,
            Some(6),
            &mut || Ok(Vec::new()),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(got, body);
        let e = fetch_verified(
            &f,
            "/c",
            &d,
            Some(6),
            &mut || Ok(Vec::new()),
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(
            matches!(&e, FetchError::Missing(m) if m.contains("HTTP 404")),
            "{e:?}"
        );
        assert_eq!(
            h.join().unwrap().len(),
            4,
            "3 tries, then one 404 without retry"
        );
    }
}
