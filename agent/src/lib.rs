//! The clb agent library: everything the `clb` binary does, as typed operations.

pub mod bootfiles;
pub mod bootloader;
pub mod builddisk;
pub mod deploy;
pub mod error;
pub mod hooks;
pub mod partitions;
pub mod progress;
pub mod publish;
pub mod pull;
pub mod reboot;
pub mod recovery;
pub mod registry;
pub mod signatures;
pub mod status;
pub mod store;
pub mod target;
pub mod upgrade;

pub use error::{ClbError, Result};
