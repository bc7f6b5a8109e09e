//! The record of this boot under `/run/clb/` (see docs/boot.md): which slot or netboot source
//! was booted, in files the booted system (the agent, `mark-good`) reads.

use std::path::{Path, PathBuf};

use clb_ondisk::SlotName;

use crate::Fatal;
use crate::cmdline::Source;
use crate::mounts::mkdir;
use crate::plan::Decision;

/// Where the hook leaves its record for the booted system.
pub const RECORD_DIR: &str = "/run/clb";
/// The slot name a netboot reports (`clb_ondisk::SlotName` has no `net`).
pub const NET_SLOT: &str = "net";

/// What was booted.
#[derive(Debug)]
pub struct Booted {
    /// `a`, `b`, `recovery`, or `net` for a netboot.
    pub slot: String,
    pub image: String,
}

fn write_file(dir: &Path, name: &str, content: &str) -> Result<(), Fatal> {
    let p = dir.join(name);
    std::fs::write(&p, content).map_err(|e| Fatal(format!("write {}: {e}", p.display())))
}

fn layer_list(layers: &[PathBuf]) -> String {
    let list: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
    list.join(":")
}

/// `/run/clb/booted_slot`, the mode sentinels and `initrd.env` (see docs/boot.md).
pub fn write_slot_record(
    dir: &Path,
    decision: &Decision,
    image: &str,
    layers: &[PathBuf],
) -> Result<(), Fatal> {
    mkdir(dir)?;
    let write = |name: &str, content: &str| write_file(dir, name, content);
    write("booted_slot", &format!("{}\n", decision.slot))?;
    let mode = if decision.slot == SlotName::Recovery {
        "recovery_mode"
    } else if decision.rolled_back() {
        "passive_mode"
    } else {
        "active_mode"
    };
    write(mode, "")?;
    if decision.rolled_back() {
        let failed = decision.failed_slot().map(SlotName::as_str).unwrap_or("");
        write("upgrade_failure", &format!("{failed}\n"))?;
    }
    let (tries, good) = decision
        .state
        .as_ref()
        .map(|s| (s.tries_left.to_string(), u8::from(s.good).to_string()))
        .unwrap_or_default();
    write(
        "initrd.env",
        &format!(
            "CLB_SLOT={}\nCLB_IMAGE={image}\nCLB_MODE={}\nCLB_TRIES_LEFT={tries}\nCLB_GOOD={good}\n\
             CLB_ROLLED_BACK={}\nCLB_LAYERS={}\n",
            decision.slot,
            mode.trim_end_matches("_mode"),
            u8::from(decision.rolled_back()),
            layer_list(layers)
        ),
    )
}

/// `/run/clb/netboot_mode` and `initrd.env`. No `booted_slot`: a netbooted system has no slot
/// on COS_STATE the agent must protect.
pub fn write_netboot_record(
    dir: &Path,
    source: &Source,
    digest: &str,
    layers: &[PathBuf],
    skipped: &[String],
) -> Result<(), Fatal> {
    mkdir(dir)?;
    write_file(dir, "netboot_mode", "")?;
    write_file(
        dir,
        "initrd.env",
        &format!(
            "CLB_SLOT={NET_SLOT}\nCLB_IMAGE='{source}'\nCLB_DIGEST={digest}\nCLB_MODE=netboot\n\
             CLB_TRIES_LEFT=\nCLB_GOOD=\nCLB_ROLLED_BACK=0\nCLB_LAYERS={}\nCLB_SKIPPED={}\n",
            layer_list(layers),
            skipped.join(",")
        ),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::http::Url;
    use clb_ondisk::BootState;

    #[test]
    fn record_files_say_what_booted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = BootState::new(SlotName::A, 1);
        s.stage(SlotName::B);
        s.decide_boot();
        s.decide_boot(); // spent: rolls back to a
        let d = Decision {
            slot: SlotName::A,
            state: Some(s),
            written: true,
        };
        let run = dir.path().join("clb");
        write_slot_record(&run, &d, "reg/os:v2", &[PathBuf::from("/l/1")]).unwrap();
        assert_eq!(
            std::fs::read_to_string(run.join("booted_slot")).unwrap(),
            "a\n"
        );
        assert!(run.join("passive_mode").exists());
        assert!(!run.join("active_mode").exists());
        assert_eq!(
            std::fs::read_to_string(run.join("upgrade_failure")).unwrap(),
            "b\n"
        );
        let env = std::fs::read_to_string(run.join("initrd.env")).unwrap();
        assert!(env.contains("CLB_ROLLED_BACK=1\n") && env.contains("CLB_MODE=passive\n"));

        let run2 = dir.path().join("clb2");
        let d = Decision {
            slot: SlotName::Recovery,
            state: None,
            written: false,
        };
        write_slot_record(&run2, &d, "r", &[]).unwrap();
        assert!(run2.join("recovery_mode").exists());
        assert!(!run2.join("upgrade_failure").exists());
    }

    #[test]
    fn netboot_record_names_source_and_layers() {
        let dir = tempfile::tempdir().unwrap();
        let src = Source::Http(Url::parse("http://10.0.2.100/net/").unwrap());
        let layers = [PathBuf::from("/n/a"), PathBuf::from("/n/b")];
        write_netboot_record(dir.path(), &src, "sha256:m", &layers, &["sha256:x".into()]).unwrap();
        assert!(dir.path().join("netboot_mode").exists());
        assert!(!dir.path().join("booted_slot").exists());
        let env = std::fs::read_to_string(dir.path().join("initrd.env")).unwrap();
        assert!(env.contains("CLB_SLOT=net\n") && env.contains("CLB_LAYERS=/n/a:/n/b\n"));
        assert!(env.contains("CLB_SKIPPED=sha256:x\n"), "{env}");
    }
}
