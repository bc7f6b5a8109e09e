//! Fault injection (5xx for the next N requests under a path prefix, added latency) and the
//! request log tests read to count and check API calls.

use std::time::Duration;

/// One request as the server saw it, and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string (still percent-encoded), empty when there was none.
    pub query: String,
    pub content_type: Option<String>,
    /// The bearer token, which tells apart the processes (each gets its own kubeconfig from
    /// [`crate::FakeApiServer::kubeconfig_for`]): the fake checks no RBAC, tests can check
    /// who wrote what.
    pub token: Option<String>,
    pub status: u16,
}

#[derive(Debug, Clone)]
struct FailRule {
    prefix: String,
    method: Option<String>,
    remaining: u32,
    code: u16,
}

#[derive(Debug, Clone)]
struct DelayRule {
    prefix: String,
    delay: Duration,
}

/// The faults armed by the test, consumed by requests as they arrive.
#[derive(Debug, Default)]
pub struct Faults {
    fail: Vec<FailRule>,
    delay: Vec<DelayRule>,
    pub(crate) log: Vec<LoggedRequest>,
}

impl Faults {
    /// The next `count` requests whose path starts with `prefix` (and, if given, use `method`)
    /// fail with `code` (a 5xx: 500, 503, 504...).
    pub fn fail_next(&mut self, prefix: &str, method: Option<&str>, count: u32, code: u16) {
        self.fail.push(FailRule {
            prefix: prefix.into(),
            method: method.map(str::to_ascii_uppercase),
            remaining: count,
            code,
        });
    }

    /// Every request under `prefix` waits `delay` before it is handled (`Duration::ZERO` clears).
    pub fn delay(&mut self, prefix: &str, delay: Duration) {
        self.delay.retain(|d| d.prefix != prefix);
        if !delay.is_zero() {
            self.delay.push(DelayRule {
                prefix: prefix.into(),
                delay,
            });
        }
    }

    pub fn clear(&mut self) {
        self.fail.clear();
        self.delay.clear();
    }

    /// The added latency of a request: the longest matching rule.
    pub fn latency(&self, path: &str) -> Duration {
        self.delay
            .iter()
            .filter(|d| path.starts_with(&d.prefix))
            .map(|d| d.delay)
            .max()
            .unwrap_or_default()
    }

    /// Consumes one armed failure for this request, if any matches.
    pub fn take_failure(&mut self, method: &str, path: &str) -> Option<u16> {
        let rule = self.fail.iter_mut().find(|r| {
            r.remaining > 0
                && path.starts_with(&r.prefix)
                && r.method.as_deref().is_none_or(|m| m == method)
        })?;
        rule.remaining -= 1;
        let code = rule.code;
        self.fail.retain(|r| r.remaining > 0);
        Some(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_prefix_and_method() {
        let mut f = Faults::default();
        f.fail_next("/api/v1/nodes", Some("patch"), 2, 503);
        assert_eq!(f.take_failure("GET", "/api/v1/nodes/a"), None);
        assert_eq!(f.take_failure("PATCH", "/api/v1/pods/a"), None);
        assert_eq!(f.take_failure("PATCH", "/api/v1/nodes/a"), Some(503));
        assert_eq!(f.take_failure("PATCH", "/api/v1/nodes/b"), Some(503));
        assert_eq!(f.take_failure("PATCH", "/api/v1/nodes/a"), None);
        f.delay("/apis", Duration::from_millis(5));
        assert_eq!(f.latency("/apis/clb.dev"), Duration::from_millis(5));
        assert_eq!(f.latency("/api/v1"), Duration::ZERO);
    }
}
