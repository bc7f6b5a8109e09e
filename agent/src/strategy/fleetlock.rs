//! A FleetLock client (Zincati's reboot-coordination protocol): a counting semaphore on an
//! HTTP server, `POST {base}/v1/pre-reboot` to take a slot before rebooting and
//! `POST {base}/v1/steady-state` to give it back after a good boot. Each request carries
//! `fleet-lock-protocol: true` and `{"client_params": {"id": ..., "group": ...}}`; 200 means
//! done, anything else means not done, with an optional `{"kind", "value"}` error body.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;

use super::StrategyError;
use super::identity;
use crate::config::FleetLockConfig;

pub const DEFAULT_GROUP: &str = "default";
/// The protocol's guard against requests reaching the server by accident (a redirect).
pub const PROTOCOL_HEADER: &str = "fleet-lock-protocol";
/// Where the default client id comes from.
pub const MACHINE_ID_PATH: &str = "/etc/machine-id";

/// Error bodies longer than this are not the protocol's small JSON objects; the rest is dropped.
const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    pre_reboot_url: String,
    steady_state_url: String,
    id: String,
    group: String,
}

impl Client {
    /// `base_url` is the deployment's base (`http://fleetlock.example:8080` or with a path
    /// prefix); the `/v1/...` endpoints are appended to it.
    pub fn new(base_url: &str, group: &str, id: &str) -> Result<Self, StrategyError> {
        let base = validate_base_url(base_url)?;
        validate_group(group)?;
        if id.is_empty() || id.chars().any(char::is_control) {
            return Err(StrategyError::InvalidClientId { id: id.to_owned() });
        }
        let http = reqwest::Client::builder()
            // A redirected POST may reach another server or turn into a GET: the protocol
            // wants the answer of the configured server itself, so a redirect is a refusal.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("clb/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StrategyError::HttpClient(clb_command::one_line_deduplicated(&e)))?;
        Ok(Self {
            http,
            pre_reboot_url: format!("{base}/v1/pre-reboot"),
            steady_state_url: format!("{base}/v1/steady-state"),
            id: id.to_owned(),
            group: group.to_owned(),
        })
    }

    /// From the configuration; an unset `client_id` derives from `/etc/machine-id` (read
    /// here, once), an unset `group` is `default`.
    pub fn from_config(config: &FleetLockConfig) -> Result<Self, StrategyError> {
        Self::from_config_with_machine_id(config, Path::new(MACHINE_ID_PATH))
    }

    /// As [`Client::from_config`], reading the machine id from `machine_id_path`.
    pub fn from_config_with_machine_id(
        config: &FleetLockConfig,
        machine_id_path: &Path,
    ) -> Result<Self, StrategyError> {
        let base_url = config
            .base_url
            .as_deref()
            .ok_or(StrategyError::MissingBaseUrl)?;
        let group = config.group.as_deref().unwrap_or(DEFAULT_GROUP);
        let id = match &config.client_id {
            Some(id) => id.clone(),
            None => identity::client_id_from_file(machine_id_path)?,
        };
        Self::new(base_url, group, &id)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// RecursiveLock: takes a reboot slot (or confirms the one this id already holds).
    pub async fn pre_reboot(&self) -> Result<(), StrategyError> {
        self.post(&self.pre_reboot_url).await
    }

    /// UnlockIfHeld: releases this id's slot; succeeds too when it held none.
    pub async fn steady_state(&self) -> Result<(), StrategyError> {
        self.post(&self.steady_state_url).await
    }

    async fn post(&self, url: &str) -> Result<(), StrategyError> {
        let body = serde_json::json!({
            "client_params": { "id": self.id, "group": self.group }
        });
        let unreachable = |e: reqwest::Error| StrategyError::Unreachable {
            url: url.to_owned(),
            reason: clb_command::one_line_deduplicated(&e),
        };
        let mut response = self
            .http
            .post(url)
            .header(PROTOCOL_HEADER, "true")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(());
        }
        let mut raw = Vec::new();
        while raw.len() < MAX_ERROR_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => raw.extend_from_slice(&chunk),
                // The status already says no; a broken error body only loses the detail.
                Ok(None) | Err(_) => break,
            }
        }
        let (kind, reason) = describe_refusal(status, &raw);
        Err(StrategyError::Refused {
            url: url.to_owned(),
            status: status.as_u16(),
            kind,
            reason,
        })
    }
}

/// The protocol's `{"kind", "value"}` when the body is one, else the body's first line.
fn describe_refusal(status: StatusCode, raw: &[u8]) -> (Option<String>, String) {
    #[derive(serde::Deserialize)]
    struct ProtocolError {
        kind: String,
        value: String,
    }
    if let Ok(e) = serde_json::from_slice::<ProtocolError>(raw) {
        let reason = format!("{}: {}", e.kind, one_line(&e.value));
        return (Some(e.kind), reason);
    }
    let text = String::from_utf8_lossy(raw);
    let first = one_line(&text);
    let reason = if first.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_owned()
    } else {
        first
    };
    (None, reason)
}

fn one_line(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or_default();
    line.chars().take(200).collect()
}

/// Parses the base URL and returns it without a trailing `/`, ready for `/v1/...`.
fn validate_base_url(base_url: &str) -> Result<String, StrategyError> {
    let invalid = |reason: &str| StrategyError::InvalidBaseUrl {
        url: base_url.to_owned(),
        reason: reason.to_owned(),
    };
    let url = reqwest::Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base URL takes no query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn validate_group(group: &str) -> Result<(), StrategyError> {
    let ok = !group.is_empty()
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StrategyError::InvalidGroup {
            group: group.to_owned(),
        })
    }
}
