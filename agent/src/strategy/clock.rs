//! The time source the strategies wait on, injectable so tests run hours of waiting in
//! milliseconds.

use std::time::Duration;

use futures_util::future::BoxFuture;
use jiff::Timestamp;

pub trait Clock: Send + Sync {
    /// The wall-clock time (maintenance windows are wall-clock times).
    fn now(&self) -> Timestamp;
    /// Waits for `duration`; must not block the runtime's workers.
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()>;
}

/// The real clock: the system time and tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}
