//! Watch streams: newline-delimited JSON `{"type": ..., "object": ...}` events on a chunked
//! response, as `?watch=true` gets from the real server.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

pub use crate::event::event_line;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{ApiError, ResourceInfo, Store, Watcher};

/// A BOOKMARK carries only the kind, apiVersion and the current resourceVersion.
fn bookmark_line(info: &ResourceInfo, rv: u64) -> Bytes {
    event_line(
        "BOOKMARK",
        &json!({
            "kind": info.kind,
            "apiVersion": info.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
        }),
    )
}

/// The body of every response: a whole JSON document, or a watch stream that ends when the
/// server drops the watch (fault injection) or the client goes away.
#[derive(Debug)]
pub enum FakeBody {
    Full(Option<Bytes>),
    Stream(UnboundedReceiver<Bytes>),
}

impl FakeBody {
    pub fn json(value: &Value) -> Self {
        FakeBody::Full(Some(Bytes::from(value.to_string())))
    }
}

impl http_body::Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            FakeBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            FakeBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, FakeBody::Full(None))
    }
}

/// What a `?watch=true` request asked for.
#[derive(Debug)]
pub struct WatchRequest {
    pub info: ResourceInfo,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// `None` or `"0"`: start with the current state (synthetic ADDED events).
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    /// `sendInitialEvents=true` (streaming lists): the current state as ADDED events, then a
    /// BOOKMARK annotated `k8s.io/initial-events-end`, whatever the resourceVersion.
    pub send_initial_events: bool,
}

/// Opens a watch. Like the real server: from "0" or no version, the current objects come first
/// as ADDED; from a version still in the history, the changes after it are replayed; from an
/// older one, the stream carries one ERROR event with a 410 `Expired` Status and ends (the real
/// server answers 200 and puts the 410 in the stream, which is what clients handle).
pub fn open(store: &mut Store, req: WatchRequest) -> Result<UnboundedReceiver<Bytes>, ApiError> {
    let (tx, rx) = unbounded_channel();
    let rv = match req.resource_version.as_deref() {
        _ if req.send_initial_events => None,
        None | Some("") | Some("0") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))?,
        ),
    };
    let watcher = Watcher {
        info: req.info,
        namespace: req.namespace,
        labels: req.labels,
        fields: req.fields,
        bookmarks: req.bookmarks,
        tx,
    };
    match rv {
        Some(rv) if rv < store.history_floor() => {
            let err = ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {rv} ({})", store.history_floor()),
            );
            // The sender is dropped right after: the stream ends after the error.
            let _ = watcher.tx.send(event_line("ERROR", &err.status_body()));
            return Ok(rx);
        }
        Some(rv) => {
            for change in store.history_since(rv) {
                if let Some(kind) = watcher.event_for(change) {
                    let _ = watcher.tx.send(event_line(kind, &change.object));
                }
            }
        }
        None => {
            let ns = watcher.namespace.as_deref();
            for (key, obj) in store.objects_of(&watcher.info, ns) {
                if watcher.selects(key, obj) {
                    let _ = watcher.tx.send(event_line("ADDED", obj));
                }
            }
        }
    }
    if req.send_initial_events {
        let end = json!({
            "kind": watcher.info.kind,
            "apiVersion": watcher.info.api_version(),
            "metadata": {
                "resourceVersion": store.resource_version().to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        });
        let _ = watcher.tx.send(event_line("BOOKMARK", &end));
    } else if watcher.bookmarks {
        // The real server sends bookmarks at its own pace (about once a minute); one right
        // away tells the client where the replay ended, and `bookmark_all` sends more.
        let _ = watcher
            .tx
            .send(bookmark_line(&watcher.info, store.resource_version()));
    }
    store.watchers.push(watcher);
    Ok(rx)
}

/// Sends a BOOKMARK with the current resourceVersion to every watch that allowed them.
pub fn bookmark_all(store: &mut Store) {
    let rv = store.resource_version();
    store
        .watchers
        .retain(|w| !w.bookmarks || w.tx.send(bookmark_line(&w.info, rv)).is_ok());
}

/// Ends every open watch stream, as an API server restart or a load balancer timeout would.
pub fn drop_all(store: &mut Store) -> usize {
    let n = store.watchers.len();
    store.watchers.clear();
    n
}
