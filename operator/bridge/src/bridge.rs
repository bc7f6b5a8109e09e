//! The bridge's loop: one task that waits for the watch of its `NodeUpdate`, the agent's
//! signals and its timers, and then reconciles (reads the agent, moves the request on,
//! writes the status when it changed).

use std::future::Future;
use std::time::Duration;

use clb_operator_api::{
    BRIDGE_MANAGER, HostPhase, NodeRequest, NodeUpdate, NodeUpdateStatus, RequestAction,
    RequestState, RequestStatus,
};
use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::time::Instant;

use crate::BridgeError;
use crate::agent::{AgentEvent, AgentLink, AgentState, CallError};
use crate::report::{self, Verdict};

/// How the bridge runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node this bridge runs on: the name of its `NodeUpdate`.
    pub node_name: String,
    /// The D-Bus address of the host's system bus.
    pub bus_address: String,
    /// How often everything is read and compared again, whatever was signalled.
    pub resync: Duration,
    /// How often the status is written when nothing changed (only `lastReported` moves).
    pub heartbeat: Duration,
}

/// Signals come in bursts (several properties, then `Completed`): one reconcile for a burst.
const GATHER: Duration = Duration::from_millis(300);
/// At most one write per this period while only the progress of an operation moves.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Retry period for an agent that is busy or unreachable, and for a failed API write.
const RETRY: Duration = Duration::from_secs(5);

/// Runs the bridge until `shutdown` completes (SIGTERM in the binary). Returns an error only
/// when it cannot go on (the watch stream ended); passing failures of the agent or the API
/// are logged and retried.
pub async fn run(
    client: kube::Client,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BridgeError> {
    let api: Api<NodeUpdate> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", opts.node_name));
    let watch = watcher(api.clone(), config).default_backoff();
    let mut watch = std::pin::pin!(watch);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut b = Bridge::new(api, opts);
    tracing::info!(node = %b.opts.node_name, bus = %b.opts.bus_address, "node bridge starting");
    loop {
        let event = tokio::select! {
            () = &mut shutdown => break,
            w = watch.next() => Event::Watch(Box::new(w)),
            a = next_agent_event(&mut b.link) => Event::Agent(a),
            () = tokio::time::sleep_until(b.wake) => Event::Wake,
        };
        match event {
            Event::Watch(w) => match *w {
                None => return Err(BridgeError::WatchEnded),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching the NodeUpdate (retrying)");
                }
                Some(Ok(e)) => {
                    b.on_watch(e);
                    b.soon();
                }
            },
            Event::Agent(None) => {
                tracing::warn!("lost the connection to the system bus");
                b.link = None;
                b.soon();
            }
            Event::Agent(Some(e)) => {
                if let AgentEvent::Completed {
                    operation,
                    code,
                    message,
                } = e
                {
                    tracing::info!(%operation, code, %message, "the agent completed an operation");
                    b.completions.push(Completion {
                        operation,
                        code,
                        message,
                    });
                }
                b.soon();
            }
            Event::Wake => b.reconcile().await,
        }
    }
    tracing::info!("node bridge stopping");
    Ok(())
}

enum Event {
    Watch(Box<Option<Result<watcher::Event<NodeUpdate>, watcher::Error>>>),
    Agent(Option<AgentEvent>),
    Wake,
}

async fn next_agent_event(link: &mut Option<AgentLink>) -> Option<AgentEvent> {
    match link {
        Some(l) => l.next_event().await,
        None => std::future::pending().await,
    }
}

struct Completion {
    operation: String,
    code: i32,
    message: String,
}

/// The request this process works on.
struct Job {
    req: NodeRequest,
    /// Its `Running` status is written: only then is the agent called.
    recorded: bool,
    step: Step,
}

enum Step {
    /// Call the agent (again, after a busy answer) once it is this late.
    Start { at: Instant },
    /// The agent runs `operation` for it.
    Started { operation: &'static str },
    /// Found `Running` at start: finish it from what the agent reports, never start it.
    Resumed,
    /// `Reboot`: staged and asked to reboot; until the node runs the digest.
    WaitingForReboot,
}

fn operation_of(action: RequestAction) -> &'static str {
    match action {
        RequestAction::Stage => "download",
        RequestAction::Reboot => "apply",
    }
}

