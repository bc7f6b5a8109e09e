//! Checks of single values, made while merging because only then is the value's position in
//! its file still at hand. Errors name the key and point at the value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::error::ConfigError;
use super::model::{FleetLockConfig, PeriodicConfig, WindowConfig};
use super::partial::{PartialFleetLock, PartialPeriodic, PartialWindow, Text};
use super::values;

/// Value checks of one file; errors name the key and point at the value.
pub(crate) struct Check<'a> {
    pub(crate) file: &'a Path,
}

impl Check<'_> {
    fn err(&self, at: Location, key: &str, problem: impl std::fmt::Display) -> ConfigError {
        ConfigError::at(self.file, at, format!("{key}: {problem}"))
    }

    /// Empty text is refused rather than read as "unset": `key: null` says that explicitly.
    pub(crate) fn text(&self, key: &str, v: Text) -> Result<String, ConfigError> {
        if v.value.trim().is_empty() {
            return Err(self.err(
                v.referenced,
                key,
                "must not be empty (write `null` to go back to the default)",
            ));
        }
        Ok(v.value)
    }

    pub(crate) fn image(&self, v: Text) -> Result<String, ConfigError> {
        let at = v.referenced;
        let text = self.text("image", v)?;
        crate::registry::reference::parse(&text).map_err(|e| {
            self.err(
                at,
                "image",
                format!("{text:?} is not an image reference: {e}"),
            )
        })?;
        Ok(text)
    }

    /// A repository without tag or digest: signature tags are appended to it.
    pub(crate) fn repository(&self, v: Text) -> Result<String, ConfigError> {
        let key = "signature_repository";
        let at = v.referenced;
        let text = self.text(key, v)?;
        let probe = format!("{text}:probe");
        match crate::registry::reference::parse(&probe) {
            Ok(r) if r.tag() == Some("probe") && r.digest().is_none() => Ok(text),
            _ => Err(self.err(
                at,
                key,
                format!("{text:?} is not a repository (write registry/path, without a tag)"),
            )),
        }
    }

    /// Absolute, because the daemon's working directory says nothing about where files are.
    pub(crate) fn path(&self, key: &str, v: Text) -> Result<PathBuf, ConfigError> {
        let at = v.referenced;
        let text = self.text(key, v)?;
        if !text.starts_with('/') {
            return Err(self.err(at, key, format!("{text:?} is not an absolute path")));
        }
        Ok(PathBuf::from(text))
    }

    pub(crate) fn paths(&self, key: &str, v: Vec<Text>) -> Result<Vec<PathBuf>, ConfigError> {
        v.into_iter()
            .enumerate()
            .map(|(i, p)| self.path(&format!("{key}[{i}]"), p))
            .collect()
    }

    pub(crate) fn duration(
        &self,
        key: &str,
        v: Text,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = values::duration(&v.value).map_err(|e| self.err(v.referenced, key, e))?;
        if d < min {
            return Err(self.err(
                v.referenced,
                key,
                format!("must be at least {} s", min.as_secs()),
            ));
        }
        Ok(d)
    }

    pub(crate) fn bounded(
        &self,
        key: &str,
        v: Text,
        min: u32,
        max: u32,
    ) -> Result<u32, ConfigError> {
        values::bounded(&v.value, min, max).map_err(|e| self.err(v.referenced, key, e))
    }

    pub(crate) fn periodic(
        &self,
        out: &mut PeriodicConfig,
        p: PartialPeriodic,
    ) -> Result<(), ConfigError> {
        // Time zone names are checked by the code that loads them; here only presence.
        p.time_zone.apply(&mut out.time_zone, None, |v| {
            self.text("periodic.time_zone", v).map(Some)
        })?;
        p.windows.apply(&mut out.windows, Vec::new(), |v| {
            v.into_iter()
                .enumerate()
                .map(|(i, w)| self.window(i, w))
                .collect()
        })?;
        Ok(())
    }

    pub(crate) fn window(
        &self,
        i: usize,
        w: Spanned<PartialWindow>,
    ) -> Result<WindowConfig, ConfigError> {
        let key = format!("periodic.windows[{i}]");
        let missing = |field: &str| self.err(w.referenced, &key, format!("{field} is missing"));
        let PartialWindow {
            days,
            start_time,
            length_minutes,
        } = w.value;
        let days = days.ok_or_else(|| missing("days"))?;
        if days.value.is_empty() {
            return Err(self.err(
                days.referenced,
                &format!("{key}.days"),
                "names no day (write at least one, e.g. [Sat])",
            ));
        }
        let days = days
            .value
            .into_iter()
            .map(|d| {
                values::weekday(&d.value)
                    .map(str::to_string)
                    .map_err(|e| self.err(d.referenced, &format!("{key}.days"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let start = start_time.ok_or_else(|| missing("start_time"))?;
        let start_time = values::clock_time(&start.value)
            .map_err(|e| self.err(start.referenced, &format!("{key}.start_time"), e))?;
        let length = length_minutes.ok_or_else(|| missing("length_minutes"))?;
        // A week: a longer window would overlap itself.
        let length_minutes = self.bounded(&format!("{key}.length_minutes"), length, 1, 10_080)?;
        Ok(WindowConfig {
            days,
            start_time,
            length_minutes,
        })
    }

    pub(crate) fn fleet_lock(
        &self,
        out: &mut FleetLockConfig,
        p: PartialFleetLock,
    ) -> Result<(), ConfigError> {
        p.base_url.apply(&mut out.base_url, None, |v| {
            let at = v.referenced;
            let url = self.text("fleet_lock.base_url", v)?;
            let host = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or("");
            if host.is_empty() || host.starts_with('/') {
                return Err(self.err(
                    at,
                    "fleet_lock.base_url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            Ok(Some(url))
        })?;
        p.group.apply(&mut out.group, None, |v| {
            self.text("fleet_lock.group", v).map(Some)
        })?;
        p.client_id.apply(&mut out.client_id, None, |v| {
            self.text("fleet_lock.client_id", v).map(Some)
        })?;
        Ok(())
    }
}
