//! `clb upgrade --apply`: stage the downloaded image into the passive slot with no network.
//! Every layer must already be in the store; the new root is mounted once to copy its kernel
//! out and run the hooks it ships, then the slot manifest is written and the boot pointer
//! flipped last. The booted slot is never written.

use std::path::PathBuf;

use clb_ondisk::{BootState, SlotManifest, SlotName, bootstate::DEFAULT_MAX_TRIES};

use crate::download::DownloadRecord;
use crate::error::{ClbError, Result};
use crate::hooks::Hooks;
use crate::progress::Progress;
use crate::stage::{UpgradeReport, now_rfc3339, target_slot};
use crate::store::StateStore;
use crate::{blocking, bootfiles};

/// What staging needs besides the downloaded record.
pub struct ApplyOptions {
    pub hooks: Hooks,
    pub max_tries: Option<u32>,
    /// Stage the recovery slot instead of the passive A/B slot (boot state untouched).
    pub recovery: bool,
    /// Run the `before-upgrade` hooks (a one-step upgrade already ran them before its
    /// download).
    pub before_hooks: bool,
}

/// Stages the pending download (`slots/download.json`). Takes the store lock.
pub async fn apply(
    store: &StateStore,
    opts: &ApplyOptions,
    booted: Option<SlotName>,
    progress: &Progress,
) -> Result<UpgradeReport> {
    let _lock = store.lock()?;
    let record = store.read_download()?.ok_or_else(|| {
        ClbError::State(
            "nothing downloaded to apply: run `clb upgrade --download-only -d IMAGE` first".into(),
        )
    })?;
    apply_locked(store, record, opts, booted, progress).await
}

/// The staging itself, for callers that already hold the store lock.
pub(crate) async fn apply_locked(
    store: &StateStore,
    record: DownloadRecord,
    opts: &ApplyOptions,
    booted: Option<SlotName>,
    progress: &Progress,
) -> Result<UpgradeReport> {
    if let Some(missing) = record.layers.iter().find(|l| !store.has_layer(&l.digest)) {
        return Err(ClbError::State(format!(
            "the download of {} is incomplete: layer {} is missing from the store; download it again",
            record.image, missing.digest
        )));
    }
    let state = if opts.recovery {
        None
    } else {
        store.read_bootstate()?
    };
    // A power cut after the boot pointer flipped but before the record was removed leaves
    // a record of what is already staged: finish that removal and say so.
    if let Some(s) = &state
        && let Some(active) = store.read_slot(s.active)?
        && active.digest == record.digest
    {
        store.remove_download()?;
        return Ok(UpgradeReport {
            slot: s.active,
            image: record.image,
            digest: record.digest,
            verified_with: record.verified.map(|v| v.key),
            up_to_date: true,
            hook_warnings: Vec::new(),
            stats: Default::default(),
        });
    }
    let slot = if opts.recovery {
        SlotName::Recovery
    } else {
        target_slot(state.as_ref(), booted)
    };
    if booted == Some(slot) {
        return Err(ClbError::State(format!(
            "refusing to write the booted slot {slot}"
        )));
    }
    if opts.before_hooks {
        let hooks = opts.hooks.clone();
        blocking(move || hooks.before()).await?;
    }
    progress.step("staging");
    let paths: Vec<PathBuf> = record
        .layers
        .iter()
        .map(|l| store.layout().layer(&l.digest))
        .collect();
    let (owned_store, hooks) = (store.clone(), opts.hooks.clone());
    let staged_boot = blocking(move || inspect_new_root(&owned_store, &paths, &hooks)).await?;
    let verified_with = record.verified.as_ref().map(|v| v.key.clone());
    let commit = Commit {
        store: store.clone(),
        slot,
        state,
        max_tries: opts.max_tries,
        recovery: opts.recovery,
        staged_boot,
        manifest: SlotManifest {
            schema: clb_ondisk::slot::SLOT_SCHEMA,
            slot,
            image: record.image.clone(),
            digest: record.digest.clone(),
            layers: record.layers,
            verified: record.verified,
            staged_at: now_rfc3339(),
            boot: None,
        },
    };
    let digest = blocking(move || commit.write()).await?;
    tracing::info!(%slot, %digest, "staged; the next boot tries it");
    let hooks = opts.hooks.clone();
    let hook_warnings = blocking(move || Ok(hooks.after())).await?;
    Ok(UpgradeReport {
        slot,
        image: record.image,
        digest,
        verified_with,
        up_to_date: false,
        hook_warnings,
        stats: Default::default(),
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
    /// Disarms the target as a fallback, commits its boot files and manifest, flips the boot
    /// pointer, and only then forgets the download (a power cut before that leaves a record
    /// whose image is already staged: applying it again is a no-op). Returns the digest.
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
        store.remove_download()?;
        Ok(self.manifest.digest)
    }
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
