//! The boot state: which slot boots next, how many tries it has left, what it falls back to.
//!
//! Stored as a GRUB environment block (exactly 1024 bytes, `# GRUB Environment Block\n`,
//! `key=value` lines, `#` padding) so that `grub-editenv` can read and write it and GRUB can
//! count tries itself when it is the bootloader; the initrd hook counts them when it is not.
//! Keys we do not know (GRUB's own `saved_entry`, `next_entry`, ...) are kept as they are.

use thiserror::Error;

use crate::envblock::{EnvBlock, EnvBlockError};
use crate::slot::SlotName;

pub use crate::envblock::ENV_BLOCK_SIZE;
pub const DEFAULT_MAX_TRIES: u32 = 3;

const K_ACTIVE: &str = "clb_active";
const K_FALLBACK: &str = "clb_fallback";
const K_TRIES: &str = "clb_tries";
const K_MAX_TRIES: &str = "clb_max_tries";
const K_GOOD: &str = "clb_good";
const K_ROLLED_BACK: &str = "clb_rolled_back";
const K_FAILED: &str = "clb_failed";
const OWN_KEYS: [&str; 7] = [
    K_ACTIVE,
    K_FALLBACK,
    K_TRIES,
    K_MAX_TRIES,
    K_GOOD,
    K_ROLLED_BACK,
    K_FAILED,
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BootStateError {
    #[error("boot state: {0}")]
    Block(#[from] EnvBlockError),
    #[error("boot state has an invalid value for {key}: {value:?}")]
    BadValue { key: String, value: String },
    #[error("no other slot to switch to: slot {0} is empty")]
    NoOtherSlot(SlotName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootState {
    /// Slot the next boot tries.
    pub active: SlotName,
    /// Slot booted when `active` runs out of tries.
    pub fallback: Option<SlotName>,
    /// Boots left for `active` before falling back. Every boot spends one, good slot or
    /// not; `mark_good` refills it. So a slot that stops booting (or never proves its health)
    /// falls back after `max_tries` boots in a row whether it was ever good or not.
    pub tries_left: u32,
    pub max_tries: u32,
    /// `active` was committed: it reached "boot good" (`clb mark-good`) at least once. A slot
    /// not yet good is on trial; both count their boots.
    pub good: bool,
    /// The last boot fell back because `failed` ran out of tries (or was marked bad).
    pub rolled_back: bool,
    pub failed: Option<SlotName>,
    /// Entries we do not own, in their original order.
    pub other: Vec<(String, String)>,
}

/// What the boot-time logic decided for this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDecision {
    /// Boot this slot. A try was used up: the state must be written back first.
    Boot(SlotName),
    /// Tries are spent and there is no fallback: boot recovery.
    Recovery,
}

impl BootState {
    /// The state of a freshly deployed host: `slot` is active and trusted.
    pub fn new(slot: SlotName, max_tries: u32) -> Self {
        Self {
            active: slot,
            fallback: None,
            tries_left: max_tries,
            max_tries,
            good: true,
            rolled_back: false,
            failed: None,
            other: Vec::new(),
        }
    }

    pub fn parse(block: &[u8]) -> Result<Self, BootStateError> {
        let env = EnvBlock::parse(block)?;
        let mut state = BootState::new(SlotName::A, DEFAULT_MAX_TRIES);
        for (key, value) in env.vars() {
            let bad = || BootStateError::BadValue {
                key: key.to_string(),
                value: value.to_string(),
            };
            match key {
                K_ACTIVE => state.active = SlotName::parse(value).ok_or_else(bad)?,
                K_FALLBACK => state.fallback = parse_opt_slot(value).map_err(|_| bad())?,
                K_FAILED => state.failed = parse_opt_slot(value).map_err(|_| bad())?,
                K_TRIES => state.tries_left = value.parse().map_err(|_| bad())?,
                K_MAX_TRIES => state.max_tries = value.parse().map_err(|_| bad())?,
                K_GOOD => state.good = parse_bool(value).ok_or_else(bad)?,
                K_ROLLED_BACK => state.rolled_back = parse_bool(value).ok_or_else(bad)?,
                // GRUB's `load_env` lets the last of two equal names win; so does
                // `to_block`, which writes each name once (found by fuzz/, boot_state).
                _ => match state.other.iter_mut().find(|(k, _)| k == key) {
                    Some((_, v)) => *v = value.to_string(),
                    None => state.other.push((key.to_string(), value.to_string())),
                },
            }
        }
        Ok(state)
    }

    pub fn to_block(&self) -> Result<Vec<u8>, BootStateError> {
        let opt = |s: Option<SlotName>| s.map(SlotName::as_str).unwrap_or("");
        let mut env = EnvBlock::default();
        env.set(K_ACTIVE, self.active.as_str());
        env.set(K_FALLBACK, opt(self.fallback));
        env.set(K_TRIES, &self.tries_left.to_string());
        env.set(K_MAX_TRIES, &self.max_tries.to_string());
        env.set(K_GOOD, &u8::from(self.good).to_string());
        env.set(K_ROLLED_BACK, &u8::from(self.rolled_back).to_string());
        env.set(K_FAILED, opt(self.failed));
        for (k, v) in self
            .other
            .iter()
            .filter(|(k, _)| !OWN_KEYS.contains(&k.as_str()))
        {
            env.set(k, v);
        }
        Ok(env.to_block()?)
    }

    /// A new release was written to `slot`: try it next, fall back to what was active.
    pub fn stage(&mut self, slot: SlotName) {
        if self.active != slot {
            self.fallback = Some(self.active);
        }
        self.active = slot;
        self.tries_left = self.max_tries;
        self.good = false;
        self.rolled_back = false;
        self.failed = None;
    }

    /// Before the passive slot is overwritten it must stop being anybody's fallback, or a
    /// power cut mid-staging could fall back into a half-written slot.
    pub fn forget_fallback(&mut self, slot: SlotName) {
        if self.fallback == Some(slot) {
            self.fallback = None;
        }
    }

    /// Boot-time decision, used by the initrd hook (and mirrored by the GRUB config). Every
    /// boot spends a try; when they are spent the fallback boots (with a fresh count, this boot
    /// being its first), and when there is none, recovery.
    pub fn decide_boot(&mut self) -> BootDecision {
        if self.tries_left > 0 {
            self.tries_left -= 1;
            return BootDecision::Boot(self.active);
        }
        match self.fallback {
            Some(fallback) => {
                self.fall_back_to(fallback);
                self.tries_left = self.max_tries.saturating_sub(1);
                BootDecision::Boot(fallback)
            }
            None => BootDecision::Recovery,
        }
    }

    /// `active` failed: `fallback` (a slot that was good before) becomes active, nothing is
    /// left to fall back to, and the failure is on record until the next staging.
    fn fall_back_to(&mut self, fallback: SlotName) {
        self.failed = Some(self.active);
        self.active = fallback;
        self.fallback = None;
        self.good = true;
        self.rolled_back = true;
    }

    /// The booted slot reached "boot good".
    pub fn mark_good(&mut self) {
        self.good = true;
        self.tries_left = self.max_tries;
    }

    /// The booted slot is bad: boot the fallback next time, with a full count of tries.
    pub fn mark_bad(&mut self) -> Result<(), BootStateError> {
        let fallback = self
            .fallback
            .ok_or(BootStateError::NoOtherSlot(self.active))?;
        self.fall_back_to(fallback);
        self.tries_left = self.max_tries;
        Ok(())
    }

    /// Manual rollback: make `other` (a staged, previously good slot) active for the next boot.
    pub fn rollback_to(&mut self, other: SlotName) {
        let previous = self.active;
        self.active = other;
        self.fallback = Some(previous);
        self.good = true;
        self.tries_left = self.max_tries;
        self.rolled_back = false;
        self.failed = None;
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" | "yes" => Some(true),
        "0" | "false" | "no" | "" => Some(false),
        _ => None,
    }
}

fn parse_opt_slot(v: &str) -> Result<Option<SlotName>, ()> {
    if v.is_empty() {
        return Ok(None);
    }
    SlotName::parse(v).map(Some).ok_or(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_foreign_key_written_twice_keeps_its_last_value() {
        let mut block = b"# GRUB Environment Block\nsaved_entry=old\nsaved_entry=new\n".to_vec();
        block.resize(1024, b'#');
        let state = BootState::parse(&block).unwrap();
        assert_eq!(
            state.other,
            vec![("saved_entry".to_string(), "new".to_string())]
        );
        assert_eq!(BootState::parse(&state.to_block().unwrap()).unwrap(), state);
    }

    #[test]
    fn round_trips_and_keeps_foreign_keys() {
        let mut s = BootState::new(SlotName::A, 3);
        s.other.push(("saved_entry".into(), "clb".into()));
        s.stage(SlotName::B);
        let block = s.to_block().unwrap();
        assert_eq!(block.len(), 1024);
        assert!(block.starts_with(b"# GRUB Environment Block\nclb_active=b\n"));
        assert_eq!(BootState::parse(&block).unwrap(), s);
    }

    #[test]
    fn counts_tries_then_falls_back() {
        let mut s = BootState::new(SlotName::A, 2);
        s.stage(SlotName::B);
        assert_eq!(s.decide_boot(), BootDecision::Boot(SlotName::B));
        assert_eq!(s.tries_left, 1);
        s.decide_boot();
        assert_eq!(s.tries_left, 0);
        assert_eq!(s.decide_boot(), BootDecision::Boot(SlotName::A));
        assert!(s.rolled_back && s.good);
        assert_eq!(s.failed, Some(SlotName::B));
        // The fallback's first boot was this one; it counts like any other slot.
        assert_eq!(s.tries_left, 1);
        assert_eq!(s.decide_boot(), BootDecision::Boot(SlotName::A));
        assert_eq!(s.tries_left, 0);
        // Nothing left to fall back to: recovery, state unchanged.
        let before = s.clone();
        assert_eq!(s.decide_boot(), BootDecision::Recovery);
        assert_eq!(s, before);
    }

    #[test]
    fn a_good_slot_that_stops_booting_falls_back_then_recovery() {
        let mut s = BootState::new(SlotName::A, 3);
        s.stage(SlotName::B);
        s.decide_boot();
        s.mark_good();
        // Healthy boots: each spends a try, mark-good refills the count each time.
        for _ in 0..10 {
            assert_eq!(s.decide_boot(), BootDecision::Boot(SlotName::B));
            assert_eq!(s.tries_left, 2);
            s.mark_good();
            assert_eq!(s.tries_left, 3);
        }
        // Now b stops coming up (nobody marks it good): three boots, then a.
        for left in [2, 1, 0] {
            assert_eq!(s.decide_boot(), BootDecision::Boot(SlotName::B));
            assert_eq!(s.tries_left, left);
        }
        assert_eq!(s.decide_boot(), BootDecision::Boot(SlotName::A));
        assert!(s.rolled_back && s.good && s.fallback.is_none());
        assert_eq!(s.failed, Some(SlotName::B));
        // a fails too: after its three boots, recovery.
        s.decide_boot();
        s.decide_boot();
        assert_eq!(s.decide_boot(), BootDecision::Recovery);
    }

    #[test]
    fn mark_bad_falls_back_with_a_full_count() {
        let mut s = BootState::new(SlotName::A, 3);
        assert_eq!(s.mark_bad(), Err(BootStateError::NoOtherSlot(SlotName::A)));
        s.stage(SlotName::B);
        s.decide_boot();
        s.mark_bad().unwrap();
        assert_eq!(
            (s.active, s.fallback, s.failed),
            (SlotName::A, None, Some(SlotName::B))
        );
        assert!(s.good && s.rolled_back);
        assert_eq!(s.tries_left, 3);
    }

    #[test]
    fn no_fallback_means_recovery() {
        let mut s = BootState::new(SlotName::A, 1);
        s.good = false;
        s.tries_left = 0;
        assert_eq!(s.decide_boot(), BootDecision::Recovery);
    }

    #[test]
    fn mark_good_stops_counting_and_stage_clears_stale_flags() {
        let mut s = BootState::new(SlotName::A, 3);
        s.stage(SlotName::B);
        s.decide_boot();
        s.mark_good();
        assert!(s.good);
        s.rolled_back = true;
        s.stage(SlotName::A);
        assert!(!s.rolled_back && !s.good && s.failed.is_none());
        assert_eq!(s.fallback, Some(SlotName::B));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            BootState::parse(b"x"),
            Err(BootStateError::Block(EnvBlockError::BadSize(1)))
        );
        let mut block = vec![b'#'; 1024];
        block[..5].copy_from_slice(b"hello");
        assert_eq!(
            BootState::parse(&block),
            Err(BootStateError::Block(EnvBlockError::BadHeader))
        );
        let mut s = BootState::new(SlotName::A, 3).to_block().unwrap();
        s[25 + 11] = b'z'; // clb_active=z
        assert!(matches!(
            BootState::parse(&s),
            Err(BootStateError::BadValue { .. })
        ));
    }
}
