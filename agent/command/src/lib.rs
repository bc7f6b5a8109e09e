//! The one place clb runs external programs.
//!
//! Every crate of the tree (agent, disk, converter, stage engine, initramfs builder, boot hook)
//! starts programs through this crate so that each run is logged the same way (the command at
//! debug level), a failure carries the tail of the program's stderr, and a program that is not
//! installed is reported with the Debian package that provides it. It depends only on `std`,
//! `thiserror` and `tracing`, so the static boot hook can use it too.

mod packages;

use std::ffi::OsStr;
use std::io;
use std::process::{Child, Command, ExitStatus, Output, Stdio};

pub use packages::package_of;

/// How many trailing stderr lines a failure keeps: the last lines are the ones that explain.
const STDERR_TAIL_LINES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program is not installed (or not on `PATH`).
    #[error("{program}: not found: install {}", package_hint(program))]
    Missing { program: String },
    /// The program could not be started for another reason (permissions, exec format, ...).
    #[error("cannot start {program}")]
    Start {
        program: String,
        #[source]
        source: io::Error,
    },
    /// The program ran longer than it was given and was killed.
    #[error("{program} did not finish within {} s (killed)", after.as_secs())]
    TimedOut {
        program: String,
        command: String,
        after: std::time::Duration,
    },
    /// The program ran and failed.
    #[error("{program} failed ({status}): {stderr_tail}")]
    Failed {
        program: String,
        /// The whole command line, for logs and debugging.
        command: String,
        status: ExitStatus,
        /// The last non-empty lines of stderr, joined with "; " (or "no error output").
        stderr_tail: String,
    },
}

impl CommandError {
    /// True when the program failed because a write hit a full disk (its stderr says so).
    pub fn says_no_space(&self) -> bool {
        matches!(self, CommandError::Failed { stderr_tail, .. }
            if stderr_tail.contains("No space left on device"))
    }
}

fn package_hint(program: &str) -> String {
    match package_of(program) {
        Some(pkg) => format!("the Debian package {pkg}"),
        None => format!("the package that provides {program}"),
    }
}

/// The program name of `cmd` as the user knows it (the file name of the executable).
pub fn program_of(cmd: &Command) -> String {
    let program = cmd.get_program();
    std::path::Path::new(program)
        .file_name()
        .unwrap_or(program)
        .to_string_lossy()
        .into_owned()
}

/// The command line of `cmd`, shell-like, for logs.
pub fn command_line(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn start_error(cmd: &Command, source: io::Error) -> CommandError {
    let program = program_of(cmd);
    if source.kind() == io::ErrorKind::NotFound {
        CommandError::Missing { program }
    } else {
        CommandError::Start { program, source }
    }
}

/// The last non-empty lines of a program's stderr.
pub fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut tail: Vec<&str> = text
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(STDERR_TAIL_LINES)
        .collect();
    if tail.is_empty() {
        return "no error output".to_string();
    }
    tail.reverse();
    tail.join("; ")
}

/// Runs `cmd` to completion with stdin closed and both outputs captured; Ok(stdout) on exit 0.
pub fn run(cmd: &mut Command) -> Result<String, CommandError> {
    run_output(cmd).map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], but returns the whole output (stdout bytes and stderr) on success.
pub fn run_output(cmd: &mut Command) -> Result<Output, CommandError> {
    let out = output(cmd)?;
    check(cmd, out)
}

/// Runs `cmd` to completion with stdin closed and both outputs captured, and returns its output
/// whatever its exit status: for programs whose status is an answer rather than a failure, or
/// whose failure the caller explains with more than the stderr tail (see [`check`] for the
/// usual error).
pub fn output(cmd: &mut Command) -> Result<Output, CommandError> {
    tracing::debug!(command = %command_line(cmd), "running");
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| start_error(cmd, e))
}

