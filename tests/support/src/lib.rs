//! Test fixtures for clb integration tests.
//!
//! Everything here talks to real parts installed by `scripts/install-test-deps`:
//!
//! - [`Registry`]: a real `docker-registry` (CNCF distribution 2.8) process on 127.0.0.1, plain
//!   HTTP or TLS (self-signed CA made with the `openssl` CLI), optionally with htpasswd auth
//!   or Docker token auth (a [`TokenServer`], `tests/token_server.py`), whose access log can be
//!   read back to count blob fetches ([`BlobFetch`]).
//! - [`hash_tree`]: a deterministic digest of a directory tree, to prove "state exactly as
//!   before" after a failing operation.
//! - [`write_oci_layout`]: a hand-written OCI image layout that `skopeo` can copy to a registry.
//! - [`require_tool`]: tests fail (never skip) when a prerequisite is missing.
//! - [`bus`] (feature `bus`): a private system bus with the shipped D-Bus policy, a fake
//!   logind, `busctl` clients and monitor, the `clb daemon` process, a throttling proxy.
//! - [`FleetLockServer`]: a FleetLock reboot-lock server on 127.0.0.1, written from the
//!   protocol document, that records every request.
//! - [`MetadataServer`]: the metadata services of AWS, GCP, Azure, OpenStack, Hetzner and
//!   DigitalOcean on 127.0.0.1, written from each cloud's documentation, plus a service that
//!   hangs and one that answers garbage.
//! - [`ReferrersProxy`]: the OCI 1.1 referrers API (written from distribution-spec) in front of
//!   a plain [`Registry`], which hides the referrers fallback tags.
//!
//! The fixture is synchronous on purpose (no async runtime): it can be used from plain `#[test]`
//! functions and from inside a tokio test alike.

// Test-only crate: panicking with a clear message is the right way to fail a test, so
// `expect`/`unwrap` are allowed here (every call carries a message saying what broke).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accesslog;
#[cfg(feature = "bus")]
pub mod bus;
mod fleetlock;
mod hostile;
mod http;
mod metadata;
mod oci;
mod process;
mod referrers;
mod registry;
mod rng;
mod serve;
mod token;
mod tree;

use std::path::{Path, PathBuf};

pub use accesslog::{AccessLogEntry, BlobFetch, LogMarker};
pub use fleetlock::{FleetLockRequest, FleetLockServer};
pub use hostile::{HostileProxy, Misbehavior, SeenRequest};
pub use http::{HttpResponse, http_request};
pub use metadata::{Cloud, Instance, MetadataRequest, MetadataServer};
pub use oci::{
    OciImageSpec, OciLayer, media_types, tar_gz_dir, write_oci_layout, write_oci_layout_spec,
};
pub use process::LoggedChild;
pub use referrers::ReferrersProxy;
pub use registry::{Registry, RegistryOptions};
pub use rng::Rng;
pub use token::{TOKEN_ISSUER, TOKEN_SERVICE, TokenRequest, TokenServer};
pub use tree::{hash_tree, tree_manifest};

/// Finds `name` on `PATH` (or checks it directly if it contains a `/`), returning its full path.
///
/// Returns `None` when the tool is not installed or not executable.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

/// Panics with `missing test prerequisite: NAME (run scripts/install-test-deps)` unless `name` is
/// an executable on `PATH`; returns its full path otherwise.
///
/// Tests call this first so that a missing tool makes them FAIL, never silently skip.
/// The workspace root (this crate lives in `tests/support`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|e| panic!("workspace root above tests/support: {e}"))
}

/// The cosign key password the tests' keys are made with (`COSIGN_PASSWORD`).
pub const COSIGN_PASSWORD: &str = "test-password";

/// Debian's interpreter, where `scripts/install-test-deps` installs python3-cryptography and
/// python3-jsonschema. Another `python3` may come first on PATH (pyenv on the machine image)
/// without those modules, so tests name this one.
pub const PYTHON: &str = "/usr/bin/python3";

pub fn require_tool(name: &str) -> PathBuf {
    match find_tool(name) {
        Some(p) => p,
        None => panic!("missing test prerequisite: {name} (run scripts/install-test-deps)"),
    }
}

/// Returns `sha256:<hex>` of `data`, the OCI digest form.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Runs a command and returns its stdout, or an error carrying the command line, exit status,
/// stdout and stderr.
pub fn run_cmd(cmd: &mut std::process::Command) -> Result<Vec<u8>, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
