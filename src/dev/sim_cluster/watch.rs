//! `GET <collection>?watch=true`: a stream of newline-delimited watch events, as the API
//! server sends them (`{"type": "ADDED", "object": {...}}`), over one chunked response.
//!
//! A watch from resource version "" or "0" first sends every current object as ADDED; one
//! from a later version replays the kept changes after it ([`super::objects::HISTORY`]), or,
//! when some are no longer kept, sends one ERROR event (a `Status` with code 410, reason
//! Expired) and ends, so the client lists again. Selectors apply to each change as to a list:
//! an object that stops matching is DELETED to that watch, one that starts matching ADDED.
//! With `allowWatchBookmarks=true` a BOOKMARK carries the newest version every minute and
//! when `timeoutSeconds` ends the watch.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::SimCluster;
use super::objects::{Change, ChangeType, Store};
use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::table::{self, IncludeObject, Rendering};

/// How long a watch lasts when the client names no `timeoutSeconds` (the API server's
/// `--min-request-timeout` default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// How often a quiet watch that allows bookmarks gets one, as the API server sends them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// Whether the query asks for a watch (`watch=true` or `watch=1`).
pub(crate) fn requested(query: &HashMap<String, String>) -> bool {
    query.get("watch").is_some_and(|w| w == "true" || w == "1")
}

/// What a watch request asks for, checked before the stream starts.
pub(crate) struct Request {
    pub res: &'static ResourceType,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub rendering: Rendering,
    pub include: IncludeObject,
}

/// Where the watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// "" or "0": the current objects as ADDED, then what changes.
    Now,
    /// Changes after this resource version.
    After(u64),
}

/// Starts the watch: everything the query says is checked here, so a bad one is a 400
/// before any event is sent.
pub(crate) fn serve(
    sim: &SimCluster,
    request: Request,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let param = |name: &str| query.get(name).map(String::as_str);
    let start = match param("resourceVersion").unwrap_or("") {
        "" | "0" => Start::Now,
        version => Start::After(version.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: {version:?}: must be a resource version the server sent"
            ))
        })?),
    };
    let timeout = match param("timeoutSeconds") {
        None | Some("") => DEFAULT_TIMEOUT,
        Some(seconds) => Duration::from_secs(seconds.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "timeoutSeconds: Invalid value: {seconds:?}: must be a whole number of seconds"
            ))
        })?),
    };
    let bookmarks = param("allowWatchBookmarks") == Some("true");
    let initial_events_end = bookmarks && param("sendInitialEvents") == Some("true");
    sim.count_watch(request.res);
    let now = Instant::now();
    let mut stream = Stream {
        sim: sim.clone(),
        request,
        bookmarks,
        cursor: 0,
        latest: sim.store().subscribe(),
        restarts: sim.restarts(),
        deadline: now + timeout,
        next_bookmark: now + BOOKMARK_EVERY,
        queue: VecDeque::new(),
        done: false,
    };
    {
        let store = sim.store();
        // Marked seen under the lock that reads the store: any later write wakes the stream.
        stream.latest.borrow_and_update();
        match start {
            Start::Now => {
                stream.send_current(&store);
                stream.cursor = store.latest_version();
                if initial_events_end {
                    let mut bookmark = stream.bookmark();
                    bookmark["object"]["metadata"]["annotations"] =
                        json!({ "k8s.io/initial-events-end": "true" });
                    stream.queue.push_back(bookmark);
                }
            }
            Start::After(version) => {
                stream.cursor = version;
                stream.catch_up(&store);
            }
        }
    }
    let body = Body::from_stream(futures_util::stream::unfold(stream, Stream::next));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// One open watch.
struct Stream {
    sim: SimCluster,
    request: Request,
    bookmarks: bool,
    /// The newest resource version this watch has looked at (sent or not).
    cursor: u64,
    latest: watch::Receiver<u64>,
    /// Changes when [`SimCluster::end_watches`] ends every open watch.
    restarts: watch::Receiver<u64>,
    deadline: Instant,
    next_bookmark: Instant,
    /// Events ready to send.
    queue: VecDeque<Value>,
    done: bool,
}

