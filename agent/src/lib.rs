//! The clb agent library: everything the `clb` binary does, as typed operations.

pub mod apply;
pub mod bootfiles;
pub mod bootloader;
pub mod builddisk;
pub mod bundles;
pub mod check;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod download;
pub mod error;
mod growing;
pub mod health;
pub mod hooks;
pub mod kernelargs;
pub mod partitions;
pub mod progress;
pub mod publish;
pub mod pull;
pub mod reboot;
pub mod recovery;
pub mod registry;
pub mod signatures;
pub mod stage;
pub mod status;
pub mod store;
pub mod strategy;
pub mod target;
pub mod trust;
pub mod upgrade;

pub use error::{ClbError, Result};

/// Runs blocking work (conversion, mounts, hooks, fsync'd writes) on tokio's blocking pool and
/// waits for it, so the runtime's workers never block; a panicked worker is
/// [`ClbError::Worker`].
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await?
}
