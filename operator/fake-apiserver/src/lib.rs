//! A stateful fake Kubernetes API server for the operator's tests.
//!
//! No real API server (nor etcd, kind, k3s) can be installed on these machines, and
//! `kube-fake-client` targets kube 4 with no watch and no eviction. This crate keeps objects in
//! memory and speaks the REST protocol of the Kubernetes API conventions, so the controller
//! runtime, drains and server-side apply run against it unchanged. It is used two ways:
//! - in process: [`FakeApiServer::client`] is a `tower::Service` for `kube::Client::new`;
//! - over HTTP: [`FakeApiServer::start`] serves on `127.0.0.1:<random port>` (from a thread
//!   of its own, so a test blocking on its child processes does not starve it) and
//!   [`FakeApiServer::kubeconfig`] writes a kubeconfig (plain http, a dummy token;
//!   [`FakeApiServer::kubeconfig_for`] one token per process) so the operator and the node
//!   bridge run as real processes;
//! - standalone: the `clb-fake-apiserver` binary prints its URL and writes a kubeconfig.
//!
//! Tests seed and inspect state directly ([`FakeApiServer::create`], [`FakeApiServer::get`],
//! [`FakeApiServer::store`]), arm faults, and read the request log.
//!
//! # Implemented
//! - Objects by group/version/resource/namespace/name (core `/api/v1` and `/apis/{g}/{v}`
//!   paths, namespaced and cluster-scoped), a registry of known resources (namespaces, nodes,
//!   pods, events (core and events.k8s.io), configmaps, leases, poddisruptionbudgets,
//!   daemonsets, customresourcedefinitions, the clb.dev/v1alpha1 rollouts and nodeupdates), and
//!   any CRD created through the API or registered by the test ([`FakeApiServer::register`]).
//! - create (201, 409 `AlreadyExists`, `generateName`), get (404 `NotFound`), list with
//!   `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, exists, `!`) and `fieldSelector` (`=`,
//!   `!=` on any dotted path), update (PUT; 409 `Conflict` on a stale `resourceVersion`),
//!   delete and deletecollection, errors as `Status` objects with `reason` and `code`; a
//!   create carrying a `resourceVersion` is a 400; `/version` answers.
//! - One global, monotonically increasing `resourceVersion`; lists carry it; no-op writes do
//!   not bump it. `metadata.generation` counts changes outside `metadata` and `status`.
//! - The `/status` subresource: writes to it change only `status`, writes to the main resource
//!   never change `status` (for resources that have the subresource).
//! - Finalizers: delete sets `deletionTimestamp`; the object goes when the last one is removed.
//! - PATCH: JSON merge patch, JSON patch (add, remove, replace, move, copy, test), strategic
//!   merge patch (lists merged by key; 415 for custom resources; see [`patch`]), server-side
//!   apply with `fieldManager` (required), `force`, `managedFields` and 409 conflicts naming
//!   the other manager's fields; the applied object must name its `apiVersion` and `kind`
//!   (see [`apply`]).
//! - Watch (`?watch=true`): ADDED/MODIFIED/DELETED from a `resourceVersion` in the retained
//!   history, synthetic ADDED from "0" or none, BOOKMARK with `allowWatchBookmarks=true`, an
//!   ERROR event with a 410 `Expired` Status for versions older than the history window; an
//!   object that starts or stops matching a watch's selectors is ADDED or DELETED for it;
//!   streaming lists (`sendInitialEvents=true`, ending with the `k8s.io/initial-events-end`
//!   bookmark); the test can drop every open watch (see [`watch`]). kube's watcher and
//!   reflector run on it (tests/runtime.rs).
//! - A `resourceVersion` in a PUT body, a patch or an applied object is a precondition (409).
//! - The eviction subresource with PodDisruptionBudget semantics: 429 when no disruption is
//!   allowed, 500 when several budgets match, PDB status kept up to date (see [`eviction`]).
//! - Fault injection (5xx for the next N requests under a path prefix and method, added
//!   latency) and a request log with the bearer token of each call (see [`faults`]).
//!
//! # Simplified compared to a real API server
//! - No authentication or authorization (any token is accepted, RBAC is not checked), no
//!   admission, no validation against CRD schemas or CEL rules, no defaulting, no conversion
//!   between versions (each version is its own storage), no discovery documents (`/api`,
//!   `/apis`, OpenAPI), no protobuf, no table output, no pagination (`limit` and `continue`
//!   are ignored: lists are always complete), namespaces need not exist. `dryRun` is refused
//!   with a 400 rather than ignored. Delete options (grace period, preconditions, propagation
//!   policy) are ignored.
//! - `timeoutSeconds` is ignored: watches last until dropped. Bookmarks are sent when a watch
//!   starts and when the test calls [`FakeApiServer::send_bookmarks`], not once a minute.
//! - Graceful deletion of pods is immediate; no garbage collection of owned objects.
//! - Server-side apply tracks ownership of leaf paths with atomic lists (see [`apply`]); the
//!   apply body must be JSON (which YAML accepts; kube and client-go send JSON).
//! - Eviction recomputes budgets from the pods at each call (see [`eviction`]) and answers
//!   201 with a success `Status` (the Kubernetes docs say 200; both are a success to clients).
//! - Strategic merge patch knows the merge keys of a few lists by field name, not by type
//!   (see [`patch`]).

