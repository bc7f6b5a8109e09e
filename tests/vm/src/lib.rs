//! The kit of clb's QEMU boot tests (`tests/*.rs` of this crate): the programs under test
//! (`clb`, the static `clb-initrd`), a Debian kernel and clb initramfs, a busybox test OS and
//! its releases in a local registry, a real Debian OS built by the OS recipe (`debian`), disks
//! with guards that always detach what they attached, a QEMU runner, the private mount
//! namespace in which dracut and mkinitramfs see the test kernel, a static file server for
//! netboot and the power-loss kill shim.
//!
//! Every test needs root and real tools; a missing one fails the test, never skips it.

// Test-only code: a failed step must stop the test with its message, so the kit panics
// (unwrap/expect/assert) instead of returning errors nobody handles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod binaries;
pub mod clb;
pub mod cmd;
pub mod debian;
pub mod disks;
pub mod distro;
pub mod fileserver;
pub mod grubenv;
pub mod hostguest;
pub mod killshim;
pub mod kit;
pub mod logwrites;
pub mod namespace;
pub mod qemu;
pub mod statecheck;
pub mod testos;
