//! Deterministic digests of directory trees.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Returns a line-per-entry description of the tree at `root`, sorted by relative path bytes.
///
/// Each line is `PATH TYPE MODE UID:GID DETAIL`, where `PATH` is the path relative to `root`
/// (`.` for `root` itself) with bytes escaped (`\n`, `\\`, non-ASCII as `\xNN`, …), `TYPE` is
/// one of `dir file symlink fifo socket chardev blockdev`, `MODE` the permission bits in octal
/// (including setuid/setgid/sticky), and `DETAIL` is `SIZE sha256:HEX` for files, the escaped
/// target for symlinks, `MAJOR:MINOR`-style raw rdev for devices, and empty otherwise.
/// Symlinks are never followed; empty directories are listed; timestamps and xattrs are not
/// included. Print it to see *what* differs when [`hash_tree`] values differ.
///
/// Panics (with the path) on I/O errors.
pub fn tree_manifest(root: &Path) -> String {
    let mut entries = Vec::new();
    walk(root, PathBuf::new(), &mut entries);
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (_, line) in entries {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Returns a SHA-256 (lowercase hex) over the whole tree at `root`: relative paths (sorted),
/// file types, permission bits, owners, symlink targets and file contents (see
/// [`tree_manifest`], which is exactly what gets hashed). Does not follow symlinks; includes
/// empty directories; ignores timestamps and xattrs.
///
/// Compare it before and after an operation to prove the tree is exactly as before.
pub fn hash_tree(root: &Path) -> String {
    hex::encode(Sha256::digest(tree_manifest(root).as_bytes()))
}

fn escape(bytes: &[u8]) -> String {
    // escape_ascii escapes space? No: it escapes \t \r \n \\ ' " and non-printables; spaces are
    // kept, so also escape them to keep the line fields unambiguous.
    bytes.escape_ascii().to_string().replace(' ', "\\x20")
}

fn walk(root: &Path, rel: PathBuf, out: &mut Vec<(Vec<u8>, String)>) {
    let full = if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(&rel)
    };
    let md = fs::symlink_metadata(&full)
        .unwrap_or_else(|e| panic!("hash_tree: lstat {}: {e}", full.display()));
    let ft = md.file_type();
    let key: Vec<u8> = if rel.as_os_str().is_empty() {
        b".".to_vec()
    } else {
        rel.as_os_str().as_bytes().to_vec()
    };
    let (kind, detail) = if ft.is_dir() {
        ("dir", String::new())
    } else if ft.is_file() {
        let mut f = fs::File::open(&full)
            .unwrap_or_else(|e| panic!("hash_tree: open {}: {e}", full.display()));
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("hash_tree: read {}: {e}", full.display()));
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        (
            "file",
            format!("{} sha256:{}", md.len(), hex::encode(h.finalize())),
        )
    } else if ft.is_symlink() {
        let target = fs::read_link(&full)
            .unwrap_or_else(|e| panic!("hash_tree: readlink {}: {e}", full.display()));
        ("symlink", escape(target.as_os_str().as_bytes()))
    } else if ft.is_fifo() {
        ("fifo", String::new())
    } else if ft.is_socket() {
        ("socket", String::new())
    } else if ft.is_char_device() {
        ("chardev", format!("rdev={:#x}", md.rdev()))
    } else if ft.is_block_device() {
        ("blockdev", format!("rdev={:#x}", md.rdev()))
    } else {
        ("unknown", String::new())
    };
    // Symlink permission bits are meaningless on Linux (always 0777); keep them anyway, they
    // are stable.
    out.push((
        key.clone(),
        format!(
            "{} {kind} {:04o} {}:{} {detail}",
            escape(&key),
            md.mode() & 0o7777,
            md.uid(),
            md.gid()
        ),
    ));
    if ft.is_dir() {
        let rd = fs::read_dir(&full)
            .unwrap_or_else(|e| panic!("hash_tree: read_dir {}: {e}", full.display()));
        for ent in rd {
            let ent = ent.unwrap_or_else(|e| panic!("hash_tree: read_dir {}: {e}", full.display()));
            walk(root, rel.join(ent.file_name()), out);
        }
    }
}
