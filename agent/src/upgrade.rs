//! The upgrade path: resolve, verify, check space, pull only missing layers, write the
//! passive slot, flip the boot pointer last. The booted slot is never written.
//!
//! The network parts are async; everything that blocks (hooks, mounts, copies, fsync'd
//! writes) runs on tokio's blocking pool through [`crate::blocking`], so the runtime's workers (and
//! the daemon's bus handlers that share them) always stay responsive.

use std::path::PathBuf;

use clb_ondisk::{BootState, SlotName};

use crate::apply::{self, ApplyOptions};
use crate::error::{ClbError, Result};
use crate::hooks::Hooks;
use crate::progress::Progress;
use crate::pull::{PullOptions, PullStats};
use crate::registry::Registry;
use crate::store::StateStore;
use crate::{blocking, download};

pub struct UpgradeRequest {
    pub image: String,
    pub keys: Vec<PathBuf>,
    pub verify: bool,
    pub signature_repository: Option<String>,
    pub max_tries: Option<u32>,
    pub pull: PullOptions,
    pub hooks: Hooks,
    /// Stage the recovery slot (on `COS_RECOVERY`) instead of the passive A/B slot; the boot
    /// state is not touched.
    pub recovery: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UpgradeReport {
    pub slot: SlotName,
    pub image: String,
    pub digest: String,
    pub verified_with: Option<String>,
    /// Nothing to do: the slot the next boot tries already holds this digest.
    pub up_to_date: bool,
    /// Failures of after-/post- hooks (the slot is staged regardless).
    pub hook_warnings: Vec<String>,
    #[serde(flatten)]
    pub stats: PullStats,
}

/// Which slot an upgrade writes. Never the booted one; offline, never the last good one.
pub fn target_slot(state: Option<&BootState>, booted: Option<SlotName>) -> SlotName {
    let Some(state) = state else {
        return SlotName::A;
    };
    match booted {
        Some(SlotName::Recovery) | None => {
            if state.active == SlotName::Recovery {
                SlotName::A
            } else if state.good {
                state.active.other().unwrap_or(SlotName::A)
            } else {
                // The active slot was staged but never proved itself: replace it and keep
                // the known-good fallback.
                state.active
            }
        }
        Some(b) => b.other().unwrap_or(SlotName::A),
    }
}

/// Download and stage in one step, under one lock: [`crate::download`] then
/// [`crate::apply`]. A failure removes what it added to the store, except partial downloads
/// from a registry that vanished mid-transfer (kept to resume).
pub async fn upgrade(
    store: &StateStore,
    registry: &Registry,
    req: &UpgradeRequest,
    booted: Option<SlotName>,
    progress: &Progress,
) -> Result<UpgradeReport> {
    let _lock = store.lock()?;
    let snapshot = store.snapshot();
    let (record, downloaded) =
        download::download_locked(store, registry, req, true, progress).await?;
    let Some(record) = record else {
        let current = if req.recovery {
            SlotName::Recovery
        } else {
            store
                .read_bootstate()?
                .map_or(SlotName::A, |state| state.active)
        };
        return Ok(UpgradeReport {
            slot: current,
            image: downloaded.image,
            digest: downloaded.digest,
            verified_with: downloaded.verified_with,
            up_to_date: true,
            hook_warnings: Vec::new(),
            stats: downloaded.stats,
        });
    };
    let opts = ApplyOptions {
        hooks: req.hooks.clone(),
        max_tries: req.max_tries,
        recovery: req.recovery,
        before_hooks: false,
    };
    match apply::apply_locked(store, record, &opts, booted, progress).await {
        Ok(mut report) => {
            report.stats = downloaded.stats;
            Ok(report)
        }
        Err(e) => {
            blocking(move || {
                snapshot.undo();
                Ok(())
            })
            .await?;
            Err(e)
        }
    }
}

/// Makes the other A/B slot active for the next boot.
pub fn rollback(store: &StateStore) -> Result<(SlotName, SlotName)> {
    let _lock = store.lock()?;
    let mut state = installed_state(store)?;
    let from = state.active;
    let to = from.other().ok_or_else(|| {
        ClbError::State("the recovery slot is active; nothing to roll back to".into())
    })?;
    let Some(manifest) = store.read_slot(to)? else {
        return Err(ClbError::State(format!(
            "slot {to} is empty; nothing to roll back to"
        )));
    };
    if let Some(missing) = manifest.layer_digests().find(|d| !store.has_layer(d)) {
        return Err(ClbError::State(format!(
            "slot {to} is incomplete: layer {missing} is missing"
        )));
    }
    state.rollback_to(to);
    store.write_bootstate(&state)?;
    Ok((from, to))
}

/// Marks the booted slot (offline: the active one) good or bad.
pub fn mark(store: &StateStore, booted: Option<SlotName>, good: bool) -> Result<BootState> {
    let _lock = store.lock()?;
    let mut state = installed_state(store)?;
    if let Some(b) = booted
        && b != state.active
    {
        return Err(ClbError::State(format!(
            "the booted slot {b} is not the active slot {}; nothing to mark",
            state.active
        )));
    }
    if good {
        state.mark_good();
    } else {
        state.mark_bad()?;
    }
    store.write_bootstate(&state)?;
    Ok(state)
}

fn installed_state(store: &StateStore) -> Result<BootState> {
    store
        .read_bootstate()?
        .ok_or_else(|| ClbError::State(format!("nothing installed in {}", store.root().display())))
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_never_the_booted_or_last_good_slot() {
        assert_eq!(target_slot(None, None), SlotName::A);
        let mut s = BootState::new(SlotName::A, 3);
        assert_eq!(target_slot(Some(&s), None), SlotName::B);
        assert_eq!(target_slot(Some(&s), Some(SlotName::A)), SlotName::B);
        s.stage(SlotName::B);
        // Offline: B never booted, A is the good fallback: re-stage B.
        assert_eq!(target_slot(Some(&s), None), SlotName::B);
        // Booted A with B staged: still B.
        assert_eq!(target_slot(Some(&s), Some(SlotName::A)), SlotName::B);
        // Booted B (not yet marked good): A.
        assert_eq!(target_slot(Some(&s), Some(SlotName::B)), SlotName::A);
    }
}
