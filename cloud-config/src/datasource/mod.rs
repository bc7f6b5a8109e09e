//! `datasource:`: the user data, hostname and SSH keys of the cloud (or config volume) the
//! machine runs on, fetched once and written where the stages read them, as yip does.
//!
//! Providers are tried in the configured order; the first that answers wins. A provider that
//! is absent costs at most a connect timeout (the metadata endpoint is probed once per run) or
//! one `blkid` lookup. One that answers without user data still wins: its hostname and keys
//! are applied, and having no user data is not an error.

pub(crate) mod error;
mod metadata;
mod openstack;
mod volume;

pub use error::DatasourceError;
pub(crate) use metadata::Endpoint;

use std::time::Duration;

/// User data larger than this is refused; clouds cap it far lower (AWS 16 KiB, GCP 256 KiB).
const MAX_USER_DATA: usize = 1 << 20;

/// What one provider found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Found {
    pub user_data: Option<Vec<u8>>,
    pub hostname: Option<String>,
    pub ssh_keys: Vec<String>,
    /// The provider's network configuration as it serves it, and the file name it is kept
    /// under in `/run/config`: `network-config` (cloud-init's format: NoCloud, Hetzner) or
    /// `network_data.json` (OpenStack's).
    pub network: Option<(&'static str, Vec<u8>)>,
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

/// Asks each provider in turn; the first that answers, and what it found.
pub(crate) fn query(
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

/// How long a provider may take to accept a connection (absent ones must cost little), and
/// to answer each read once connected.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
