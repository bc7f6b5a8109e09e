//! The upgrade path: resolve, verify, check space, pull only missing layers, write the
//! passive slot, flip the boot pointer last. The booted slot is never written.
//!
//! The network parts are async; everything that blocks (hooks, mounts, copies, fsync'd
//! writes) runs on tokio's blocking pool through [`crate::blocking`], so the runtime's workers (and
//! the daemon's bus handlers that share them) always stay responsive.

use std::path::PathBuf;

use clb_ondisk::{BootState, SlotManifest, SlotName, Verification, bootstate::DEFAULT_MAX_TRIES};

use crate::error::{ClbError, Result};
use crate::hooks::Hooks;
use crate::progress::Progress;
use crate::pull::{self, PullOptions, PullStats};
use crate::registry::Registry;
use crate::store::StateStore;
use crate::{blocking, bootfiles, signatures};

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

pub async fn upgrade(
    store: &StateStore,
    registry: &Registry,
    req: &UpgradeRequest,
    booted: Option<SlotName>,
    progress: &Progress,
) -> Result<UpgradeReport> {
    let _lock = store.lock()?;
    let reference = Registry::parse_reference(&req.image)?;
    let keys = if req.verify {
        signatures::load_keys(&req.keys)?
    } else {
        tracing::warn!(image = %req.image, "signature verification disabled by --no-verify");
        Vec::new()
    };
    let state = if req.recovery {
        None
    } else {
        store.read_bootstate()?
    };
    let image = registry.resolve(&reference).await?;
    tracing::info!(image = %req.image, digest = %image.manifest_digest, layers = image.manifest.layers.len(), "resolved");
    let verified = if req.verify {
        let v =
            signatures::verify_image(registry, &image, &keys, req.signature_repository.as_deref())
                .await?;
        tracing::info!(digest = %v.digest, key = %v.key_source, "signature verified");
        Some(v)
    } else {
        None
    };
    let slot = if req.recovery {
        SlotName::Recovery
    } else {
        target_slot(state.as_ref(), booted)
    };
    if booted == Some(slot) {
        return Err(ClbError::State(format!(
            "refusing to write the booted slot {slot}"
        )));
    }
    let current = match (&state, req.recovery) {
        (_, true) => Some(SlotName::Recovery),
        (Some(s), false) => Some(s.active),
        (None, false) => None,
    };
    if let Some(current) = current
        && let Some(active) = store.read_slot(current)?
        && active.digest == image.manifest_digest
        && active.layer_digests().all(|d| store.has_layer(d))
    {
        tracing::info!(slot = %current, "already staged");
        return Ok(UpgradeReport {
            slot: current,
            image: req.image.clone(),
            digest: image.manifest_digest,
            verified_with: verified.map(|v| v.key_source),
            up_to_date: true,
            hook_warnings: Vec::new(),
            stats: PullStats::default(),
        });
    }
    let hooks = req.hooks.clone();
    blocking(move || hooks.before()).await?;

    let (download, needed) = pull::space_needed(store, &image);
    let available = store.available_bytes()?;
    if needed > available {
        return Err(ClbError::NoSpace {
            path: store.root().to_path_buf(),
            needed,
            available,
        });
    }
    tracing::info!(download, available, "space checked");

    // Everything up to the boot-state writes only adds files no slot references; a failure
    // takes them away again (except a registry that vanished mid-transfer: kept to resume).
    let snapshot = store.snapshot();
    let prepared = prepare(store, registry, &image, req, progress).await;
    let (layers, stats, staged_boot) = match prepared {
        Ok(v) => v,
        Err(e) => {
            if !matches!(e, ClbError::Unreachable(_)) {
                blocking(move || {
                    snapshot.undo();
                    Ok(())
                })
                .await?;
            }
            return Err(e);
        }
    };

    let commit = Commit {
        store: store.clone(),
        slot,
        state,
        max_tries: req.max_tries,
        recovery: req.recovery,
        staged_boot,
        manifest: SlotManifest {
            schema: clb_ondisk::slot::SLOT_SCHEMA,
            slot,
            image: req.image.clone(),
            digest: image.manifest_digest.clone(),
            layers,
            verified: verified.as_ref().map(|v| Verification {
                key: v.key_source.clone(),
                key_fingerprint: v.key_fingerprint.clone(),
            }),
            staged_at: now_rfc3339(),
            boot: None,
        },
    };
    let digest = blocking(move || commit.write()).await?;
    tracing::info!(%slot, %digest, "staged; the next boot tries it");
    let hooks = req.hooks.clone();
    let hook_warnings = blocking(move || Ok(hooks.after())).await?;
    Ok(UpgradeReport {
        slot,
        image: req.image.clone(),
        digest,
        verified_with: verified.map(|v| v.key_source),
        up_to_date: false,
        hook_warnings,
        stats,
    })
}

