//! The daemon's own updates: every `check_interval` (plus up to `check_jitter`, so a fleet
//! does not hit the registry at once) it checks, downloads and stages through the same
//! operations a bus caller would run; the strategy then decides when to reboot. With
//! `coordinated` it does nothing on its own. After a good boot it reports steady state.

use std::sync::Arc;
use std::time::Duration;

use clb_ondisk::SlotName;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::ops::{OpKind, OpRequest, Outcome, Runner};
use crate::strategy::{Clock, RebootGate, SystemClock};

pub async fn update_loop(runner: Arc<Runner>) {
    let clock = SystemClock;
    let cancel = CancellationToken::new();
    // Nothing is checked before this boot is decided: mark-good (or a coordinator) runs
    // first, and a FleetLock slot held from the reboot is released.
    while !runner.boot_decided().await {
        clock.sleep(Duration::from_secs(5)).await;
    }
    tokio::spawn(steady_state(runner.clone()));
    let mut first = true;
    loop {
        let config = runner.config();
        let jitter = config.check_jitter.as_millis().min(u128::from(u64::MAX)) as u64;
        let jitter = Duration::from_millis(rand::rng().random_range(0..=jitter));
        let wait = if first {
            jitter
        } else {
            config.check_interval + jitter
        };
        first = false;
        clock.sleep(wait).await;
        let gate = match RebootGate::from_config(&runner.config()) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "update strategy unusable; not updating");
                continue;
            }
        };
        if !gate.automatic() {
            tracing::debug!("coordinated: waiting for the API");
            continue;
        }
        if let Some(slot) = cycle(&runner).await {
            tracing::info!(%slot, strategy = ?gate.kind(), "staged; waiting until the strategy allows the reboot");
            if gate
                .wait_until_reboot_allowed(&clock, &cancel)
                .await
                .is_ok()
            {
                reboot_into(&runner, slot).await;
            }
        }
    }
}

/// Check, download, stage. Returns the staged slot, `None` when there was nothing to do or a
/// step failed (logged; the next interval tries again, resuming a partial download).
async fn cycle(runner: &Arc<Runner>) -> Option<SlotName> {
    let check = run(runner, OpKind::Check).await?;
    if check.result["update_available"] != serde_json::Value::Bool(true) {
        tracing::info!("up to date");
        return None;
    }
    run(runner, OpKind::Download).await?;
    let applied = run(runner, OpKind::Apply).await?;
    applied.result["slot"].as_str().and_then(SlotName::parse)
}

async fn run(runner: &Arc<Runner>, kind: OpKind) -> Option<Outcome> {
    let rx = match runner.start(kind, OpRequest::default()) {
        Ok(rx) => rx,
        Err(busy) => {
            tracing::info!("{busy}; skipping this update check");
            return None;
        }
    };
    let outcome = rx.await.ok()?;
    (outcome.code == 0).then_some(outcome)
}

/// Reboots when `slot` is still the one the next boot tries (a caller may have rolled back
/// while the strategy waited).
async fn reboot_into(runner: &Arc<Runner>, slot: SlotName) {
    runner.refresh_host_view().await;
    if runner.live().active != slot.to_string() {
        tracing::info!(%slot, "no longer the active slot; not rebooting");
        return;
    }
    tracing::info!(%slot, "rebooting into the staged slot");
    if let Err(e) = crate::reboot::reboot().await {
        tracing::error!(error = %e, "reboot failed");
    }
}

/// Once the boot is decided, tells the strategy (FleetLock: `steady-state`, releasing this
/// host's reboot slot).
async fn steady_state(runner: Arc<Runner>) {
    let clock = SystemClock;
    let cancel = CancellationToken::new();
    match RebootGate::from_config(&runner.config()) {
        Ok(gate) => {
            if let Err(e) = gate.report_steady_state(&clock, &cancel).await {
                tracing::warn!(error = %e, "steady state not reported");
            } else {
                tracing::info!("steady state reported");
            }
        }
        Err(e) => tracing::error!(error = %e, "update strategy unusable"),
    }
}
