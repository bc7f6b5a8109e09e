//! clb-disk: find partitions by filesystem label, open them through offset loop devices,
//! mount COS_STATE, and mount a slot's SquashFS layer stack.
//!
//! Everything is synchronous and needs root for the attach/mount parts. See docs/disks.md.

mod error;
mod loopdev;
mod mount;
mod probe;
mod stack;
mod state;
mod table;

pub use error::{DiskError, Result};
pub use loopdev::{LoopDevice, PartitionDevice, wait_released};
pub use mount::{
    Flags as MountFlags, Mount, MountInfo, find_mounted, is_mount_point, mountinfo, unmount,
};
pub use probe::{FsProbe, probe_label, probe_path, try_probe_label};
pub use stack::{
    StackMount, mount_layer_stack, mount_layer_stack_in, unmount_stack, unmount_stack_in,
};
pub use state::{RUN_DIR, StateDisk, host_partition_by_label};
pub use table::{PartitionInfo, find_by_label, list_partitions};