/// Runs `cmd` to completion with stdin closed and its outputs discarded, and returns its exit
/// status whatever it is: for programs whose status is the whole answer (a condition).
pub fn status(cmd: &mut Command) -> Result<ExitStatus, CommandError> {
    tracing::debug!(command = %command_line(cmd), "running");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| start_error(cmd, e))
}

/// Runs `cmd` with its outputs passed through to ours (a user-visible tool such as a hook
/// script); Ok on exit 0.
pub fn run_inherited(cmd: &mut Command) -> Result<(), CommandError> {
    tracing::debug!(command = %command_line(cmd), "running");
    let status = cmd.status().map_err(|e| start_error(cmd, e))?;
    if status.success() {
        return Ok(());
    }
    Err(CommandError::Failed {
        program: program_of(cmd),
        command: command_line(cmd),
        status,
        stderr_tail: "see its output above".to_string(),
    })
}

/// Turns a finished program's output into a result, keeping the stderr tail on failure.
pub fn check(cmd: &Command, out: Output) -> Result<Output, CommandError> {
    if out.status.success() {
        return Ok(out);
    }
    let err = CommandError::Failed {
        program: program_of(cmd),
        command: command_line(cmd),
        status: out.status,
        stderr_tail: stderr_tail(&out.stderr),
    };
    tracing::debug!(command = %command_line(cmd), error = %err, "failed");
    Err(err)
}

/// Like [`output`], but kills the program (and the process group it leads) when it runs past
/// `timeout`: for programs clb does not control, such as a user's health-check script.
pub fn output_within(
    cmd: &mut Command,
    timeout: std::time::Duration,
) -> Result<Output, CommandError> {
    use std::os::unix::process::CommandExt;
    tracing::debug!(command = %command_line(cmd), ?timeout, "running");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a script's children die with it.
        .process_group(0)
        .spawn()
        .map_err(|e| start_error(cmd, e))?;
    // Readers drain the pipes while we wait, so a chatty program cannot block on a full pipe.
    let out_reader = drain(child.stdout.take());
    let err_reader = drain(child.stderr.take());
    let start = std::time::Instant::now();
    let waited = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if start.elapsed() < timeout => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(None) => break Err(None),
            Err(e) => break Err(Some(e)),
        }
    };
    let status = match waited {
        Ok(status) => status,
        Err(e) => {
            let _ = rustix::process::kill_process_group(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::KILL,
            );
            let _ = child.kill();
            let _ = child.wait();
            return Err(match e {
                Some(source) => CommandError::Start {
                    program: program_of(cmd),
                    source,
                },
                None => CommandError::TimedOut {
                    program: program_of(cmd),
                    command: command_line(cmd),
                    after: timeout,
                },
            });
        }
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Starts `cmd` (for programs fed or read as streams); the caller waits for it.
pub fn spawn(cmd: &mut Command) -> Result<Child, CommandError> {
    tracing::debug!(command = %command_line(cmd), "starting");
    cmd.spawn().map_err(|e| start_error(cmd, e))
}

/// Waits for a child started with [`spawn`] whose stderr was piped, and checks its status.
pub fn wait(cmd: &Command, child: Child) -> Result<Output, CommandError> {
    let out = child.wait_with_output().map_err(|e| CommandError::Start {
        program: program_of(cmd),
        source: e,
    })?;
    check(cmd, out)
}

/// An error and its causes on one line, `a: b: c`: the error's message, then each `source()`'s
/// message in turn, joined by ": ", nothing left out. This is how clb prints errors (the binary's
/// `clb: error:` line, messages built from an error); since no error's message repeats its
/// source's, each cause appears once.
pub fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        line.push_str(": ");
        line.push_str(&e.to_string());
        cause = e.source();
    }
    line
}

/// [`one_line`] for errors of other crates whose messages may repeat their sources' (or hide
/// the cause behind a vague message, as reqwest's "error sending request" does): a cause
/// already contained in the line is left out.
pub fn one_line_deduplicated(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}