/// The writes that make a staged slot bootable, in their power-cut-safe order.
struct Commit {
    store: StateStore,
    slot: SlotName,
    state: Option<BootState>,
    /// `None` keeps the machine's count (every boot counts, so it is a machine setting, not
    /// only a new release's trial).
    max_tries: Option<u32>,
    recovery: bool,
    staged_boot: Option<bootfiles::StagedBoot>,
    manifest: SlotManifest,
}

impl Commit {
    /// Disarms the target as a fallback, commits its boot files and manifest, then flips the
    /// boot pointer last. Returns the staged digest.
    fn write(mut self) -> Result<String> {
        let store = &self.store;
        let mut next = match &self.state {
            Some(s) => {
                // Disarm the target as a fallback before overwriting it (power-cut safety).
                let mut disarmed = s.clone();
                disarmed.forget_fallback(self.slot);
                if &disarmed != s {
                    store.write_bootstate(&disarmed)?;
                }
                disarmed
            }
            None => BootState::new(self.slot, self.max_tries.unwrap_or(DEFAULT_MAX_TRIES)),
        };
        self.manifest.boot = bootfiles::commit(store, self.slot, self.staged_boot.take())?;
        store.write_slot(&self.manifest)?;
        if !self.recovery {
            if let Some(max) = self.max_tries {
                next.max_tries = max;
            }
            if self.state.is_some() {
                next.stage(self.slot);
            }
            store.write_bootstate(&next)?;
        }
        Ok(self.manifest.digest)
    }
}

/// Pulls the layers, then looks into the new root once: its kernel and initrd are copied out
/// and the hooks it ships run, before anything that could boot it is written.
async fn prepare(
    store: &StateStore,
    registry: &Registry,
    image: &crate::registry::ResolvedImage,
    req: &UpgradeRequest,
    progress: &Progress,
) -> Result<(
    Vec<clb_ondisk::LayerRecord>,
    PullStats,
    Option<bootfiles::StagedBoot>,
)> {
    store.ensure_dirs()?;
    let (layers, stats) = pull::pull_layers(store, registry, image, &req.pull, progress).await?;
    let paths: Vec<PathBuf> = layers
        .iter()
        .map(|l| store.layout().layer(&l.digest))
        .collect();
    let (store, hooks) = (store.clone(), req.hooks.clone());
    let boot = blocking(move || inspect_new_root(&store, &paths, &hooks)).await?;
    Ok((layers, stats, boot))
}

/// Mounts the new layer stack once: copies its kernel and initrd out and runs the hooks it
/// ships, then unmounts it.
fn inspect_new_root(
    store: &StateStore,
    paths: &[PathBuf],
    hooks: &Hooks,
) -> Result<Option<bootfiles::StagedBoot>> {
    let mnt = tempfile::Builder::new()
        .prefix("clb-new-root-")
        .tempdir()
        .map_err(ClbError::io("creating a mount point"))?;
    let stack = clb_disk::mount_layer_stack(paths, mnt.path())?;
    let inspected = bootfiles::extract(store, mnt.path())
        .and_then(|boot| hooks.in_image(mnt.path()).map(|()| boot));
    stack.unmount()?;
    inspected
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
