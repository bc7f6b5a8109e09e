//! From the agent's state to `NodeUpdate.status`, and how a request that runs is getting on:
//! pure functions, so the rules are tested without a bus.

use clb_operator_api::{
    HostPhase, LastError, NodeRequest, NodeUpdateStatus, OperationProgress, RequestAction, SlotInfo,
};

use crate::agent::{AgentState, ImageRef};

fn slot_info(slot: Option<&str>, image: &ImageRef) -> SlotInfo {
    SlotInfo::new(
        slot.map(str::to_string),
        image.image.clone(),
        image.digest.clone(),
    )
}

/// The image ready for the next boot when it differs from the booted one: a verified
/// download (which `Reboot` stages first; with its slot once staged), else the active slot.
pub fn staged(agent: &AgentState) -> Option<SlotInfo> {
    let s = &agent.status;
    let booted = agent.booted_digest();
    let active = s
        .active
        .as_deref()
        .filter(|a| Some(*a) != s.booted.as_deref())
        .and_then(|a| s.slots.get(a).map(|img| (a, img)))
        .filter(|(_, img)| Some(img.digest.as_str()) != booted);
    let download = s
        .download
        .as_ref()
        .filter(|d| Some(d.digest.as_str()) != booted);
    match (download, active) {
        (Some(d), Some((slot, img))) if d.digest == img.digest => Some(slot_info(Some(slot), img)),
        (Some(d), _) => Some(slot_info(None, d)),
        (None, Some((slot, img))) => Some(slot_info(Some(slot), img)),
        (None, None) => None,
    }
}

/// The status fields that come from the agent (all but `phase` when a request waits for a
/// reboot, `request` and `lastReported`).
pub fn from_agent(agent: &AgentState) -> NodeUpdateStatus {
    let s = &agent.status;
    let named = |slot: Option<&String>| {
        slot.and_then(|name| s.slots.get(name).map(|img| slot_info(Some(name), img)))
    };
    let staged = staged(agent);
    let busy = !agent.is_idle();
    let phase = if busy {
        HostPhase::Busy
    } else if staged.is_some() {
        HostPhase::Staged
    } else {
        HostPhase::Idle
    };
    // GetStatus says whether the *active* slot was marked good. When another slot is staged,
    // the booted one is the fallback exactly when it was good.
    let marked_good = match (&s.booted, &s.active) {
        (Some(b), Some(a)) if a == b => s.good,
        (Some(b), _) => s.fallback.as_ref() == Some(b),
        (None, _) => false,
    };
    let (code, class, message) = &agent.last_error;
    NodeUpdateStatus {
        phase: Some(phase),
        booted: named(s.booted.as_ref()),
        marked_good,
        staged,
        rollback: named(s.fallback.as_ref()),
        rolled_back: s.rolled_back,
        rolled_back_from: if s.rolled_back {
            named(s.failed_slot.as_ref())
        } else {
            None
        },
        operation: (!agent.operation.is_empty()).then(|| agent.operation.clone()),
        progress: busy.then(|| OperationProgress {
            percent: agent.progress.0.clamp(0, 100),
            message: truncate(&agent.progress.1, 1024),
        }),
        last_error: (*code != 0).then(|| LastError {
            code: *code,
            class: truncate(class, 64),
            message: truncate(message, 4096),
        }),
        strategy: (!agent.strategy.is_empty()).then(|| agent.strategy.clone()),
        request: None,
        last_reported: None,
    }
}

/// At most `max` bytes, cut at a character boundary (the CRD limits lengths).
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Two statuses differ in more than the progress of a running operation and the time of
/// the report: such a change is written at once, a progress tick is throttled.
pub fn differs_beyond_progress(a: &NodeUpdateStatus, b: &NodeUpdateStatus) -> bool {
    let strip = |s: &NodeUpdateStatus| NodeUpdateStatus {
        progress: None,
        last_reported: None,
        ..s.clone()
    };
    strip(a) != strip(b)
}

/// How a request the bridge took up stands, judged from the agent's state alone (after a
/// restart of the bridge, or once the operation it started is over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done.
    Succeeded(String),
    /// Over, without the digest: the message says why.
    Failed(String),
    /// The agent still works on it.
    AgentBusy,
    /// `Reboot`: the requested digest is staged and active; the node has to come back.
    WaitingForReboot,
}

