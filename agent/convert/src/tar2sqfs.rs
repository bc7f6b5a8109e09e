//! Runs `tar2sqfs` (squashfs-tools-ng) as the SquashFS writer. It keeps xattrs and hard links,
//! which backhand drops (see docs/conversion.md). We own the child completely: every path
//! out of here either waits for it or kills and reaps it, so no zombie and no hung pipe.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use crate::{Compressor, ConvertError, ConvertOptions};

const STDERR_KEEP: usize = 16 * 1024;
const PIPE_SIZE: usize = 1 << 20;

pub(crate) struct Tar2Sqfs {
    child: Child,
    /// The command line, for `CommandError::Failed`.
    command: String,
    stderr: Option<JoinHandle<Vec<u8>>>,
    out: PathBuf,
}

/// Command-line arguments for the options; validated here so a bad level is our error
/// message, not a usage dump from the tool.
pub(crate) fn args(opts: &ConvertOptions) -> Result<Vec<String>, ConvertError> {
    let (name, range) = match opts.compressor {
        Compressor::Zstd => ("zstd", Some(1..=22)),
        Compressor::Gzip => ("gzip", Some(1..=9)),
        Compressor::Xz => ("xz", Some(0..=9)),
        Compressor::Lz4 => ("lz4", None),
    };
    let mut args: Vec<String> = ["-q", "-f", "--no-skip", "-c", name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match (opts.level, range) {
        (None, _) => {}
        (Some(level), Some(range)) if range.contains(&level) => {
            args.extend(["-X".into(), format!("level={level}")]);
        }
        (Some(level), Some(range)) => {
            return Err(ConvertError::InvalidOptions(format!(
                "{name} level {level} outside {}..={}",
                range.start(),
                range.end()
            )));
        }
        // lz4 has no levels, only the slower high-compression mode.
        (Some(0), None) => {}
        (Some(_), None) => args.extend(["-X".into(), "hc".into()]),
    }
    let jobs = opts.jobs.max(1);
    // A backlog of 4 blocks per job instead of tar2sqfs's 10 keeps the compressors as busy
    // (measured: same time on a Debian rootfs and on 100,000 small files) for 1–2 MiB less
    // memory per conversion (docs/performance.md, "Memory").
    args.extend([
        "-j".into(),
        jobs.to_string(),
        "-Q".into(),
        (4 * jobs).to_string(),
    ]);
    Ok(args)
}

impl Tar2Sqfs {
    pub fn spawn(out: &Path, opts: &ConvertOptions) -> Result<(Self, ChildStdin), ConvertError> {
        let mut cmd = Command::new("tar2sqfs");
        cmd.args(args(opts)?)
            .arg(out)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = clb_command::spawn(&mut cmd)?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take();
        let mut this = Self {
            child,
            command: clb_command::command_line(&cmd),
            stderr: None,
            out: out.to_path_buf(),
        };
        // A thread drains stderr so a chatty failure can never block the child on a full pipe.
        this.stderr = stderr.map(|mut pipe| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > STDERR_KEEP {
                        kept.drain(..kept.len() - STDERR_KEEP);
                    }
                }
                kept
            })
        });
        match stdin {
            Some(stdin) => {
                // tar2sqfs reads 256 KiB at a time; through the default 64 KiB pipe each read
                // and each of our writes is a wakeup of the other side. A 1 MiB pipe (the
                // default fs.pipe-max-size) gives it whole reads, a quarter of the switches.
                // Only a cost when refused (a lower pipe-max-size): keep the default then.
                if let Err(e) = rustix::pipe::fcntl_setpipe_size(&stdin, PIPE_SIZE) {
                    tracing::debug!(error = %e, "could not enlarge the pipe to tar2sqfs");
                }
                Ok((this, stdin))
            }
            None => {
                this.abort();
                Err(ConvertError::Tool("no stdin pipe to tar2sqfs".into()))
            }
        }
    }

    fn stderr(&mut self) -> Vec<u8> {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Waits for a clean exit (stdin must already be closed).
    pub fn finish(mut self) -> Result<(), ConvertError> {
        let status = self.child.wait();
        let stderr = self.stderr();
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                remove(&self.out);
                return Err(ConvertError::io("waiting for tar2sqfs", e));
            }
        };
        if status.success() {
            return Ok(());
        }
        Err(self.failure(status, &stderr))
    }

    /// The child stopped reading (broken pipe): reap it and report why it died.
    pub fn failed(mut self) -> ConvertError {
        let status = self.child.wait();
        let stderr = self.stderr();
        match status {
            Ok(status) if status.success() => {
                remove(&self.out);
                ConvertError::Tool(format!(
                    "exited with status 0 before reading the whole layer (stderr: {})",
                    clb_command::stderr_tail(&stderr)
                ))
            }
            Ok(status) => self.failure(status, &stderr),
            Err(e) => {
                remove(&self.out);
                ConvertError::io("waiting for tar2sqfs", e)
            }
        }
    }

    /// A non-zero exit: `NoSpace` if the output filesystem is full (looked at before the
    /// partial image is removed), else `Command(Failed)` with the stderr tail, whose
    /// `says_no_space` covers a tool that does name ENOSPC.
    fn failure(&self, status: ExitStatus, stderr: &[u8]) -> ConvertError {
        let full = disk_full(&self.out);
        remove(&self.out);
        if full {
            return ConvertError::NoSpace("writing SquashFS image".into());
        }
        ConvertError::Command(clb_command::CommandError::Failed {
            program: "tar2sqfs".into(),
            command: self.command.clone(),
            status,
            stderr_tail: clb_command::stderr_tail(stderr),
        })
    }

    /// Kills and reaps the child and removes any partial output.
    pub fn abort(mut self) {
        // Errors only mean it is already gone; we reap it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.stderr();
        remove(&self.out);
    }
}

/// tar2sqfs reports ENOSPC as a bare "I/O error", so look at the filesystem itself while the
/// partial image still occupies it: less than two SquashFS blocks or no inodes left means full.
fn disk_full(out: &Path) -> bool {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            st.f_bavail.saturating_mul(st.f_frsize) < 2 * 128 * 1024
                || (st.f_files > 0 && st.f_favail == 0)
        }
        Err(_) => false,
    }
}

pub(crate) fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove partial output");
    }
}
