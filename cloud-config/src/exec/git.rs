//! `git`: a repository checked out at `path` with the `git` program: cloned when the path is
//! not a checkout, else fetched and reset to the remote branch (yip's plugin pulls too). Runs
//! on the host's git, writing into the root.

use std::process::Command;

use crate::ctx::Ctx;
use crate::error::StepError;
use crate::schema::Git;

pub(crate) fn git(ctx: &mut Ctx, g: &Git) -> Result<(), StepError> {
    if g.path.is_empty() {
        return Err(StepError::Invalid("git: no path".to_string()));
    }
    let dest = ctx.path(&g.path);
    let checkout = dest.join(".git").is_dir();
    let what = if checkout {
        format!("update the git checkout {} from {}", g.path, g.url)
    } else {
        format!("clone {} into {}", g.url, g.path)
    };
    if !ctx.act(what) {
        return Ok(());
    }
    // The key lives only as long as the command: a temporary file removed on drop.
    let key = if g.auth.private_key.is_empty() {
        None
    } else {
        let mut f = tempfile::NamedTempFile::new().map_err(StepError::io("write the git key"))?;
        std::io::Write::write_all(&mut f, g.auth.private_key.as_bytes())
            .map_err(StepError::io("write the git key"))?;
        Some(f)
    };
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        if g.auth.insecure {
            c.args(["-c", "http.sslVerify=false"]);
        }
        if let Some(k) = &key {
            let hosts = if g.auth.insecure {
                " -o StrictHostKeyChecking=no"
            } else {
                ""
            };
            c.env(
                "GIT_SSH_COMMAND",
                format!("ssh -i {} -o IdentitiesOnly=yes{hosts}", k.path().display()),
            );
        }
        // Never prompt: a missing credential is an error, not a hang.
        c.env("GIT_TERMINAL_PROMPT", "0");
        c.args(args);
        c
    };
    let url = with_credentials(g);
    if checkout {
        let d = dest.display().to_string();
        let branch = if g.branch.is_empty() {
            "HEAD"
        } else {
            &g.branch
        };
        clb_command::run(&mut git(&["-C", &d, "fetch", &url, branch]))?;
        clb_command::run(&mut git(&["-C", &d, "reset", "--hard", "FETCH_HEAD"]))?;
    } else {
        let mut args = vec!["clone"];
        if !g.branch.is_empty() {
            args.extend(["--branch", &g.branch]);
        }
        if g.branch_only {
            args.push("--single-branch");
        }
        let d = dest.display().to_string();
        args.extend(["--", &url, &d]);
        clb_command::run(&mut git(&args))?;
    }
    Ok(())
}

/// `https://user:password@host/...` when a username and password are given for an HTTP URL.
fn with_credentials(g: &Git) -> String {
    let has = !g.auth.username.is_empty() || !g.auth.password.is_empty();
    match g.url.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) if has => {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                            char::from(b).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect::<String>()
            };
            format!(
                "{scheme}://{}:{}@{rest}",
                enc(&g.auth.username),
                enc(&g.auth.password)
            )
        }
        _ => g.url.clone(),
    }
}