impl Stream {
    /// The next line to send, or None when the watch is over.
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                let mut line = event.to_string().into_bytes();
                line.push(b'\n');
                return Some((Ok(Bytes::from(line)), self));
            }
            if self.done {
                return None;
            }
            self.wait().await;
        }
    }

    async fn wait(&mut self) {
        // Changes first: what was written before a restart or the timeout is sent before the
        // watch ends, so what a client saw does not depend on which wakes first.
        tokio::select! {
            biased;
            changed = self.latest.changed() => match changed {
                Ok(()) => {
                    let sim = self.sim.clone();
                    self.latest.borrow_and_update();
                    self.catch_up(&sim.store());
                }
                Err(_) => self.done = true,
            },
            // As when the API server restarts: the client resumes from its last version.
            _ = self.restarts.changed() => self.done = true,
            () = sleep_until(self.deadline) => {
                if self.bookmarks {
                    let bookmark = self.bookmark();
                    self.queue.push_back(bookmark);
                }
                self.done = true;
            }
            () = sleep_until(self.next_bookmark), if self.bookmarks => {
                let bookmark = self.bookmark();
                self.queue.push_back(bookmark);
                self.next_bookmark = Instant::now() + BOOKMARK_EVERY;
            }
        }
    }

    fn send_current(&mut self, store: &Store) {
        let request = &self.request;
        let objects = if request.res.read_only {
            self.sim
                .namespace_objects()
                .iter()
                .filter(|o| self.selects(o))
                .cloned()
                .collect()
        } else {
            store.list(request.res, request.namespace.as_deref(), |o| {
                self.selects(o)
            })
        };
        for object in objects {
            let event = self.event("ADDED", &object);
            self.queue.push_back(event);
        }
    }

    /// Queues the changes after the cursor that this watch sees, or the 410 that tells the
    /// client to list again when they are no longer all kept.
    fn catch_up(&mut self, store: &Store) {
        match store.changes_after(self.cursor) {
            Ok(changes) => {
                for change in changes {
                    if let Some(kind) = self.seen_as(&change) {
                        let event = self.event(kind, &change.object);
                        self.queue.push_back(event);
                    }
                    self.cursor = change.resource_version;
                }
            }
            Err(expired) => {
                self.sim.count_expired(self.request.res);
                let status = ApiError::expired(self.cursor, expired.oldest).body();
                self.queue
                    .push_back(json!({ "type": "ERROR", "object": status }));
                self.done = true;
            }
        }
    }

    /// The event type a change is to this watch, if it sees it at all.
    fn seen_as(&self, change: &Change) -> Option<&'static str> {
        let res = self.request.res;
        if change.key.kind != res.kind || change.key.api_version != res.api_version() {
            return None;
        }
        if let Some(namespace) = &self.request.namespace
            && change.key.namespace != *namespace
        {
            return None;
        }
        let now = self.selects(&change.object);
        match change.change {
            ChangeType::Added => now.then_some("ADDED"),
            ChangeType::Deleted => now.then_some("DELETED"),
            ChangeType::Modified => {
                let before = change.previous.as_ref().is_some_and(|p| self.selects(p));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }

    fn selects(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        self.request.labels.matches(meta.get("labels")) && self.request.fields.matches(meta)
    }

    /// The event as the client asked to see objects: whole, as metadata, or as a Table row.
    fn event(&self, kind: &str, object: &Value) -> Value {
        let rendered = match self.request.rendering {
            Rendering::Object => object.clone(),
            Rendering::Metadata => table::partial_metadata(object),
            Rendering::Table => table::table(
                self.request.res,
                std::slice::from_ref(object),
                object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default(),
                self.request.include,
                SystemTime::now(),
            ),
        };
        json!({ "type": kind, "object": rendered })
    }

    fn bookmark(&self) -> Value {
        json!({
            "type": "BOOKMARK",
            "object": {
                "kind": self.request.res.kind,
                "apiVersion": self.request.res.api_version(),
                "metadata": { "resourceVersion": self.cursor.to_string() },
            },
        })
    }
}