struct Bridge {
    opts: Options,
    api: Api<NodeUpdate>,
    link: Option<AgentLink>,
    connect_at: Instant,
    /// The object as last seen (watch or a write's answer); `None`: missing.
    object: Option<NodeUpdate>,
    /// The watch's first list is in.
    synced: bool,
    /// Objects seen during the watch's (re)list.
    listing: Vec<NodeUpdate>,
    /// `request` has been read from the object once; after that this process owns it.
    loaded: bool,
    request: Option<RequestStatus>,
    /// The largest id this process took up.
    taken_up: i64,
    job: Option<Job>,
    completions: Vec<Completion>,
    /// The last agent state read, for the status while the agent is unreachable.
    last_agent: Option<AgentState>,
    written: Option<NodeUpdateStatus>,
    written_at: Option<Instant>,
    wake: Instant,
}

impl Bridge {
    fn new(api: Api<NodeUpdate>, opts: Options) -> Bridge {
        let now = Instant::now();
        Bridge {
            opts,
            api,
            link: None,
            connect_at: now,
            object: None,
            synced: false,
            listing: Vec::new(),
            loaded: false,
            request: None,
            taken_up: 0,
            job: None,
            completions: Vec::new(),
            last_agent: None,
            written: None,
            written_at: None,
            wake: now + Duration::from_secs(3600),
        }
    }

    /// Reconcile after a short pause that gathers a burst of events.
    fn soon(&mut self) {
        self.wake_by(Instant::now() + GATHER);
    }

    fn wake_by(&mut self, at: Instant) {
        self.wake = self.wake.min(at);
    }

    fn on_watch(&mut self, event: watcher::Event<NodeUpdate>) {
        match event {
            watcher::Event::Init => self.listing.clear(),
            watcher::Event::InitApply(o) => self.listing.push(o),
            watcher::Event::InitDone => {
                self.object = self.listing.drain(..).next();
                self.synced = true;
            }
            watcher::Event::Apply(o) => self.object = Some(o),
            watcher::Event::Delete(_) => {
                tracing::warn!("the NodeUpdate was deleted; creating it again");
                self.object = None;
                // The status goes with it: write it again.
                self.written = None;
            }
        }
    }

    async fn reconcile(&mut self) {
        let now = Instant::now();
        self.wake = now + self.opts.resync;
        if !self.synced {
            return;
        }
        if self.object.is_none() && !self.create().await {
            self.wake_by(now + RETRY);
            return;
        }
        if !self.loaded {
            self.load();
        }
        self.connect().await;
        let mut agent = self.read_agent().await;
        self.take_up_new_request();
        let mut force = self.job.as_ref().is_some_and(|j| !j.recorded);
        if force && !self.write(&agent, true).await {
            return;
        }
        if let Ok(state) = &agent {
            let state = state.clone();
            let (called, finished) = self.drive(&state).await;
            force |= finished;
            if called {
                // The operation just started: report it as the agent has it now.
                agent = self.read_agent().await;
            }
        }
        self.write(&agent, force).await;
    }

