//! The clb agent library: everything the `clb` binary does, as typed operations.

pub mod error;
pub mod progress;
pub mod publish;
pub mod pull;
pub mod reboot;
pub mod registry;
pub mod signatures;
pub mod status;
pub mod store;
pub mod target;
pub mod upgrade;

pub use error::{ClbError, Result};

/// Maps a conversion failure onto clb's error classes.
pub fn convert_error(e: clb_convert::ConvertError) -> ClbError {
    use clb_convert::ConvertError as C;
    match e {
        C::HostilePath { .. } | C::Corrupt { .. } => ClbError::Invalid(e.to_string()),
        C::NoSpace { .. } => ClbError::NoSpace {
            path: std::path::PathBuf::from("(conversion output)"),
            needed: 0,
            available: 0,
        },
        other => ClbError::State(other.to_string()),
    }
}
