//! A real Debian 12 OS for the tests, built by the OS recipe users run
//! (`packaging/os/debian/build`, docs/os-recipe.md): the base layer (debootstrap) and the kernel
//! layer (linux-image, initramfs-tools, the clb .deb) are built once and cached in
//! `CLB_OS_CACHE` (default `/var/cache/clb/os`) across test runs; each release is a small top
//! layer published on top of them, so releases share the base and kernel layer digests and an
//! upgrade between them fetches one layer.
//!
//! ```no_run
//! # use clb_vm_tests::debian;
//! # let (work, reg) = (std::path::Path::new("/tmp/w"), clb_testsupport::Registry::start_plain());
//! let recipe = debian::Recipe::prepare(work);
//! let v1 = recipe.publish(&reg, "v1", &[], &[]);
//! ```
//!
//! The clb package is built once per test process with `scripts/package` (dev profile), or
//! taken from `CLB_TEST_DEB`. Needs root, debootstrap (the recipe installs it with apt when
//! missing) and the Debian archive this machine's apt uses (or `CLB_DEBIAN_MIRROR`).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use clb_testsupport::Registry;

use crate::binaries::binaries;
use crate::cmd::{run, workspace};

/// The recipe's entry point.
pub fn script() -> PathBuf {
    workspace().join("packaging/os/debian/build")
}

/// What one run of the recipe printed: the layers (and the image, when it pushed) and its
/// progress log (stderr, with the "cache hit"/"cache miss" lines).
#[derive(Debug, Clone)]
pub struct Run {
    pub base: PathBuf,
    pub kernel: PathBuf,
    pub release: PathBuf,
    pub image: Option<String>,
    pub digest: Option<String>,
    pub log: String,
    pub seconds: f64,
}

impl Run {
    /// Whether the run took `layer` ("base" or "kernel") from the cache.
    pub fn cache_hit(&self, layer: &str) -> bool {
        let prefix = format!("debian-recipe: cache hit: {layer} ");
        self.log.lines().any(|l| l.starts_with(&prefix))
    }
}

/// The recipe with its base and kernel layers built (or found in the cache).
#[derive(Debug)]
pub struct Recipe {
    /// The clb package installed in the kernel layer.
    pub deb: PathBuf,
    /// Where release layers are built (`--out`).
    pub out: PathBuf,
    /// The layer directories (in the cache).
    pub base: PathBuf,
    pub kernel: PathBuf,
    /// The run that prepared the layers.
    pub prepared: Run,
}

static DEB: OnceLock<PathBuf> = OnceLock::new();

/// The clb package: `CLB_TEST_DEB`, or built once per process by `scripts/package` with the
/// dev profile (as `agent/tests/package.rs` builds it).
pub fn clb_deb() -> &'static Path {
    DEB.get_or_init(|| {
        if let Some(deb) = std::env::var_os("CLB_TEST_DEB") {
            return PathBuf::from(deb);
        }
        let out = run(Command::new(workspace().join("scripts/package"))
            .env("CLB_PACKAGE_PROFILE", "dev")
            .stderr(Stdio::inherit()));
        let deb = PathBuf::from(
            out.lines()
                .last()
                .expect("scripts/package named no .deb")
                .trim(),
        );
        assert!(deb.is_file(), "scripts/package printed {}", deb.display());
        deb
    })
}

/// Panics unless running as root (the recipe chroots and mounts).
pub fn require_root() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "missing test prerequisite: root (the Debian OS recipe runs debootstrap, chroot and overlayfs mounts)"
    );
}

/// Runs the recipe with `args`; panics with its log when it fails.
pub fn run_recipe(args: &[&OsStr]) -> Run {
    let started = Instant::now();
    let mut child = Command::new(script())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
    // Progress shows as it happens (a cold run takes minutes) and is kept for the checks.
    let stderr = child.stderr.take().unwrap();
    let logger = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let status = child.wait().unwrap();
    let log = logger.join().unwrap();
    assert!(
        status.success(),
        "{} {args:?} failed ({status}):\n{log}",
        script().display()
    );
    let get = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let path = |key: &str| {
        PathBuf::from(get(key).unwrap_or_else(|| panic!("the recipe printed no {key}=: {stdout}")))
    };
    Run {
        base: path("base"),
        kernel: path("kernel"),
        release: path("release"),
        image: get("image"),
        digest: get("digest"),
        log,
        seconds: started.elapsed().as_secs_f64(),
    }
}

impl Recipe {
    /// Builds the clb package (once per process) and the base and kernel layers (once per
    /// cache), with a throw-away `dev` release in `work/os`.
    pub fn prepare(work: &Path) -> Recipe {
        require_root();
        let deb = clb_deb().to_path_buf();
        let out = work.join("os");
        let prepared = run_recipe(&[
            "--deb".as_ref(),
            deb.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ]);
        eprintln!(
            "debian recipe: layers ready in {:.0} s (base {}, kernel {})",
            prepared.seconds,
            if prepared.cache_hit("base") {
                "cached"
            } else {
                "built"
            },
            if prepared.cache_hit("kernel") {
                "cached"
            } else {
                "built"
            },
        );
        Recipe {
            deb,
            out,
            base: prepared.base.clone(),
            kernel: prepared.kernel.clone(),
            prepared,
        }
    }

    /// Publishes release `version` as `debian:VERSION` on `reg`: base, kernel and a release
    /// layer holding `extra_dirs` (copied in order, later ones win) and the `enable`d units.
    /// Returns the image reference.
    pub fn publish(
        &self,
        reg: &Registry,
        version: &str,
        extra_dirs: &[&Path],
        enable: &[&str],
    ) -> String {
        let name = format!("debian:{version}");
        self.publish_as(reg, &name, version, extra_dirs, enable)
            .image
            .expect("the recipe printed the image")
    }

    /// [`Recipe::publish`] under the repository and tag `name` (e.g. `other:v1`), with the
    /// whole run (release layer directory, digest, log) returned.
    pub fn publish_as(
        &self,
        reg: &Registry,
        name: &str,
        version: &str,
        extra_dirs: &[&Path],
        enable: &[&str],
    ) -> Run {
        let image = reg.image_ref(name);
        let clb = &binaries().clb;
        let mut args: Vec<&OsStr> = vec![
            "--deb".as_ref(),
            self.deb.as_os_str(),
            "--out".as_ref(),
            self.out.as_os_str(),
            "--clb".as_ref(),
            clb.as_os_str(),
            "--image".as_ref(),
            image.as_ref(),
            "--version".as_ref(),
            version.as_ref(),
        ];
        for d in extra_dirs {
            args.extend([OsStr::new("--release-dir"), d.as_os_str()]);
        }
        for u in enable {
            args.extend([OsStr::new("--enable"), OsStr::new(u)]);
        }
        let run = run_recipe(&args);
        assert_eq!(run.image.as_deref(), Some(image.as_str()), "{}", run.log);
        assert_eq!(run.base, self.base, "the base layer changed between runs");
        assert_eq!(
            run.kernel, self.kernel,
            "the kernel layer changed between runs"
        );
        eprintln!("debian recipe: published {image} in {:.0} s", run.seconds);
        run
    }

    /// The version of the kernel in the kernel layer (`6.1.0-…-amd64`).
    pub fn kernel_version(&self) -> String {
        std::fs::read_dir(self.kernel.join("boot"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_prefix("vmlinuz-").map(str::to_string)
            })
            .max()
            .expect("a /boot/vmlinuz-* in the kernel layer")
    }
}
