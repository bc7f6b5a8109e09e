//! `datasource:`: the user data, hostname and SSH keys of the cloud (or config volume) the
//! machine runs on, fetched once and written where the stages read them, as yip does.
//!
//! Providers are tried in the configured order; the first that answers wins. A provider that
//! is absent costs at most a connect timeout (the metadata endpoint is probed once per run) or
//! one `blkid` lookup. One that answers without user data still wins: its hostname and keys
//! are applied, and having no user data is not an error.

mod metadata;

mod volume;

use std::time::Duration;

use crate::ctx::Ctx;
use crate::exec::{Owners, ensure_file, hostname, run_script};
use crate::fetch::FetchError;
use crate::schema::Datasource;
use clb_command::CommandError;

/// Where yip (and linuxkit's metadata tool before it) writes what a provider found, and the
/// default directory for the user data.
pub(crate) const CONFIG_PATH: &str = "/run/config";
/// The name of the user data file when it is a valid cloud-config and `userdata_name` is unset.
const USERDATA_NAME: &str = "userdata.yaml";
/// User data larger than this is refused; clouds cap it far lower (AWS 16 KiB, GCP 256 KiB).
const MAX_USER_DATA: usize = 1 << 20;

/// What one provider found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Found {
    pub user_data: Option<Vec<u8>>,
    pub hostname: Option<String>,
    pub ssh_keys: Vec<String>,
}

/// A provider that answered but whose answer is unusable, or why none answered.
#[derive(Debug, thiserror::Error)]
pub enum DatasourceError {
    /// The provider answered with something that is not what its API documents.
    #[error("{provider}: {problem}")]
    Garbage {
        provider: &'static str,
        problem: String,
    },
    /// A request to a provider that had answered before failed.
    #[error("{provider}")]
    Fetch {
        provider: &'static str,
        #[source]
        source: Box<FetchError>,
    },
    /// Finding, mounting or unmounting a config volume failed.
    #[error("{provider}")]
    Command {
        provider: &'static str,
        #[source]
        source: CommandError,
    },
    /// Reading a config volume or a file failed.
    #[error("{provider}: {action}")]
    Io {
        provider: &'static str,
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// No provider answered; each one's reason, and the first broken provider's error.
    #[error("no datasource answered ({})", .tried.join("; "))]
    NoneAnswered {
        tried: Vec<String>,
        #[source]
        broken: Option<Box<DatasourceError>>,
    },
}

/// A provider's answer: it is there (with what it found), or it is not (and why).
pub(crate) enum Probe {
    Found(Found),
    Absent(String),
}

/// The providers clb knows, by the names yip uses (`cdrom` reads a NoCloud `cidata` volume,
/// also called `nocloud`).
pub const PROVIDERS: &[&str] = &[
    "cdrom",
    "nocloud",
    "config-drive",
    "aws",
    "gcp",
    "azure",
    "openstack",
    "hetzner",
    "digitalocean",
    "file",
];

/// yip providers clb does not implement: a warning names them and they are skipped.
const UNSUPPORTED: &[&str] = &["packet", "scaleway", "vultr", "metaldata", "maas", "vmware"];

/// Runs the `datasource:` part of a step.
pub(crate) fn datasource(ctx: &mut Ctx, ds: &Datasource) -> Result<(), crate::StepError> {
    let mut providers: Vec<&str> = Vec::new();
    for p in &ds.providers {
        if providers.contains(&p.as_str()) {
            continue;
        }
        if UNSUPPORTED.contains(&p.as_str()) || !PROVIDERS.contains(&p.as_str()) {
            ctx.notes.push(format!(
                "datasource provider {p:?} is not supported by clb: skipped"
            ));
            tracing::warn!(provider = %p, "datasource provider not supported: skipped");
            continue;
        }
        providers.push(p);
    }
    if providers.is_empty() {
        return Ok(());
    }
    // Asking is not a change: recorded as an action only in a dry run, which asks nothing.
    if ctx.dry_run {
        ctx.act(format!("query the datasources {}", providers.join(", ")));
        return Ok(());
    }
    let file_path = (!ds.path.is_empty()).then(|| ctx.path(&ds.path));
    let mut endpoint = metadata::Endpoint::new(ctx.metadata_endpoint.as_deref());
    let (winner, found) = query(&providers, file_path.as_ref(), &mut endpoint)?;
    tracing::info!(provider = winner, "datasource answered");
    ctx.notes.push(format!("datasource {winner} answered"));
    // yip: the `file` provider reads `path`, so its data goes to the default directory.
    let dir = if ds.path.is_empty() || winner == "file" {
        CONFIG_PATH
    } else {
        ds.path.as_str()
    };
    let name = if ds.userdata_name.is_empty() {
        USERDATA_NAME
    } else {
        ds.userdata_name.as_str()
    };
    write_found(ctx, dir, name, &found)
}

/// Asks each provider in turn; the first that answers, and what it found.
fn query(
    providers: &[&str],
    file_path: Option<&std::path::PathBuf>,
    endpoint: &mut metadata::Endpoint,
) -> Result<(&'static str, Found), DatasourceError> {
    let mut tried = Vec::new();
    let mut broken = None;
    for &name in providers {
        let outcome = match name {
            "cdrom" | "nocloud" => volume::nocloud(),
            "config-drive" => volume::config_drive(),
            "file" => volume::file(file_path.map(|p| p.as_path())),
            cloud => metadata::query(endpoint, cloud),
        };
        match outcome {
            Ok(Probe::Found(found)) => return Ok((canonical(name), found)),
            Ok(Probe::Absent(why)) => {
                tracing::debug!(provider = name, %why, "datasource absent");
                tried.push(format!("{name}: {why}"));
            }
            Err(e) => {
                let line = clb_command::one_line(&e);
                tracing::warn!("datasource {line}");
                // The first broken provider's error is the source, printed after the list.
                if broken.is_none() {
                    tried.push(format!("{name}: unusable answer"));
                    broken = Some(Box::new(e));
                } else {
                    tried.push(line);
                }
            }
        }
    }
    Err(DatasourceError::NoneAnswered { tried, broken })
}

/// The `&'static` spelling of a provider name (the list holds them all).
fn canonical(name: &str) -> &'static str {
    PROVIDERS
        .iter()
        .find(|p| **p == name)
        .copied()
        .unwrap_or("datasource")
}

