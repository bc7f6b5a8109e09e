//! Read-only loop devices for layer files, set up with the loop ioctls directly
//! (`LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE`, Linux ≥ 5.8), so the hook needs no `losetup`.
//!
//! The devices are created with `LO_FLAGS_AUTOCLEAR`: the kernel frees one when its last user
//! goes away, which is the squashfs mount once the caller has closed the returned handle.
//! The handle must therefore stay open until the mount is done.

// The two ioctls below need `unsafe`; each call carries its soundness argument.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, Setter, ioctl};

const LOOP_CONFIGURE: Opcode = 0x4C0A;
const LOOP_CTL_GET_FREE: Opcode = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` from `<linux/loop.h>` (232 bytes, no padding on any ABI).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>` (304 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// `LOOP_CTL_GET_FREE`: no argument, the result is the number of a free loop device.
struct GetFree;

// SAFETY: the opcode takes no argument (the pointer is ignored by the kernel, so a null
// pointer is fine) and does not write through it; the output is the syscall's return value.
unsafe impl Ioctl for GetFree {
    type Output = u32;
    const IS_MUTATING: bool = false;
    fn opcode(&self) -> Opcode {
        LOOP_CTL_GET_FREE
    }
    fn as_ptr(&mut self) -> *mut core::ffi::c_void {
        std::ptr::null_mut()
    }
    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _: *mut core::ffi::c_void,
    ) -> rustix::io::Result<u32> {
        u32::try_from(out).map_err(|_| Errno::INVAL)
    }
}

/// An attached loop device: its path and an open handle (keep it until mounted).
#[derive(Debug)]
pub struct Attached {
    pub path: PathBuf,
    _handle: File,
}

/// Attach `file` read-only to a free loop device.
pub fn attach_read_only(file: &Path) -> Result<Attached, String> {
    let backing = File::open(file).map_err(|e| format!("open {}: {e}", file.display()))?;
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| format!("open /dev/loop-control (is the loop module loaded?): {e}"))?;
    let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| "bad file descriptor".to_string())?;
    // Another process may take the free device between GET_FREE and CONFIGURE (EBUSY): retry.
    for _ in 0..16 {
        // SAFETY: GetFree passes no pointer and reads only the return value (see its impl);
        // `ctl` is an open descriptor of /dev/loop-control for the whole call.
        let n = unsafe { ioctl(&ctl, GetFree) }.map_err(|e| format!("LOOP_CTL_GET_FREE: {e}"))?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = open_node(&path)?;
        let mut info = LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        };
        let name = file.as_os_str().as_encoded_bytes();
        let len = name.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..len].copy_from_slice(&name[..len]);
        let config = LoopConfig {
            fd,
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads one `struct loop_config` through the pointer; Setter
        // passes a pointer to `config`, a `#[repr(C)]` value whose layout matches the kernel's
        // (sizes asserted above), alive for the whole call and not written by the kernel.
        // `config.fd` is `backing`, open for the whole call; `dev` is the loop device.
        let r = unsafe { ioctl(&dev, Setter::<LOOP_CONFIGURE, LoopConfig>::new(config)) };
        match r {
            Ok(()) => {
                return Ok(Attached { path, _handle: dev });
            }
            Err(Errno::BUSY) => continue,
            Err(e) => {
                return Err(format!(
                    "LOOP_CONFIGURE {} for {}: {e}",
                    path.display(),
                    file.display()
                ));
            }
        }
    }
    Err(format!("no free loop device for {}", file.display()))
}

/// devtmpfs creates the node when the device is added; give it a moment if it lags.
fn open_node(path: &Path) -> Result<File, String> {
    let start = Instant::now();
    loop {
        match OpenOptions::new().read(true).open(path) {
            Ok(f) => return Ok(f),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && start.elapsed() < Duration::from_secs(2) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("open {}: {e}", path.display())),
        }
    }
}
