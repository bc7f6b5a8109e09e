//! What staging is asked and what it reports, and which slot it writes: shared by the
//! one-step upgrade, the download and the apply.

use std::path::PathBuf;

use clb_ondisk::{BootState, SlotName};

use crate::hooks::Hooks;
use crate::pull::{PullOptions, PullStats};

pub struct UpgradeRequest {
    pub image: String,
    pub keys: Vec<PathBuf>,
    pub verify: bool,
    /// The trust policy file (`None`: the host's); `keys` replace it.
    pub policy: Option<PathBuf>,
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