pub mod apply;
pub mod event;
pub mod eviction;
pub mod faults;
pub mod meta;
pub mod patch;
pub mod registry;
pub mod router;
pub mod selectors;
pub mod store;
pub mod watch;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

pub use faults::LoggedRequest;
pub use store::{ApiError, ResourceInfo, Store};
pub use watch::FakeBody;

use faults::Faults;
use router::Reply;

/// The state shared by the HTTP server and every in-process client.
#[derive(Debug, Default)]
struct Shared {
    store: Mutex<Store>,
    faults: Mutex<Faults>,
}

impl Shared {
    // A panicking test thread must not hide the state from the others: ignore poisoning.
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn json_response(code: u16, value: &Value) -> http::Response<FakeBody> {
    let mut resp = http::Response::new(FakeBody::json(value));
    *resp.status_mut() =
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// One request, from the wire (or an in-process client) to the response.
async fn handle<B>(shared: Arc<Shared>, req: http::Request<B>) -> http::Response<FakeBody>
where
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let token = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(String::from);

    let latency = shared.faults().latency(&path);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let failure = shared.faults().take_failure(method.as_str(), &path);
    let bytes = body.collect().await.map(|c| c.to_bytes());
    let reply = match (failure, bytes) {
        (Some(code), _) => {
            let reason = if code == 503 {
                "ServiceUnavailable"
            } else {
                "InternalError"
            };
            ApiError::new(code, reason, format!("injected fault: {code} for {path}")).into()
        }
        (None, Err(e)) => ApiError::bad_request(format!("reading the request body: {e}")).into(),
        (None, Ok(bytes)) => router::route(
            &mut shared.store(),
            &method,
            &path,
            &query,
            content_type.as_deref(),
            &bytes,
        ),
    };
    let (status, resp) = match reply {
        Reply::Json(code, value) => (code, json_response(code, &value)),
        Reply::Watch(rx) => {
            let mut resp = http::Response::new(FakeBody::Stream(rx));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            (200, resp)
        }
    };
    shared.faults().log.push(LoggedRequest {
        method: method.to_string(),
        path,
        query,
        content_type,
        token,
        status,
    });
    resp
}

/// The in-process client side: `kube::Client::new(server.client(), "default")`.
#[derive(Debug, Clone)]
pub struct FakeService {
    shared: Arc<Shared>,
}

impl<B> tower_service::Service<http::Request<B>> for FakeService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Display,
{
    type Response = http::Response<FakeBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(handle(shared, req).await) })
    }
}

/// A fake API server: its state, and (after [`FakeApiServer::start`]) an HTTP listener on
/// 127.0.0.1. Dropping it stops the listener.
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: Option<SocketAddr>,
    /// Dropping it stops the server thread (its runtime, and with it every connection).
    stop: Option<tokio::sync::watch::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::in_process()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            // The thread only finishes its current poll; a panic there is already reported.
            let _ = thread.join();
        }
    }
}

