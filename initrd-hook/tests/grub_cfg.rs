//! `packaging/grub/grub.cfg` against the boot-state code it mirrors (no VM; the QEMU proof
//! is `tests/vm/tests/qemu_grub_efi.rs`, crate clb-vm-tests):
//!
//! - `grub-script-check` accepts it;
//! - for every branch of `BootState::decide_boot`, the keys the Rust code changes are exactly
//!   the keys the matching `save_env` line of the config writes;
//! - a block changed the way `save_env` changes it (`grub-editenv`, GRUB's own envblk code)
//!   parses in `clb-ondisk` to the state `decide_boot` computes, other keys kept.
//!
//! Needs grub-common (grub-script-check, grub-editenv).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clb_ondisk::bootstate::BootDecision;
use clb_ondisk::{BootState, SlotName};
use clb_testsupport::require_tool;

fn cfg_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("packaging/grub/grub.cfg")
}

fn cfg() -> String {
    std::fs::read_to_string(cfg_path()).unwrap()
}

/// Keys of the `save_env --file "$clb_env" ...` lines, in order of appearance.
fn save_env_lines(cfg: &str) -> Vec<BTreeSet<String>> {
    cfg.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("if save_env --file \"$clb_env\" ")?;
            let keys = rest.strip_suffix("; then")?;
            Some(keys.split_whitespace().map(String::from).collect())
        })
        .collect()
}

fn block_keys(state: &BootState) -> Vec<(String, String)> {
    let block = state.to_block().unwrap();
    String::from_utf8(block)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn changed_keys(before: &BootState, after: &BootState) -> BTreeSet<String> {
    let b = block_keys(before);
    let a = block_keys(after);
    a.iter()
        .filter(|kv| !b.contains(kv))
        .map(|(k, _)| k.clone())
        .collect()
}

fn editenv(file: &Path, args: &[String]) {
    let out = Command::new("grub-editenv")
        .arg(file)
        .args(args)
        .output()
        .expect("grub-editenv");
    assert!(
        out.status.success(),
        "grub-editenv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn grub_script_check_accepts_the_config() {
    require_tool("grub-script-check");
    let out = Command::new("grub-script-check")
        .arg(cfg_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "grub-script-check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The module list of the EFI image clb deploy builds has no `true` or `regexp`.
    let c = cfg();
    for bad in ["then true", "regexp ", "if !"] {
        assert!(!c.contains(bad), "grub.cfg uses {bad:?}");
    }
    assert!(c.contains("search --no-floppy --label --set=root \"$clb_state_label\""));
    assert!(c.contains("set clb_state_label=COS_STATE"));
    assert!(c.contains("linux \"/boot/$1/vmlinuz\""));
    assert!(c.contains("initrd \"/boot/$1/initrd\""));
}

#[test]
fn grub_writes_what_decide_boot_changes() {
    require_tool("grub-editenv");
    let c = cfg();
    let saves = save_env_lines(&c);
    assert_eq!(
        saves.len(),
        2,
        "a counting and a fallback save_env: {saves:?}"
    );
    let (count_keys, fallback_keys) = (&saves[0], &saves[1]);
    // Everything GRUB loads is a key decide_boot may read.
    let load = c
        .lines()
        .find(|l| {
            l.trim()
                .starts_with("load_env --skip-sig --file \"$clb_env\"")
        })
        .expect("load_env of grubenv");
    for k in [
        "clb_active",
        "clb_fallback",
        "clb_tries",
        "clb_max_tries",
        "clb_good",
        "clb_rolled_back",
        "clb_failed",
    ] {
        assert!(load.contains(k), "{k} not loaded: {load}");
    }

    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("grubenv");
    // A staged slot b with tries 1..=12 (two digits exercise the decrement walk), then spent.
    for tries in (0..=12).rev() {
        let mut before = BootState::new(SlotName::A, 3);
        before.other.push(("saved_entry".into(), "clb".into()));
        before.stage(SlotName::B);
        before.tries_left = tries;
        let mut after = before.clone();
        let decision = after.decide_boot();
        let changed = changed_keys(&before, &after);
        std::fs::write(&env, before.to_block().unwrap()).unwrap();
        match decision {
            BootDecision::Boot(SlotName::B) => {
                assert_eq!(&changed, count_keys, "tries {tries}");
                // GRUB's clb_dec: tries - 1.
                editenv(&env, &["set".into(), format!("clb_tries={}", tries - 1)]);
            }
            BootDecision::Boot(SlotName::A) => {
                assert_eq!(tries, 0);
                assert_eq!(&changed, fallback_keys);
                // GRUB's clb_dec of clb_max_tries (3): the fallback boot is its first try.
                editenv(
                    &env,
                    &[
                        "set".into(),
                        "clb_failed=b".into(),
                        "clb_active=a".into(),
                        "clb_fallback=".into(),
                        "clb_tries=2".into(),
                        "clb_good=1".into(),
                        "clb_rolled_back=1".into(),
                    ],
                );
            }
            other => panic!("tries {tries}: {other:?}"),
        }
        let read = std::fs::read(&env).unwrap();
        assert_eq!(read.len(), 1024, "still an environment block");
        let parsed = BootState::parse(&read).unwrap();
        assert_eq!(parsed, after, "tries {tries}");
    }

    // A good slot counts exactly like one on trial: only clb_tries changes.
    let mut good = BootState::new(SlotName::A, 3);
    let g0 = good.clone();
    assert_eq!(good.decide_boot(), BootDecision::Boot(SlotName::A));
    assert_eq!(&changed_keys(&g0, &good), count_keys);
    // Spent without fallback: recovery, nothing written.
    let mut spent = BootState::new(SlotName::A, 3);
    spent.good = false;
    spent.tries_left = 0;
    let s0 = spent.clone();
    assert_eq!(spent.decide_boot(), BootDecision::Recovery);
    assert_eq!(spent, s0);
    assert!(
        c.contains("clb_recovery\n"),
        "the no-fallback branch boots recovery"
    );
    assert!(c.contains("clb_boot recovery \"clb.mode=recovery\""));
}

#[test]
fn the_decrement_walk_covers_what_max_tries_gives() {
    // clb_dec walks "1 2 ... 99": every value from 1 to 99 must be there, in order.
    let c = cfg();
    let walk = c
        .lines()
        .find_map(|l| l.trim().strip_prefix("for clb_n in "))
        .and_then(|r| r.strip_suffix("; do"))
        .expect("the for loop of clb_dec");
    let n: Vec<u32> = walk
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(n, (1..=99).collect::<Vec<_>>());
}
