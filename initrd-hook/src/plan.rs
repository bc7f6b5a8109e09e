//! Which slot boots, and with which layers: the boot-state decision and the slot manifest,
//! on a mounted state partition (or any directory with its layout). No mounting here, so the
//! whole flow is tested on plain directories.

use std::path::PathBuf;

use clb_ondisk::bootstate::BootDecision;
use clb_ondisk::{BootState, SlotManifest, SlotName, StateLayout, atomic};

use crate::Fatal;

/// What the boot state decided for this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The slot to boot (`Recovery` for recovery boots).
    pub slot: SlotName,
    /// The boot state after the decision (`None` when recovery was forced on the command
    /// line and the boot state was not read).
    pub state: Option<BootState>,
    /// A try was used up (or a rollback recorded) and the new state was written back.
    pub written: bool,
}

impl Decision {
    /// The last boot of the other slot failed and this boot fell back.
    pub fn rolled_back(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.rolled_back)
    }

    /// The slot whose failed boot the boot state records (the one a rollback left).
    pub fn failed_slot(&self) -> Option<SlotName> {
        self.state.as_ref().and_then(|s| s.failed)
    }
}

/// Read the boot state, decide, and write a counted try back (atomically, durably) before
/// anything else happens: if this boot dies later, the try is spent.
pub fn decide(state: &StateLayout, force_recovery: bool) -> Result<Decision, Fatal> {
    if force_recovery {
        return Ok(Decision {
            slot: SlotName::Recovery,
            state: None,
            written: false,
        });
    }
    let path = state.bootstate();
    let block = std::fs::read(&path)
        .map_err(|e| Fatal(format!("cannot read boot state {}: {e}", path.display())))?;
    let mut boot = BootState::parse(&block)
        .map_err(|e| Fatal(format!("boot state {}: {e}", path.display())))?;
    let decision = boot.decide_boot();
    let (slot, counted) = match decision {
        BootDecision::Boot(slot) => (slot, true),
        BootDecision::Recovery => (SlotName::Recovery, false),
    };
    if counted {
        let block = boot
            .to_block()
            .map_err(|e| Fatal(format!("boot state: {e}")))?;
        atomic::write_atomic(&path, &block)
            .map_err(|e| Fatal(format!("cannot write boot state {}: {e}", path.display())))?;
    }
    Ok(Decision {
        slot,
        state: Some(boot),
        written: counted,
    })
}

/// A slot ready to mount: its manifest and its layer files, bottom to top.
#[derive(Debug, Clone)]
pub struct SlotPlan {
    pub manifest: SlotManifest,
    pub layers: Vec<PathBuf>,
}