/// The accept loop of the HTTP server; returns when the stop sender is dropped.
async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors or the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            // A client hanging up mid-request is not the server's error.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

impl FakeApiServer {
    /// A server reachable only through [`FakeApiServer::client`] (no socket, no runtime needed
    /// until a request is made).
    pub fn in_process() -> Self {
        FakeApiServer {
            shared: Arc::default(),
            addr: None,
            stop: None,
            thread: None,
        }
    }

    /// Serves HTTP/1.1 on 127.0.0.1 on a free port, from a thread of its own with its own
    /// runtime: a test may block (wait for a child process, sleep) without starving the
    /// server its child processes talk to. Async only for the callers' convenience.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_blocking()
    }

    /// [`FakeApiServer::start`] for callers without a runtime.
    pub fn start_blocking() -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared: Arc<Shared> = Arc::default();
        let (stop, stopped) = tokio::sync::watch::channel(());
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || runtime.block_on(serve(listener, for_thread, stopped)))?;
        Ok(FakeApiServer {
            shared,
            addr: Some(addr),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`, or `None` for an in-process server.
    pub fn url(&self) -> Option<String> {
        self.addr.map(|a| format!("http://{a}"))
    }

    /// Writes a kubeconfig pointing at the HTTP listener (context `fake`, namespace
    /// `default`, the bearer token `fake-token`: the server accepts any).
    pub fn kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        self.kubeconfig_for(path, "fake-token")
    }

    /// A kubeconfig with its own token, e.g. one per node bridge, so the request log says
    /// which process made each call.
    pub fn kubeconfig_for(&self, path: &Path, token: &str) -> std::io::Result<()> {
        let url = self.url().ok_or_else(|| {
            std::io::Error::other("the fake API server is in-process only: use start()")
        })?;
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: fake\n  user:\n    token: {token}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n"
        );
        std::fs::write(path, config)
    }

    /// A `tower::Service` for `kube::Client::new(service, "default")`, talking to this server
    /// without a socket.
    pub fn client(&self) -> FakeService {
        FakeService {
            shared: self.shared.clone(),
        }
    }

    /// Direct access to the state (seed objects, inspect them, tune the history window).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.store()
    }

    /// Creates an object without going through HTTP (seeding a test): its `apiVersion` and
    /// `kind` say which resource, `metadata.namespace` where.
    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        let mut store = self.shared.store();
        let field = |f: &str| object.get(f).and_then(Value::as_str).unwrap_or_default();
        let info = store
            .lookup_kind(field("apiVersion"), field("kind"))
            .ok_or_else(|| ApiError::bad_request("unknown apiVersion/kind"))?;
        let ns = store::meta_str(&object, "namespace").map(String::from);
        store.create(&info, ns.as_deref(), object)
    }

    /// The stored object, if any (`namespace` is ignored for cluster-scoped kinds).
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let store = self.shared.store();
        let info = store.lookup_kind(api_version, kind)?;
        store.get_obj(&info, namespace, name).ok()
    }

    /// Makes a resource (a CRD the test does not create through the API) known.
    pub fn register(&self, info: ResourceInfo) {
        self.shared.store().register(info);
    }

    /// How many changes watches can resume over before older versions get 410.
    pub fn set_history_limit(&self, changes: usize) {
        self.shared.store().set_history_limit(changes);
    }

    /// Ends every open watch stream; returns how many there were.
    pub fn drop_watches(&self) -> usize {
        watch::drop_all(&mut self.shared.store())
    }

    /// Sends a BOOKMARK to every watch that allowed them.
    pub fn send_bookmarks(&self) {
        watch::bookmark_all(&mut self.shared.store());
    }

    /// The next `count` requests under `path_prefix` (with `method`, if given) fail with `code`.
    pub fn fail_next(&self, path_prefix: &str, method: Option<&str>, count: u32, code: u16) {
        self.shared
            .faults()
            .fail_next(path_prefix, method, count, code);
    }

    /// Adds `delay` to every request under `path_prefix` (`Duration::ZERO` removes it).
    pub fn delay(&self, path_prefix: &str, delay: Duration) {
        self.shared.faults().delay(path_prefix, delay);
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.faults().log.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.faults().log.clear();
    }
}