/// The request's outcome from what the agent reports, once the agent's `operation` for it is
/// over (or when the bridge did not see it end: after a restart, an agent without the digest
/// means the request is over, since it is never started twice).
pub fn verdict(req: &NodeRequest, agent: &AgentState, operation: &str) -> Verdict {
    let want = req.digest.as_str();
    let short = clb_operator_api::short_digest(want);
    match req.action {
        RequestAction::Stage => {
            if agent.downloaded_digest == want || staged(agent).is_some_and(|s| s.digest == want) {
                return Verdict::Succeeded(format!("{short} is downloaded and verified"));
            }
            if !agent.is_idle() && agent.operation == operation {
                return Verdict::AgentBusy;
            }
            let got = if agent.downloaded_digest.is_empty() {
                "no download".to_string()
            } else {
                format!(
                    "the download is {}",
                    clb_operator_api::short_digest(&agent.downloaded_digest)
                )
            };
            Verdict::Failed(format!("the agent did not download {short} ({got})"))
        }
        RequestAction::Reboot => {
            if agent.booted_digest() == Some(want) {
                return Verdict::Succeeded(format!("booted {short}"));
            }
            let s = &agent.status;
            if s.rolled_back
                && agent
                    .slot(s.failed_slot.as_deref())
                    .is_none_or(|f| f.digest == want)
            {
                let from = s.failed_slot.as_deref().unwrap_or("?");
                return Verdict::Failed(format!(
                    "rolled back: slot {from} with {short} did not boot good; the node went back to the previous slot"
                ));
            }
            if !agent.is_idle() && agent.operation == operation {
                return Verdict::AgentBusy;
            }
            if agent.active_digest() == Some(want) {
                return Verdict::WaitingForReboot;
            }
            Verdict::Failed(format!(
                "{short} is neither booted nor staged for the next boot"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::agent::HostStatus;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn img(c: char) -> ImageRef {
        ImageRef {
            image: format!("reg/os@{}", digest(c)),
            digest: digest(c),
        }
    }

    /// Slot a with digest 1 booted and active; `b` with digest 2 installed.
    fn host() -> AgentState {
        AgentState {
            operation: "idle".into(),
            progress: (0, String::new()),
            last_error: (0, String::new(), String::new()),
            downloaded_digest: String::new(),
            strategy: "coordinated".into(),
            status: HostStatus {
                active: Some("a".into()),
                booted: Some("a".into()),
                fallback: Some("b".into()),
                good: true,
                slots: [("a".to_string(), img('1')), ("b".to_string(), img('2'))].into(),
                ..HostStatus::default()
            },
        }
    }

    fn request(action: RequestAction, c: char) -> NodeRequest {
        NodeRequest {
            id: 1,
            action,
            image: format!("reg/os@{}", digest(c)),
            digest: digest(c),
        }
    }

    #[test]
    fn idle_host_reports_its_slots() {
        let s = from_agent(&host());
        assert_eq!(s.phase, Some(HostPhase::Idle));
        assert_eq!(s.booted.as_ref().unwrap().slot.as_deref(), Some("a"));
        assert_eq!(s.booted.as_ref().unwrap().short_digest, "111111111111");
        assert_eq!(s.rollback.as_ref().unwrap().digest, digest('2'));
        assert!(s.marked_good);
        assert_eq!(s.staged, None);
        assert_eq!(s.progress, None);
        assert_eq!(s.last_error, None);
        assert_eq!(s.strategy.as_deref(), Some("coordinated"));
    }

    #[test]
    fn a_download_or_an_active_slot_is_staged() {
        let mut h = host();
        h.status.download = Some(img('3'));
        h.downloaded_digest = digest('3');
        let s = from_agent(&h);
        assert_eq!(s.phase, Some(HostPhase::Staged));
        assert_eq!(s.staged.as_ref().unwrap().slot, None);
        assert_eq!(s.staged.as_ref().unwrap().digest, digest('3'));

        // Applied: b holds it and is active; the booted a stays the fallback, and good.
        h.status.active = Some("b".into());
        h.status.fallback = Some("a".into());
        h.status.good = false;
        h.status.slots.insert("b".into(), img('3'));
        let s = from_agent(&h);
        assert_eq!(s.staged.as_ref().unwrap().slot.as_deref(), Some("b"));
        assert!(s.marked_good);
    }

    #[test]
    fn busy_reports_progress_and_errors_have_a_class() {
        let mut h = host();
        h.operation = "download".into();
        h.progress = (40, "layer 2/3".into());
        h.last_error = (7, "registry-unreachable".into(), "no route".into());
        let s = from_agent(&h);
        assert_eq!(s.phase, Some(HostPhase::Busy));
        assert_eq!(s.progress.as_ref().unwrap().percent, 40);
        assert_eq!(s.last_error.as_ref().unwrap().class, "registry-unreachable");
        let mut later = h.clone();
        later.progress = (60, "layer 3/3".into());
        assert!(!differs_beyond_progress(&s, &from_agent(&later)));
        later.operation = "idle".into();
        assert!(differs_beyond_progress(&s, &from_agent(&later)));
    }

    #[test]
    fn stage_verdicts() {
        let mut h = host();
        let req = request(RequestAction::Stage, '3');
        assert!(matches!(
            verdict(&req, &h, "download"),
            Verdict::Failed(m) if m.contains("no download")
        ));
        h.operation = "download".into();
        assert_eq!(verdict(&req, &h, "download"), Verdict::AgentBusy);
        h.operation = "idle".into();
        h.downloaded_digest = digest('3');
        assert!(matches!(
            verdict(&req, &h, "download"),
            Verdict::Succeeded(_)
        ));
    }

    #[test]
    fn reboot_verdicts() {
        let mut h = host();
        let req = request(RequestAction::Reboot, '3');
        assert!(matches!(verdict(&req, &h, "apply"), Verdict::Failed(_)));
        h.status.active = Some("b".into());
        h.status.slots.insert("b".into(), img('3'));
        assert_eq!(verdict(&req, &h, "apply"), Verdict::WaitingForReboot);
        // Back up on b.
        let mut up = h.clone();
        up.status.booted = Some("b".into());
        assert!(matches!(verdict(&req, &up, "apply"), Verdict::Succeeded(_)));
        // Fell back to a.
        let mut back = h.clone();
        back.status.active = Some("a".into());
        back.status.rolled_back = true;
        back.status.failed_slot = Some("b".into());
        assert!(matches!(
            verdict(&req, &back, "apply"),
            Verdict::Failed(m) if m.starts_with("rolled back")
        ));
    }
}