/// Writes what was found as yip does: the raw user data to `<dir>/userdata`, and to
/// `<dir>/<name>` when it is a cloud-config; a `#!` script is run instead. The hostname and
/// keys go to `/run/config/hostname` and `/run/config/ssh/authorized_keys`, and are applied
/// (the hostname, and root's `authorized_keys`).
fn write_found(
    ctx: &mut Ctx,
    dir: &str,
    name: &str,
    found: &Found,
) -> Result<(), crate::StepError> {
    if let Some(data) = &found.user_data {
        let raw = format!("{}/userdata", dir.trim_end_matches('/'));
        let script = data.starts_with(b"#!");
        ensure_file(
            ctx,
            &raw,
            data,
            if script { 0o744 } else { 0o644 },
            Owners::default(),
        )?;
        let text = String::from_utf8_lossy(data);
        if script {
            run_script(ctx, &raw)?;
        } else if crate::parse_str("user data", &text).is_ok() {
            let yaml = format!("{}/{name}", dir.trim_end_matches('/'));
            ensure_file(ctx, &yaml, data, 0o644, Owners::default())?;
        } else {
            ctx.notes
                .push("the user data is neither a cloud-config nor a script".to_string());
        }
    }
    if let Some(name) = &found.hostname {
        let name = short_enough(name);
        ensure_file(
            ctx,
            &format!("{CONFIG_PATH}/hostname"),
            name.as_bytes(),
            0o644,
            Owners::default(),
        )?;
        hostname(ctx, name)?;
    }
    if !found.ssh_keys.is_empty() {
        let text: String = found.ssh_keys.iter().map(|k| format!("{k}\n")).collect();
        ensure_file(
            ctx,
            &format!("{CONFIG_PATH}/ssh/authorized_keys"),
            text.as_bytes(),
            0o600,
            Owners::default(),
        )?;
        let keys = std::collections::BTreeMap::from([("root".to_string(), found.ssh_keys.clone())]);
        if let Some(e) = crate::exec::authorized_keys(ctx, &keys).into_iter().next() {
            return Err(e);
        }
    }
    Ok(())
}

/// A hostname of at most 64 bytes: a longer FQDN (GCP's can be) keeps its first label.
fn short_enough(name: &str) -> &str {
    let name = name.trim();
    if name.len() <= 64 {
        name
    } else {
        name.split('.').next().unwrap_or(name)
    }
}

/// How long a provider may take to accept a connection (absent ones must cost little), and
/// to answer each read once connected.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_long_fqdn_keeps_its_first_label() {
        assert_eq!(
            short_enough("node-1.example.internal\n"),
            "node-1.example.internal"
        );
        let long = format!("node-2.{}.internal", "x".repeat(70));
        assert_eq!(short_enough(&long), "node-2");
    }

    #[test]
    fn none_answered_lists_every_provider_and_keeps_the_broken_ones_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing");
        let err = query(
            &["file"],
            Some(&missing),
            &mut metadata::Endpoint::new(None),
        )
        .unwrap_err();
        let line = clb_command::one_line(&err);
        assert!(line.starts_with("no datasource answered (file: "), "{line}");
        let bad = dir.path().join("dir");
        std::fs::create_dir(&bad).unwrap();
        let err = query(&["file"], Some(&bad), &mut metadata::Endpoint::new(None)).unwrap_err();
        match &err {
            DatasourceError::NoneAnswered {
                broken: Some(b), ..
            } => {
                assert!(
                    matches!(
                        **b,
                        DatasourceError::Io {
                            provider: "file",
                            ..
                        }
                    ),
                    "{b:?}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
