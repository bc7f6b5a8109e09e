//! Time between Kubernetes (`jiff::Timestamp` inside `Time`) and the planner (whole seconds
//! since the Unix epoch).

use clb_rollout_planner::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub fn to_planner(at: jiff::Timestamp) -> Timestamp {
    from_seconds(at.as_second())
}

/// A Kubernetes time (k8s-openapi carries its own jiff version) for the planner.
pub fn from_kube(at: &Time) -> Timestamp {
    from_seconds(at.0.as_second())
}

fn from_seconds(seconds: i64) -> Timestamp {
    // Times before 1970 do not occur in a cluster; clamp rather than wrap.
    Timestamp(u64::try_from(seconds).unwrap_or(0))
}

pub fn to_kube(at: Timestamp) -> Time {
    use k8s_openapi::jiff::Timestamp as KubeTimestamp;
    let seconds = i64::try_from(at.0).unwrap_or(i64::MAX);
    Time(KubeTimestamp::from_second(seconds).unwrap_or(KubeTimestamp::MAX))
}

/// Where the controller reads the time: the system clock, or a test's.
pub trait Clock: Send + Sync {
    fn now(&self) -> jiff::Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}
