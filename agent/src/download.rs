//! `clb upgrade --download-only`: resolve, verify and pull an image's layers into the store,
//! then record what was fetched in `slots/download.json`. No slot and no boot state is
//! touched, so a download can happen any time; [`crate::apply`] stages it later, offline.

use clb_ondisk::atomic::write_atomic;
use clb_ondisk::{LayerRecord, SlotName, Verification};

use crate::trust::{self, Decision};

use crate::error::{ClbError, Result};
use crate::progress::Progress;
use crate::pull::{self, PullStats};
use crate::registry::Registry;
use crate::stage::{UpgradeReport, UpgradeRequest, now_rfc3339};
use crate::store::StateStore;
use crate::{blocking, signatures};

pub const DOWNLOAD_SCHEMA: u32 = 1;

/// A verified image whose layers are all in the store, waiting to be staged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DownloadRecord {
    pub schema: u32,
    pub image: String,
    pub digest: String,
    /// Layers bottom to top, as a slot manifest lists them.
    pub layers: Vec<LayerRecord>,
    pub verified: Option<Verification>,
    pub downloaded_at: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DownloadReport {
    pub image: String,
    pub digest: String,
    pub verified_with: Option<String>,
    /// The slot the next boot tries already holds this digest: nothing was fetched.
    pub up_to_date: bool,
    #[serde(flatten)]
    pub stats: PullStats,
}

impl DownloadReport {
    /// The report of an upgrade whose image the slot the next boot tries (the recovery slot
    /// with `recovery`) already holds: nothing to stage.
    pub fn already_staged(self, store: &StateStore, recovery: bool) -> Result<UpgradeReport> {
        let slot = if recovery {
            SlotName::Recovery
        } else {
            store
                .read_bootstate()?
                .map_or(SlotName::A, |state| state.active)
        };
        Ok(UpgradeReport {
            slot,
            image: self.image,
            digest: self.digest,
            verified_with: self.verified_with,
            up_to_date: true,
            hook_warnings: Vec::new(),
            stats: self.stats,
        })
    }
}

impl StateStore {
    pub fn read_download(&self) -> Result<Option<DownloadRecord>> {
        let path = self.layout().download_record();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ClbError::State(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClbError::io(format!("reading {}", path.display()))(e)),
        }
    }

    pub fn write_download(&self, record: &DownloadRecord) -> Result<()> {
        let path = self.layout().download_record();
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| ClbError::State(format!("serializing {}: {e}", path.display())))?;
        write_atomic(&path, &json).map_err(ClbError::io(format!("writing {}", path.display())))
    }

    /// Forgets the pending download (its layers become garbage unless a slot uses them).
    pub fn remove_download(&self) -> Result<()> {
        let path = self.layout().download_record();
        match std::fs::remove_file(&path) {
            Ok(()) => clb_ondisk::atomic::sync_dir(&self.layout().slots_dir())
                .map_err(ClbError::io("syncing the slots directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ClbError::io(format!("removing {}", path.display()))(e)),
        }
    }
}

/// Downloads `req.image` into the store and records it. Takes the store lock.
pub async fn download(
    store: &StateStore,
    registry: &Registry,
    req: &UpgradeRequest,
    progress: &Progress,
) -> Result<DownloadReport> {
    let _lock = store.lock()?;
    let (_, report) = download_locked(store, registry, req, false, progress).await?;
    Ok(report)
}

/// The download itself, for callers that already hold the store lock. Returns the record
/// (`None` when the active slot already holds the image) and the report. `before_hooks`:
/// run the `before-upgrade` hooks once the download is known to be needed (a one-step
/// upgrade does; a download for later leaves them to the apply).
pub(crate) async fn download_locked(
    store: &StateStore,
    registry: &Registry,
    req: &UpgradeRequest,
    before_hooks: bool,
    progress: &Progress,
) -> Result<(Option<DownloadRecord>, DownloadReport)> {
    let reference = Registry::parse_reference(&req.image)?;
    let (verify, keys, policy) = (req.verify, req.keys.clone(), req.policy.clone());
    let policy = blocking(move || Ok(trust::resolve(verify, &keys, policy.as_deref())?)).await?;
    progress.step("resolving");
    let image = registry.resolve(&reference).await?;
    tracing::info!(image = %req.image, digest = %image.manifest_digest, layers = image.manifest.layers.len(), "resolved");
    progress.step("verifying signatures");
    let decision = signatures::verify_image(
        registry,
        &image,
        &policy,
        req.signature_repository.as_deref(),
    )
    .await?;
    let verified = match decision {
        Decision::Verified(v) => {
            tracing::info!(digest = %image.manifest_digest, signer = %v.key, scope = ?v.policy_scope, "signatures verified");
            Some(v)
        }
        Decision::Unchecked => {
            tracing::warn!(image = %req.image, "signatures not verified (--no-verify or an insecure-accept-anything policy entry)");
            None
        }
    };
    let verified_with = verified.as_ref().map(|v| v.key.clone());
    if already_staged(store, req, &image.manifest_digest)? {
        tracing::info!(digest = %image.manifest_digest, "already staged");
        return Ok((
            None,
            DownloadReport {
                image: req.image.clone(),
                digest: image.manifest_digest,
                verified_with,
                up_to_date: true,
                stats: PullStats::default(),
            },
        ));
    }
    if before_hooks {
        let hooks = req.hooks.clone();
        blocking(move || hooks.before()).await?;
    }
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

    // Until the record is written the new files are referenced by nothing: a failure takes
    // them away again (except a registry that vanished mid-transfer: kept to resume).
    let snapshot = store.snapshot();
    store.ensure_dirs()?;
    progress.step("downloading");
    let pulled = pull::pull_layers(store, registry, &image, &req.pull, progress).await;
    let (layers, stats) = match pulled {
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
    let record = DownloadRecord {
        schema: DOWNLOAD_SCHEMA,
        image: req.image.clone(),
        digest: image.manifest_digest.clone(),
        layers,
        verified,
        downloaded_at: now_rfc3339(),
    };
    let (owned_store, owned_record) = (store.clone(), record.clone());
    blocking(move || owned_store.write_download(&owned_record)).await?;
    tracing::info!(digest = %record.digest, "downloaded and verified; nothing staged yet");
    Ok((
        Some(record),
        DownloadReport {
            image: req.image.clone(),
            digest: image.manifest_digest,
            verified_with,
            up_to_date: false,
            stats,
        },
    ))
}

/// The slot the next boot tries (for `--recovery`: the recovery slot) already holds `digest`
/// with every layer present.
fn already_staged(store: &StateStore, req: &UpgradeRequest, digest: &str) -> Result<bool> {
    let current = if req.recovery {
        Some(SlotName::Recovery)
    } else {
        store.read_bootstate()?.map(|s| s.active)
    };
    let Some(current) = current else {
        return Ok(false);
    };
    Ok(store
        .read_slot(current)?
        .is_some_and(|m| m.digest == digest && m.layer_digests().all(|d| store.has_layer(d))))
}
