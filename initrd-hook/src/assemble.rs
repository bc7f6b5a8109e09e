//! Assemble the new root on `sysroot`: a netboot when `clb.source=` is set, otherwise find
//! the partitions, decide the slot (counting the try on disk first), stack the layers, mount
//! COS_OEM and the persistent paths, and leave the record of this boot under `/run/clb/`.
//!
//! The state partition stays mounted read-write at `/run/initramfs/clb/state`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clb_ondisk::{SlotName, StateLayout};
use rustix::mount::MountFlags;

use crate::cmdline::Config;
use crate::mounts::{
    PRIVATE_DIR, find_optional, mkdir, mount_device, mount_oem_and_persistent, stack_layers,
    wait_for_label,
};
use crate::plan::{self, Decision};
use crate::record::{Booted, RECORD_DIR, write_slot_record};
use crate::{Fatal, netboot, say};

pub fn assemble(cfg: &Config, sysroot: &Path) -> Result<Booted, Fatal> {
    let private = PathBuf::from(PRIVATE_DIR);
    mkdir(&private)?;
    if let (Some(source), Some(digest)) = (&cfg.source, &cfg.digest) {
        return netboot::assemble(cfg, source, digest, sysroot);
    }

    // The state partition: wait for it, mount it read-write.
    // Recovery mode needs only COS_RECOVERY: a self-deploying image (clb build-disk) has no
    // COS_STATE before its first deploy. Wait for whichever appears first.
    let state_dev = if cfg.recovery {
        let start = Instant::now();
        loop {
            let state_dev = find_optional(&cfg.state_label)?;
            if state_dev.is_some() || find_optional(&cfg.recovery_label)?.is_some() {
                break state_dev;
            }
            if start.elapsed() >= cfg.timeout {
                // Neither appeared: the usual error, naming the state label.
                wait_for_label(&cfg.state_label, Duration::ZERO)?;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    } else {
        Some(wait_for_label(&cfg.state_label, cfg.timeout)?)
    };
    let state_dir = private.join("state");
    if let Some(dev) = &state_dev {
        mount_device(dev, &state_dir, MountFlags::empty(), &cfg.state_label)?;
    }
    let state = StateLayout::new(&state_dir);

    // Decide, and write a counted try back before anything else is mounted.
    let decision = match cfg.slot {
        // The bootloader chose (and counted): boot what it says. Its record (a rollback GRUB
        // made) is still read, never written, so the /run/clb files tell the truth.
        Some(slot) if !cfg.recovery => Decision {
            slot,
            state: std::fs::read(state.bootstate())
                .ok()
                .and_then(|b| clb_ondisk::BootState::parse(&b).ok()),
            written: false,
        },
        _ => plan::decide(&state, cfg.recovery)?,
    };
    if cfg.debug {
        say(format_args!("decision: {decision:?}"));
    }
    if decision.written {
        // The try is durable now (write_atomic fsyncs file and directory).
        if let Some(s) = &decision.state {
            let trial = if s.good { "" } else { " (on trial)" };
            say(format_args!(
                "slot {}{trial}: {} boots left unless it is marked good",
                decision.slot, s.tries_left
            ));
        }
    }
    if decision.rolled_back() {
        let failed = decision.failed_slot().map(SlotName::as_str).unwrap_or("?");
        say(format_args!(
            "slot {failed} failed to boot: rolled back to slot {}",
            decision.slot
        ));
    }

    // The slot's layers (recovery: from COS_RECOVERY when present, else COS_STATE).
    let slot_plan = if decision.slot == SlotName::Recovery {
        let layout = match find_optional(&cfg.recovery_label)? {
            Some(dev) => {
                let dir = private.join("recovery");
                mount_device(&dev, &dir, MountFlags::RDONLY, &cfg.recovery_label)?;
                StateLayout::new(dir)
            }
            None => state.clone(),
        };
        plan::load_slot(&layout, SlotName::Recovery)
            .map_err(|e| Fatal(format!("recovery boot: {e}")))?
    } else {
        plan::load_slot(&state, decision.slot)?
    };
    stack_layers(cfg, &slot_plan.layers, sysroot)?;
    mount_oem_and_persistent(cfg, sysroot, decision.slot == SlotName::Recovery)?;

    write_slot_record(
        Path::new(RECORD_DIR),
        &decision,
        &slot_plan.manifest.image,
        &slot_plan.layers,
    )?;
    Ok(Booted {
        slot: decision.slot.to_string(),
        image: slot_plan.manifest.image,
    })
}
