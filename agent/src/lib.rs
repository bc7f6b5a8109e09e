//! The clb agent library: everything the `clb` binary does, as typed operations.

pub mod bootfiles;
pub mod bootloader;
pub mod builddisk;
pub mod deploy;
pub mod error;
pub mod hooks;
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

/// Maps a conversion failure onto clb's error classes (and so onto exit codes).
pub fn convert_error(e: clb_convert::ConvertError) -> ClbError {
    if e.is_invalid_input() {
        return ClbError::Invalid(e.to_string());
    }
    match e {
        clb_convert::ConvertError::NoSpace(what) => ClbError::Io {
            context: format!("converting a layer: {what}"),
            source: std::io::Error::from_raw_os_error(28),
        },
        other => ClbError::State(other.to_string()),
    }
}