/// Load `slot`'s manifest from `layout` and check that every layer file is there with the
/// recorded size (a full hash check would read every layer at each boot; the agent checks
/// digests when it stages).
pub fn load_slot(layout: &StateLayout, slot: SlotName) -> Result<SlotPlan, Fatal> {
    let path = layout.slot_manifest(slot);
    let bytes = std::fs::read(&path)
        .map_err(|e| Fatal(format!("slot {slot}: cannot read {}: {e}", path.display())))?;
    let manifest = SlotManifest::from_json(&bytes)
        .map_err(|e| Fatal(format!("slot {slot}: bad manifest {}: {e}", path.display())))?;
    if manifest.slot != slot {
        return Err(Fatal(format!(
            "slot {slot}: {} says it is slot {}",
            path.display(),
            manifest.slot
        )));
    }
    if manifest.layers.is_empty() {
        return Err(Fatal(format!("slot {slot}: manifest lists no layers")));
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for rec in &manifest.layers {
        let file = layout.layer(&rec.digest);
        let meta = std::fs::metadata(&file).map_err(|e| {
            Fatal(format!(
                "slot {slot}: layer {} missing ({}: {e})",
                rec.digest,
                file.display()
            ))
        })?;
        if meta.len() != rec.size {
            return Err(Fatal(format!(
                "slot {slot}: layer {} is {} bytes, the manifest says {}",
                rec.digest,
                meta.len(),
                rec.size
            )));
        }
        layers.push(file);
    }
    Ok(SlotPlan { manifest, layers })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clb_ondisk::LayerRecord;

    fn fake_state(dir: &std::path::Path) -> StateLayout {
        let l = StateLayout::new(dir);
        std::fs::create_dir_all(l.slots_dir()).unwrap();
        std::fs::create_dir_all(l.layers_dir()).unwrap();
        for (slot, content) in [(SlotName::A, b"layer-a".as_slice()), (SlotName::B, b"bb")] {
            let digest = format!("sha256:{:064x}", content.len());
            std::fs::write(l.layer(&digest), content).unwrap();
            let m = SlotManifest {
                schema: 1,
                slot,
                image: format!("reg/os:{slot}"),
                digest: "sha256:00".into(),
                layers: vec![LayerRecord {
                    digest,
                    source_digest: "sha256:11".into(),
                    media_type: "x".into(),
                    size: content.len() as u64,
                }],
                verified: None,
                staged_at: "2026-01-01T00:00:00Z".into(),
                boot: None,
            };
            std::fs::write(l.slot_manifest(slot), m.to_json()).unwrap();
        }
        l
    }

    fn read_state(l: &StateLayout) -> BootState {
        BootState::parse(&std::fs::read(l.bootstate()).unwrap()).unwrap()
    }

    #[test]
    fn good_slot_boots_and_counts_too() {
        let dir = tempfile::tempdir().unwrap();
        let l = fake_state(dir.path());
        let block = BootState::new(SlotName::A, 3).to_block().unwrap();
        std::fs::write(l.bootstate(), &block).unwrap();
        let d = decide(&l, false).unwrap();
        assert_eq!(d.slot, SlotName::A);
        assert!(d.written && !d.rolled_back());
        // A good slot spends a try as well: mark-good refills it after a healthy boot.
        let on_disk = read_state(&l);
        assert!(on_disk.good);
        assert_eq!(on_disk.tries_left, 2);
        let plan = load_slot(&l, d.slot).unwrap();
        assert_eq!(plan.layers.len(), 1);
        assert!(plan.layers[0].exists());
    }

    #[test]
    fn counts_tries_on_disk_then_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let l = fake_state(dir.path());
        let mut s = BootState::new(SlotName::A, 2);
        s.stage(SlotName::B);
        std::fs::write(l.bootstate(), s.to_block().unwrap()).unwrap();

        for left in [1, 0] {
            let d = decide(&l, false).unwrap();
            assert_eq!(d.slot, SlotName::B);
            assert!(d.written);
            // Written before anything is mounted: the file on disk already shows the try.
            assert_eq!(read_state(&l).tries_left, left);
        }
        let d = decide(&l, false).unwrap();
        assert_eq!(d.slot, SlotName::A);
        assert!(d.written && d.rolled_back());
        assert_eq!(d.failed_slot(), Some(SlotName::B));
        let on_disk = read_state(&l);
        assert!(on_disk.rolled_back && on_disk.good);
        assert_eq!(on_disk.failed, Some(SlotName::B));
        assert_eq!(on_disk.active, SlotName::A);
        // The fallback boot was A's first try: one left (max 2); A counts like any slot.
        assert_eq!(on_disk.tries_left, 1);
        let d = decide(&l, false).unwrap();
        assert_eq!(d.slot, SlotName::A);
        assert!(d.written);
        assert!(d.rolled_back(), "the flag stays until the next upgrade");
        assert_eq!(read_state(&l).tries_left, 0);
        // Nobody marked A good either: recovery, and the state stays as it was.
        let before = std::fs::read(l.bootstate()).unwrap();
        assert_eq!(decide(&l, false).unwrap().slot, SlotName::Recovery);
        assert_eq!(std::fs::read(l.bootstate()).unwrap(), before);
    }

    #[test]
    fn spent_without_fallback_goes_to_recovery_and_forced_recovery_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let l = fake_state(dir.path());
        let mut s = BootState::new(SlotName::A, 1);
        s.good = false;
        s.tries_left = 0;
        std::fs::write(l.bootstate(), s.to_block().unwrap()).unwrap();
        assert_eq!(decide(&l, false).unwrap().slot, SlotName::Recovery);
        std::fs::remove_file(l.bootstate()).unwrap();
        let d = decide(&l, true).unwrap();
        assert_eq!(d.slot, SlotName::Recovery);
        assert!(d.state.is_none());
        assert_eq!(d.failed_slot(), None);
        // Without a forced recovery a missing boot state is a clear error.
        let e = decide(&l, false).unwrap_err();
        assert!(e.0.contains("cannot read boot state"), "{e:?}");
    }

    #[test]
    fn broken_slots_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let l = fake_state(dir.path());
        // Missing recovery manifest.
        let e = load_slot(&l, SlotName::Recovery).unwrap_err();
        assert!(e.0.contains("slot recovery: cannot read"), "{e:?}");
        // Truncated layer.
        let plan = load_slot(&l, SlotName::A).unwrap();
        std::fs::write(&plan.layers[0], b"x").unwrap();
        let e = load_slot(&l, SlotName::A).unwrap_err();
        assert!(e.0.contains("the manifest says 7"), "{e:?}");
        // Manifest of the wrong slot.
        std::fs::copy(l.slot_manifest(SlotName::B), l.slot_manifest(SlotName::A)).unwrap();
        let e = load_slot(&l, SlotName::A).unwrap_err();
        assert!(e.0.contains("says it is slot b"), "{e:?}");
        // Corrupt boot state.
        std::fs::write(l.bootstate(), b"junk").unwrap();
        let e = decide(&l, false).unwrap_err();
        assert!(e.0.contains("1024"), "{e:?}");
    }
}
