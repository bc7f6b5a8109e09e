//! The upgrade path: resolve, verify, check space, pull only missing layers, write the
//! passive slot, flip the boot pointer last. The booted slot is never written.
//!
//! The network parts are async; everything that blocks (hooks, mounts, copies, fsync'd
//! writes) runs on tokio's blocking pool through [`crate::blocking`], so the runtime's workers (and
//! the daemon's bus handlers that share them) always stay responsive.

use clb_ondisk::{BootState, SlotName};

use crate::apply::{self, ApplyOptions};
use crate::error::{ClbError, Result};
use crate::progress::Progress;
use crate::registry::Registry;
use crate::store::StateStore;
use crate::{blocking, download};

pub use crate::stage::{UpgradeReport, UpgradeRequest, now_rfc3339, target_slot};

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
        return downloaded.already_staged(store, req.recovery);
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
/// Waits a while for the store lock: the boot's commit must not fail because a download
/// happens to run.
pub fn mark(store: &StateStore, booted: Option<SlotName>, good: bool) -> Result<BootState> {
    let _lock = store.lock_waiting(MARK_LOCK_WAIT)?;
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
    if good && booted.is_some() {
        crate::target::record_boot_committed();
    }
    Ok(state)
}

/// How long `mark` waits for another operation to release the store.
const MARK_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

fn installed_state(store: &StateStore) -> Result<BootState> {
    store
        .read_bootstate()?
        .ok_or_else(|| ClbError::State(format!("nothing installed in {}", store.root().display())))
}
