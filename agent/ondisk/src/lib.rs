//! On-disk formats of clb, shared by the agent (`clb`) and the initrd hook (`clb-initrd`).
//!
//! Everything here is plain std + serde so the initrd hook stays small. The formats are
//! documented in `docs/formats.md`; change both together.

pub mod atomic;
pub mod bootstate;
pub mod envblock;
pub mod layout;
pub mod slot;

pub use bootstate::{BootState, BootStateError};
pub use envblock::{EnvBlock, EnvBlockError};
pub use layout::StateLayout;
pub use slot::{BootFiles, LayerRecord, SlotManifest, SlotName, Verification, VerifiedSigner};