    async fn create(&mut self) -> bool {
        let node = &self.opts.node_name;
        let body = json!({
            "apiVersion": format!("{}/{}", clb_operator_api::GROUP, clb_operator_api::VERSION),
            "kind": "NodeUpdate",
            "metadata": {"name": node},
            "spec": {"nodeName": node},
        });
        match self
            .api
            .patch(
                node,
                &PatchParams::apply(BRIDGE_MANAGER),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(o) => {
                tracing::info!(node = %node, "NodeUpdate created");
                self.object = Some(o);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "creating the NodeUpdate (retrying)");
                false
            }
        }
    }

    /// Takes over `status.request` from the object, once: a `Running` one is resumed.
    fn load(&mut self) {
        self.loaded = true;
        let Some(obj) = &self.object else { return };
        self.request = obj.status.as_ref().and_then(|s| s.request.clone());
        let Some(r) = &self.request else { return };
        self.taken_up = r.id;
        if r.state != RequestState::Running {
            return;
        }
        match obj.spec.request.as_ref().filter(|s| s.id == r.id) {
            Some(req) => {
                tracing::info!(
                    id = r.id,
                    action = ?r.action,
                    "request found running: finishing it from what the agent reports, not starting it again"
                );
                self.job = Some(Job {
                    req: req.clone(),
                    recorded: true,
                    step: Step::Resumed,
                });
            }
            // A larger id replaces it below; a spec without it cannot be finished.
            None if obj.spec.request.as_ref().is_some_and(|s| s.id > r.id) => {}
            None => {
                let id = r.id;
                self.finish(
                    id,
                    RequestState::Failed,
                    "the request is no longer in spec.request".into(),
                );
            }
        }
    }

    fn take_up_new_request(&mut self) {
        let Some(req) = self.object.as_ref().and_then(|o| o.spec.request.clone()) else {
            return;
        };
        let reported = self.request.as_ref().map_or(0, |r| r.id);
        if req.id <= reported || req.id <= self.taken_up {
            return;
        }
        tracing::info!(id = req.id, action = ?req.action, image = %req.image, "taking up a request");
        self.taken_up = req.id;
        self.request = Some(RequestStatus {
            id: req.id,
            action: req.action,
            state: RequestState::Running,
            message: String::new(),
            started_at: Some(now_time()),
            finished_at: None,
        });
        self.job = Some(Job {
            req,
            recorded: false,
            step: Step::Start { at: Instant::now() },
        });
    }

    fn finish(&mut self, id: i64, state: RequestState, message: String) {
        if let Some(r) = self.request.as_mut().filter(|r| r.id == id) {
            match state {
                RequestState::Failed => tracing::warn!(id, %message, "request failed"),
                _ => tracing::info!(id, %message, "request done"),
            }
            r.state = state;
            r.message = report::truncate(&message, 4096);
            r.finished_at = Some(now_time());
        }
        if self.job.as_ref().is_some_and(|j| j.req.id == id) {
            self.job = None;
        }
    }

    fn set_message(&mut self, message: String) {
        if let Some(r) = self.request.as_mut() {
            r.message = report::truncate(&message, 4096);
        }
    }

    /// Moves the job on; returns (an operation was started, the request ended).
    async fn drive(&mut self, agent: &AgentState) -> (bool, bool) {
        let Some(job) = &self.job else {
            return (false, false);
        };
        if !job.recorded {
            return (false, false);
        }
        let req = job.req.clone();
        let id = req.id;
        let short = clb_operator_api::short_digest(&req.digest);
        let step = match &job.step {
            Step::Start { at } => Some(*at),
            _ => None,
        };
        if let Some(at) = step {
            if Instant::now() < at {
                self.wake_by(at);
                return (false, false);
            }
            return self.start(&req, agent).await;
        }
        let completions = std::mem::take(&mut self.completions);
        let verdict = match &self.job.as_ref().map(|j| &j.step) {
            Some(Step::Started { operation }) => {
                let operation = *operation;
                match completions.iter().rev().find(|c| c.operation == operation) {
                    Some(c) if c.code != 0 => {
                        Verdict::Failed(format!("the agent's {operation} failed: {}", c.message))
                    }
                    Some(_) => report::verdict(&req, agent, operation),
                    None if agent.is_idle() => report::verdict(&req, agent, operation),
                    None => Verdict::AgentBusy,
                }
            }
            Some(Step::Resumed) => match report::verdict(&req, agent, operation_of(req.action)) {
                Verdict::Failed(m) if req.action == RequestAction::Stage => {
                    Verdict::Failed(format!(
                        "interrupted (the bridge restarted while it ran) and not started again: {m}"
                    ))
                }
                v => v,
            },
            _ => report::verdict(&req, agent, operation_of(req.action)),
        };
        match verdict {
            Verdict::Succeeded(m) => {
                self.finish(id, RequestState::Succeeded, m);
                (false, true)
            }
            Verdict::Failed(m) => {
                self.finish(id, RequestState::Failed, m);
                (false, true)
            }
            Verdict::AgentBusy => (false, false),
            Verdict::WaitingForReboot => {
                if let Some(j) = self.job.as_mut() {
                    j.step = Step::WaitingForReboot;
                }
                self.set_message(format!(
                    "{short} is staged; waiting for the node to reboot into it"
                ));
                (false, false)
            }
        }
    }

    /// Calls the agent for a request taken up.
    async fn start(&mut self, req: &NodeRequest, agent: &AgentState) -> (bool, bool) {
        let short = clb_operator_api::short_digest(&req.digest);
        if req.action == RequestAction::Reboot {
            if agent.booted_digest() == Some(req.digest.as_str()) {
                self.finish(
                    req.id,
                    RequestState::Succeeded,
                    format!("already running {short}"),
                );
                return (false, true);
            }
            if agent.is_idle() && agent.downloaded_digest != req.digest {
                let there = if agent.downloaded_digest.is_empty() {
                    "no verified download".to_string()
                } else {
                    format!(
                        "the verified download is {}",
                        clb_operator_api::short_digest(&agent.downloaded_digest)
                    )
                };
                self.finish(
                    req.id,
                    RequestState::Failed,
                    format!("refused to reboot: the agent has {there}, not the requested {short} (stage it first)"),
                );
                return (false, true);
            }
        }
        let Some(link) = &self.link else {
            self.retry_start("the agent is unreachable".into());
            return (false, false);
        };
        self.completions.clear();
        let called = match req.action {
            RequestAction::Stage => link.download(&req.image).await,
            RequestAction::Reboot if !agent.is_idle() => {
                Err(CallError::Busy(agent.operation.clone()))
            }
            RequestAction::Reboot => link.apply_and_reboot().await,
        };
        match called {
            Ok(()) => {
                let operation = operation_of(req.action);
                tracing::info!(
                    id = req.id,
                    operation,
                    "the agent started the request's operation"
                );
                if let Some(j) = self.job.as_mut() {
                    j.step = Step::Started { operation };
                }
                self.set_message(match req.action {
                    RequestAction::Stage => format!("downloading {short}"),
                    RequestAction::Reboot => format!("staging {short} and rebooting"),
                });
                (true, false)
            }
            Err(CallError::Busy(what)) => {
                self.retry_start(format!("the agent is busy ({what}); asking again"));
                (false, false)
            }
            Err(CallError::Transport(e)) => {
                self.retry_start(format!("the agent did not answer ({e}); asking again"));
                (false, false)
            }
            Err(e @ CallError::Refused { .. }) => {
                self.finish(req.id, RequestState::Failed, e.to_string());
                (false, true)
            }
        }
    }

    fn retry_start(&mut self, message: String) {
        tracing::info!(%message, "request not started yet");
        let at = Instant::now() + RETRY;
        if let Some(j) = self.job.as_mut() {
            j.step = Step::Start { at };
        }
        self.set_message(message);
        self.wake_by(at);
    }

    async fn connect(&mut self) {
        if self.link.is_some() || Instant::now() < self.connect_at {
            return;
        }
        match AgentLink::connect(&self.opts.bus_address).await {
            Ok(l) => self.link = Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the system bus");
                self.connect_at = Instant::now() + RETRY;
                self.wake_by(self.connect_at);
            }
        }
    }

    async fn read_agent(&mut self) -> Result<AgentState, String> {
        let Some(link) = &self.link else {
            return Err("no connection to the system bus".into());
        };
        match link.state().await {
            Ok(s) => {
                self.last_agent = Some(s.clone());
                Ok(s)
            }
            Err(e) => {
                tracing::debug!(error = %e, "the agent is unreachable");
                Err(e.to_string())
            }
        }
    }

    fn compose(&self, agent: &Result<AgentState, String>) -> NodeUpdateStatus {
        let mut status = match agent {
            Ok(a) => {
                let mut s = report::from_agent(a);
                let waiting = matches!(
                    self.job.as_ref().map(|j| &j.step),
                    Some(Step::WaitingForReboot)
                );
                if waiting && a.is_idle() {
                    s.phase = Some(HostPhase::Rebooting);
                }
                s
            }
            Err(_) => {
                let mut s = self
                    .last_agent
                    .as_ref()
                    .map(report::from_agent)
                    .unwrap_or_default();
                s.operation = None;
                s.progress = None;
                s.phase = Some(HostPhase::Unreachable);
                s
            }
        };
        status.request = self.request.clone();
        status
    }

    /// Writes the status when it changed (or `force`); returns whether it is written.
    async fn write(&mut self, agent: &Result<AgentState, String>, force: bool) -> bool {
        let now = Instant::now();
        let mut status = self.compose(agent);
        if !force && let Some(written) = &self.written {
            let since = self.written_at.map_or(Duration::MAX, |t| now - t);
            let heartbeat = since >= self.opts.heartbeat;
            if !heartbeat && !report::differs_beyond_progress(&status, written) {
                if status.progress == written.progress {
                    self.wake_by(now + (self.opts.heartbeat - since));
                    return true;
                }
                if since < PROGRESS_INTERVAL {
                    self.wake_by(now + (PROGRESS_INTERVAL - since));
                    return true;
                }
            }
        }
        status.last_reported = Some(now_time());
        let node = &self.opts.node_name;
        let body = json!({
            "apiVersion": format!("{}/{}", clb_operator_api::GROUP, clb_operator_api::VERSION),
            "kind": "NodeUpdate",
            "metadata": {"name": node},
            "status": status,
        });
        let params = PatchParams::apply(BRIDGE_MANAGER).force();
        match self
            .api
            .patch_status(node, &params, &Patch::Apply(&body))
            .await
        {
            Ok(o) => {
                tracing::debug!(phase = ?status.phase, "status written");
                self.object = Some(o);
                self.written = Some(status);
                self.written_at = Some(now);
                if let Some(j) = self.job.as_mut() {
                    j.recorded = true;
                }
                self.wake_by(now + self.opts.heartbeat);
                true
            }
            Err(e) => {
                if let kube::Error::Api(s) = &e
                    && s.code == 404
                {
                    self.object = None;
                }
                tracing::warn!(error = %e, "writing the NodeUpdate status (retrying)");
                self.wake_by(now + RETRY);
                false
            }
        }
    }
}

fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
