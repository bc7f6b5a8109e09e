//! Update strategies (Zincati's model): when a staged update may reboot the machine.
//! Checking and downloading follow the check interval whatever the strategy; a strategy only
//! gates the reboot ([`RebootGate::wait_until_reboot_allowed`]) and, for FleetLock, gives the
//! reboot slot back after a good boot ([`RebootGate::report_steady_state`]).

mod clock;
mod error;
pub mod fleetlock;
pub mod identity;
pub mod periodic;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use clock::{Clock, SystemClock};
pub use error::StrategyError;

use crate::config::{AgentConfig, StrategyKind};

/// First pause between two failed FleetLock requests; it doubles after each failure…
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// … up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// The longest single sleep while waiting for a window: the wall clock is read again after
/// it, so a suspended host or a clock step cannot make the wait overshoot a window.
pub const WINDOW_POLL_MAX: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
pub struct RebootGate {
    strategy: Strategy,
}

#[derive(Debug, Clone)]
enum Strategy {
    Immediate,
    Periodic(periodic::Schedule),
    FleetLock(fleetlock::Client),
    Coordinated,
}

impl RebootGate {
    /// Builds the configured strategy, checking only that strategy's section. May read
    /// `/etc/localtime`, the zoneinfo and `/etc/machine-id`: call it before (or off) the
    /// async runtime's workers.
    pub fn from_config(config: &AgentConfig) -> Result<Self, StrategyError> {
        let strategy = match config.strategy {
            StrategyKind::Immediate => Strategy::Immediate,
            StrategyKind::Periodic => {
                Strategy::Periodic(periodic::Schedule::from_config(&config.periodic)?)
            }
            StrategyKind::FleetLock => {
                Strategy::FleetLock(fleetlock::Client::from_config(&config.fleet_lock)?)
            }
            StrategyKind::Coordinated => Strategy::Coordinated,
        };
        Ok(Self { strategy })
    }

    pub fn immediate() -> Self {
        Self {
            strategy: Strategy::Immediate,
        }
    }

    pub fn coordinated() -> Self {
        Self {
            strategy: Strategy::Coordinated,
        }
    }

    pub fn periodic(schedule: periodic::Schedule) -> Self {
        Self {
            strategy: Strategy::Periodic(schedule),
        }
    }

    pub fn fleet_lock(client: fleetlock::Client) -> Self {
        Self {
            strategy: Strategy::FleetLock(client),
        }
    }

    pub fn kind(&self) -> StrategyKind {
        match self.strategy {
            Strategy::Immediate => StrategyKind::Immediate,
            Strategy::Periodic(_) => StrategyKind::Periodic,
            Strategy::FleetLock(_) => StrategyKind::FleetLock,
            Strategy::Coordinated => StrategyKind::Coordinated,
        }
    }

    /// Whether the daemon stages and reboots on its own; `coordinated` waits for the API.
    pub fn automatic(&self) -> bool {
        !matches!(self.strategy, Strategy::Coordinated)
    }

    pub fn schedule(&self) -> Option<&periodic::Schedule> {
        match &self.strategy {
            Strategy::Periodic(s) => Some(s),
            _ => None,
        }
    }

    /// Returns once a reboot is allowed: at once for `immediate` and `coordinated` (the
    /// coordinator has decided), inside a window for `periodic`, holding the lock for
    /// `fleet_lock` (retrying with backoff while refused or unreachable: it never returns
    /// `Ok` without the lock). The only error is [`StrategyError::Cancelled`].
    pub async fn wait_until_reboot_allowed(
        &self,
        clock: &dyn Clock,
        cancel: &CancellationToken,
    ) -> Result<(), StrategyError> {
        match &self.strategy {
            Strategy::Immediate | Strategy::Coordinated => Ok(()),
            Strategy::Periodic(schedule) => wait_for_window(schedule, clock, cancel).await,
            Strategy::FleetLock(client) => {
                retry_until_ok("take a FleetLock reboot slot", clock, cancel, || {
                    client.pre_reboot()
                })
                .await
            }
        }
    }

    /// After a good boot (and at start-up, to release a slot held before a crash): for
    /// `fleet_lock`, releases this host's slot, retrying until the server says 200 or
    /// `cancel` fires; a no-op otherwise.
    pub async fn report_steady_state(
        &self,
        clock: &dyn Clock,
        cancel: &CancellationToken,
    ) -> Result<(), StrategyError> {
        match &self.strategy {
            Strategy::FleetLock(client) => {
                retry_until_ok("release the FleetLock reboot slot", clock, cancel, || {
                    client.steady_state()
                })
                .await
            }
            _ => Ok(()),
        }
    }
}

async fn wait_for_window(
    schedule: &periodic::Schedule,
    clock: &dyn Clock,
    cancel: &CancellationToken,
) -> Result<(), StrategyError> {
    loop {
        let now = clock.now();
        if schedule.contains(now) {
            return Ok(());
        }
        let next = schedule.next_start(now);
        let wait = next
            .and_then(|start| Duration::try_from(start.duration_since(now)).ok())
            .unwrap_or(WINDOW_POLL_MAX)
            .clamp(Duration::from_millis(100), WINDOW_POLL_MAX);
        tracing::debug!(
            "outside the maintenance windows ({}); next opens at {next:?}",
            schedule.zone_name()
        );
        sleep_or_cancel(clock, wait, cancel).await?;
    }
}

/// Runs `attempt` until it succeeds, sleeping [`RETRY_FIRST`] doubling to [`RETRY_MAX`]
/// between failures.
async fn retry_until_ok<F, Fut>(
    what: &str,
    clock: &dyn Clock,
    cancel: &CancellationToken,
    mut attempt: F,
) -> Result<(), StrategyError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StrategyError>>,
{
    let mut delay = RETRY_FIRST;
    loop {
        let result = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(StrategyError::Cancelled),
            result = attempt() => result,
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!("cannot {what} ({e}); trying again in {delay:?}"),
        }
        sleep_or_cancel(clock, delay, cancel).await?;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

async fn sleep_or_cancel(
    clock: &dyn Clock,
    duration: Duration,
    cancel: &CancellationToken,
) -> Result<(), StrategyError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(StrategyError::Cancelled),
        () = clock.sleep(duration) => Ok(()),
    }
}
