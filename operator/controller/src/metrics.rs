//! Prometheus metrics on `/metrics` (text exposition format 0.0.4) and `/healthz`, written by
//! hand: a few gauges and counters do not need a metrics library.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Upper bounds of the drain duration histogram, in seconds.
const DRAIN_BUCKETS: [f64; 8] = [5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

#[derive(Default)]
pub struct Metrics {
    leader: AtomicBool,
    steps: AtomicU64,
    step_errors: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (rollout, phase) → nodes.
    nodes: BTreeMap<(String, &'static str), u64>,
    halts: BTreeMap<String, u64>,
    drain_counts: [u64; DRAIN_BUCKETS.len()],
    drain_sum: f64,
    drain_total: u64,
    plan_seconds: BTreeMap<String, f64>,
}

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Poisoned only if a writer panicked mid-update; numbers are still worth serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    pub fn step_done(&self, ok: bool) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.step_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn set_nodes(&self, rollout: &str, counts: &[(&'static str, u64)], plan_seconds: f64) {
        let mut inner = self.inner();
        inner.nodes.retain(|(name, _), _| name != rollout);
        for (phase, count) in counts {
            inner.nodes.insert((rollout.to_string(), phase), *count);
        }
        inner.plan_seconds.insert(rollout.to_string(), plan_seconds);
    }

    /// Drops the gauges of rollouts that are gone.
    pub fn keep_only<'a>(&self, rollouts: impl Iterator<Item = &'a str>) {
        let live: std::collections::BTreeSet<&str> = rollouts.collect();
        let mut inner = self.inner();
        inner
            .nodes
            .retain(|(name, _), _| live.contains(name.as_str()));
        inner
            .plan_seconds
            .retain(|name, _| live.contains(name.as_str()));
    }

    pub fn halted(&self, rollout: &str) {
        *self.inner().halts.entry(rollout.to_string()).or_default() += 1;
    }

    pub fn drain_took(&self, seconds: f64) {
        let mut inner = self.inner();
        for (count, bound) in inner.drain_counts.iter_mut().zip(DRAIN_BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        inner.drain_sum += seconds;
        inner.drain_total += 1;
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let inner = self.inner();
        let mut out = Exposition::default();
        out.family(
            "clb_operator_leader",
            "gauge",
            "1 if this replica holds the leader lease.",
        );
        out.sample("clb_operator_leader", "", u8::from(self.is_leader()));
        out.family(
            "clb_operator_steps_total",
            "counter",
            "Rollout steps carried out.",
        );
        out.sample(
            "clb_operator_steps_total",
            "",
            self.steps.load(Ordering::Relaxed),
        );
        out.family(
            "clb_operator_step_errors_total",
            "counter",
            "Rollout steps that failed (retried).",
        );
        out.sample(
            "clb_operator_step_errors_total",
            "",
            self.step_errors.load(Ordering::Relaxed),
        );
        out.family(
            "clb_rollout_nodes",
            "gauge",
            "Selected nodes per rollout and phase.",
        );
        for ((rollout, phase), count) in &inner.nodes {
            let labels = format!("rollout=\"{}\",phase=\"{phase}\"", escape(rollout));
            out.sample("clb_rollout_nodes", &labels, count);
        }
        out.family(
            "clb_rollout_halts_total",
            "counter",
            "Times a rollout halted (failures beyond its budget).",
        );
        for (rollout, count) in &inner.halts {
            out.sample(
                "clb_rollout_halts_total",
                &format!("rollout=\"{}\"", escape(rollout)),
                count,
            );
        }
        out.family(
            "clb_rollout_plan_seconds",
            "gauge",
            "How long the last plan of the rollout took.",
        );
        for (rollout, seconds) in &inner.plan_seconds {
            out.sample(
                "clb_rollout_plan_seconds",
                &format!("rollout=\"{}\"", escape(rollout)),
                seconds,
            );
        }
        let drain = "clb_node_drain_duration_seconds";
        out.family(
            drain,
            "histogram",
            "How long node drains took (to the reboot, or to the timeout).",
        );
        for (count, bound) in inner.drain_counts.iter().zip(DRAIN_BUCKETS) {
            out.sample(
                &format!("{drain}_bucket"),
                &format!("le=\"{bound}\""),
                count,
            );
        }
        out.sample(&format!("{drain}_bucket"), "le=\"+Inf\"", inner.drain_total);
        out.sample(&format!("{drain}_sum"), "", inner.drain_sum);
        out.sample(&format!("{drain}_count"), "", inner.drain_total);
        out.text
    }
}

/// The Prometheus text format, line by line.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = if labels.is_empty() {
            writeln!(self.text, "{name} {value}")
        } else {
            writeln!(self.text, "{name}{{{labels}}} {value}")
        };
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics listener");
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(request.uri().path(), &metrics)) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics connection");
            }
        });
    }
}

fn answer(path: &str, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body, kind) = match path {
        "/metrics" => (
            StatusCode::OK,
            metrics.render(),
            "text/plain; version=0.0.4",
        ),
        "/healthz" => (StatusCode::OK, "ok\n".to_string(), "text/plain"),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_string(),
            "text/plain",
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(kind) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}