/// For tests of error types: the first link of `error`'s chain whose message contains its
/// source's message (which [`one_line`] would then print twice), as (message, source's
/// message); None when every cause appears once. A one-word source message (a part name such
/// as `layout`) is not looked for: it can be in a message by coincidence (a step named
/// `layout`).
pub fn repeated_source(error: &dyn std::error::Error) -> Option<(String, String)> {
    let mut current = error;
    while let Some(source) = current.source() {
        let (text, cause) = (current.to_string(), source.to_string());
        if cause.trim().contains(char::is_whitespace) && text.contains(&cause) {
            return Some((text, cause));
        }
        current = source;
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_its_package() {
        let err = run(&mut Command::new("mksquashfs-does-not-exist")).unwrap_err();
        assert!(matches!(err, CommandError::Missing { .. }));
        let err = run(&mut Command::new("/nonexistent/sgdisk")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sgdisk: not found: install the Debian package gdisk"
        );
    }

    #[test]
    fn failure_keeps_the_stderr_tail() {
        let err = run(Command::new("sh").args([
            "-c",
            "echo one >&2; echo >&2; echo two >&2; echo three >&2; echo four >&2; exit 3",
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "sh failed (exit status: 3): two; three; four"
        );
    }

    #[test]
    fn success_returns_stdout_and_closes_stdin() {
        // `cat` with a closed stdin ends at once instead of waiting for input.
        assert_eq!(
            run(Command::new("sh").args(["-c", "cat; echo ok"])).unwrap(),
            "ok\n"
        );
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let mut cmd = Command::new("mkfs.ext4");
        cmd.args(["-L", "COS STATE", "/dev/loop0"]);
        assert_eq!(command_line(&cmd), "mkfs.ext4 -L 'COS STATE' /dev/loop0");
    }

    #[test]
    fn one_line_prints_every_cause_once_and_in_order() {
        let err = CommandError::Start {
            program: "modprobe".into(),
            source: io::Error::from_raw_os_error(13),
        };
        assert_eq!(
            one_line(&err),
            "cannot start modprobe: Permission denied (os error 13)"
        );
        assert_eq!(repeated_source(&err), None);
        // Nothing is hidden: an error that repeats its source shows it twice, and the check
        // for tests names it.
        #[derive(Debug, thiserror::Error)]
        #[error("read /x: {0}")]
        struct Repeats(#[source] io::Error);
        let err = Repeats(io::Error::from_raw_os_error(2));
        let cause = "No such file or directory (os error 2)";
        assert_eq!(one_line(&err), format!("read /x: {cause}: {cause}"));
        assert_eq!(
            repeated_source(&err),
            Some((format!("read /x: {cause}"), cause.to_string()))
        );
        // A one-word cause (a part name) may occur by coincidence: not reported.
        #[derive(Debug, thiserror::Error)]
        #[error("step \"layout\"")]
        struct Step(#[source] Part);
        #[derive(Debug, thiserror::Error)]
        #[error("layout")]
        struct Part;
        assert_eq!(repeated_source(&Step(Part)), None);
    }

    #[test]
    fn output_and_status_do_not_check_the_exit_status() {
        let out =
            output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 4"])).unwrap();
        assert_eq!(out.status.code(), Some(4));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        // status: the outputs go to /dev/null, stdin is closed, the exit status is the answer.
        let script = r#"test "$(readlink /proc/$$/fd/1)" = /dev/null &&
            test "$(readlink /proc/$$/fd/2)" = /dev/null && test "$(readlink /proc/$$/fd/0)" = /dev/null && exit 5"#;
        assert_eq!(
            status(Command::new("sh").args(["-c", script]))
                .unwrap()
                .code(),
            Some(5)
        );
        assert!(matches!(
            status_missing(),
            Err(CommandError::Missing { .. })
        ));
        assert!(matches!(
            output(&mut Command::new("/nonexistent/udhcpc")),
            Err(CommandError::Missing { .. })
        ));
    }

    fn status_missing() -> Result<ExitStatus, CommandError> {
        status(&mut Command::new("/nonexistent/systemctl"))
    }
}
