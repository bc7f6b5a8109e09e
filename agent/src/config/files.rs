//! Which files make the configuration, in which order, and reading them.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::ConfigError;

/// Far above any real configuration; a larger file is a mistake (or a device), not config.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

/// `dir/config.yaml` if it exists, then the drop-ins of `dir/config.d` sorted by the bytes of
/// their names (the order `ls` shows in the C locale, whatever the host's locale).
pub(crate) fn config_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    let main = dir.join("config.yaml");
    match std::fs::metadata(&main) {
        Ok(_) => files.push(main),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(ConfigError::Read { path: main, error }),
    }
    let dropins = dir.join("config.d");
    let entries = match std::fs::read_dir(&dropins) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(error) => {
            return Err(ConfigError::List {
                path: dropins,
                error,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| ConfigError::List {
            path: dropins.clone(),
            error,
        })?;
        let name = entry.file_name();
        let bytes = name.as_bytes();
        // Hidden names are editors' lock and swap files (`.#10-x.yaml` is a dangling link).
        if bytes.starts_with(b".") || !bytes.ends_with(b".yaml") {
            continue;
        }
        let path = entry.path();
        // Follows links: a link to a file counts; a link to /dev/null masks the name, as in
        // systemd; a dangling link is an error, like an unreadable file.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => names.push(name),
            Ok(_) => {}
            Err(error) => return Err(ConfigError::Read { path, error }),
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    files.extend(names.into_iter().map(|n| dropins.join(n)));
    Ok(files)
}

pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    let read_err = |error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    let whole = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(whole(format!(
            "larger than {} KiB: not a configuration file",
            MAX_FILE_BYTES >> 10
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        whole(format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}
