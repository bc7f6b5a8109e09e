//! `datasource:`: asks the providers (`crate::datasource`) and writes what the first that
//! answered found, as yip does.

use std::collections::BTreeMap;

use super::files::{Owners, ensure_file};
use super::system::{command, hostname};
use super::users::authorized_keys;
use crate::ctx::Ctx;
use crate::datasource::{Endpoint, Found, PROVIDERS, query};
use crate::error::StepError;
use crate::schema::Datasource;

/// Where yip (and linuxkit's metadata tool before it) writes what a provider found, and the
/// default directory for the user data.
const CONFIG_PATH: &str = "/run/config";
/// The name of the user data file when it is a valid cloud-config and `userdata_name` is unset.
const USERDATA_NAME: &str = "userdata.yaml";

/// Runs the `datasource:` part of a step.
pub(crate) fn datasource(ctx: &mut Ctx, ds: &Datasource) -> Result<(), StepError> {
    let mut providers: Vec<&str> = Vec::new();
    for p in &ds.providers {
        if providers.contains(&p.as_str()) {
            continue;
        }
        // yip's packet, scaleway, vultr, metaldata, maas and vmware among them (the docs say
        // why).
        if !PROVIDERS.contains(&p.as_str()) {
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
    let mut endpoint = Endpoint::new(ctx.metadata_endpoint.as_deref());
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

/// Writes what was found as yip does: the raw user data to `<dir>/userdata`, and to
/// `<dir>/<name>` when it is a cloud-config; a `#!` script is run instead. The hostname and
/// keys go to `/run/config/hostname` and `/run/config/ssh/authorized_keys`, and are applied
/// (the hostname, and root's `authorized_keys`).
fn write_found(ctx: &mut Ctx, dir: &str, name: &str, found: &Found) -> Result<(), StepError> {
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
            command(ctx, &raw)?;
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
    if let Some((file, data)) = &found.network {
        // Kept for the OS's network tooling (netplan, cloud-init's converters, a `network`
        // stage); clb does not translate it.
        ensure_file(
            ctx,
            &format!("{CONFIG_PATH}/{file}"),
            data,
            0o644,
            Owners::default(),
        )?;
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
        let keys = BTreeMap::from([("root".to_string(), found.ssh_keys.clone())]);
        if let Some(e) = authorized_keys(ctx, &keys).into_iter().next() {
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

#[cfg(test)]
mod tests {
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
}
