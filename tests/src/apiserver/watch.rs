//! Watches as the watch cache serves them: newline-delimited `{"type","object"}` events in
//! resourceVersion order, synthetic ADDED events for the initial state, bookmarks, selector
//! transitions turned into ADDED and DELETED, and 410 Gone for history it no longer has.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::errors::{ApiError, FieldError};
use super::operations::{Context, output};
use super::selectors::Selection;
use super::store::{EventType, Store, StoredEvent};

/// How long a watch waits for a resourceVersion newer than the store's before it answers 504,
/// as the watch cache does.
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// Synthetic ADDED events for the current state, then changes.
    CurrentState,
    /// Changes after this resourceVersion.
    After(u64),
}

/// A watch request's options.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    pub selection: Selection,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub send_initial_events: Option<bool>,
    pub bookmarks: bool,
    pub timeout: Duration,
}

/// Server-wide watch settings.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub bookmark_interval: Duration,
    pub shutdown: CancellationToken,
}

fn list_options_invalid(errors: &[FieldError]) -> ApiError {
    ApiError::invalid(
        "ListOptions.meta.k8s.io",
        "meta.k8s.io",
        "ListOptions",
        "",
        errors,
    )
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn error_line(error: &ApiError) -> Bytes {
    line("ERROR", error.status())
}

/// Turns a stored event into what this watcher sees, applying the selector to the object before
/// and after the change (`cacheWatcher.convertToWatchEvent`).
fn convert(ctx: &Context, selection: &Selection, event: &StoredEvent) -> Option<Bytes> {
    if ctx
        .namespace
        .as_ref()
        .is_some_and(|ns| *ns != event.key.namespace)
    {
        return None;
    }
    let current = event.kind != EventType::Deleted && selection.matches(&event.object);
    let before = event
        .previous
        .as_ref()
        .is_some_and(|p| selection.matches(p));
    let (kind, object) = match (current, before) {
        (true, false) => ("ADDED", event.object.clone()),
        (true, true) => ("MODIFIED", event.object.clone()),
        (false, true) if event.kind == EventType::Deleted => ("DELETED", event.object.clone()),
        (false, true) => {
            let mut last = event.previous.clone().unwrap_or(Value::Null);
            if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert(
                    "resourceVersion".to_owned(),
                    json!(event.revision.to_string()),
                );
            }
            ("DELETED", last)
        }
        (false, false) => return None,
    };
    Some(line(kind, output(&ctx.resource, &ctx.version, &object)))
}

fn bookmark(ctx: &Context, revision: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        json!({"kind": ctx.resource.kind, "apiVersion": ctx.resource.api_version(&ctx.version), "metadata": metadata}),
    )
}

/// Validates the request and starts streaming.
pub async fn watch(
    store: Arc<Store>,
    settings: WatchSettings,
    ctx: Context,
    request: WatchRequest,
) -> Result<Response, ApiError> {
    let start = start(&request)?;
    let mut changes = store.subscribe();
    if let Start::After(wanted) = start {
        wait_for_revision(&store, &mut changes, wanted).await?;
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (initial, cursor, epoch) = initial_events(&store, &ctx, &request.selection, start);
    let send_initial = request.send_initial_events == Some(true);
    let stream = Stream {
        store,
        settings,
        ctx,
        request,
        changes,
        cursor,
        epoch,
        tx,
    };
    tokio::spawn(stream.run(initial, send_initial));
    Ok(streamed(rx))
}

/// Where the request starts its watch, once its `resourceVersionMatch` and `sendInitialEvents`
/// are checked: the current state when initial events are asked for, whatever its
/// resourceVersion.
fn start(request: &WatchRequest) -> Result<Start, ApiError> {
    check_initial_events(request)?;
    let start = match request.resource_version.as_deref() {
        None | Some("" | "0") => Start::CurrentState,
        Some(text) => match text.parse::<u64>() {
            Ok(revision) => Start::After(revision),
            Err(_) => {
                return Err(list_options_invalid(&[FieldError::invalid(
                    "resourceVersion",
                    format!("\"{text}\""),
                    "must be a valid resourceVersion",
                )]));
            }
        },
    };
    if request.send_initial_events == Some(true) {
        Ok(Start::CurrentState)
    } else {
        Ok(start)
    }
}

/// `resourceVersionMatch` goes only with `sendInitialEvents`, and initial events only with
/// `NotOlderThan`.
fn check_initial_events(request: &WatchRequest) -> Result<(), ApiError> {
    if request.resource_version_match.is_some() && request.send_initial_events.is_none() {
        return Err(list_options_invalid(&[FieldError::forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        )]));
    }
    if request.send_initial_events == Some(true)
        && request.resource_version_match.as_deref() != Some("NotOlderThan")
    {
        return Err(list_options_invalid(&[FieldError {
            field: "resourceVersionMatch".to_owned(),
            problem: super::errors::FieldProblem::NotSupported {
                value: format!(
                    "\"{}\"",
                    request.resource_version_match.clone().unwrap_or_default()
                ),
                supported: vec!["\"NotOlderThan\"".to_owned()],
            },
        }]));
    }
    Ok(())
}

/// Waits, as the watch cache does, for the store to reach a resourceVersion the client has
/// seen; 504 once [`FRESHNESS_WAIT`] is over.
async fn wait_for_revision(
    store: &Store,
    changes: &mut tokio::sync::watch::Receiver<u64>,
    wanted: u64,
) -> Result<(), ApiError> {
    let deadline = Instant::now() + FRESHNESS_WAIT;
    while store.lock().revision() < wanted {
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Err(ApiError::too_large_resource_version(
                wanted,
                store.lock().revision(),
            ));
        }
    }
    Ok(())
}

/// What a watch sends first from `start`, and where it goes on from: ADDED events for the
/// selected objects of the current state, nothing after a resourceVersion still in the history,
/// or 410 Gone for one that is not. Also the store's epoch it started in.
fn initial_events(
    store: &Store,
    ctx: &Context,
    selection: &Selection,
    start: Start,
) -> (Result<Vec<Bytes>, ApiError>, u64, u64) {
    let state = store.lock();
    let resource_key = ctx.resource.key();
    match start {
        Start::CurrentState => {
            let added: Vec<Bytes> = state
                .objects(&resource_key)
                .filter(|(k, _)| ctx.namespace.as_ref().is_none_or(|ns| *ns == k.namespace))
                .filter(|(_, o)| selection.matches(o))
                .map(|(_, o)| line("ADDED", output(&ctx.resource, &ctx.version, o)))
                .collect();
            (Ok(added), state.revision(), state.epoch())
        }
        Start::After(revision) => match state.check_resumable(&resource_key, revision) {
            Ok(()) => (Ok(Vec::new()), revision, state.epoch()),
            Err(too_old) => (
                Err(ApiError::expired(format!(
                    "too old resource version: {revision} ({})",
                    too_old.oldest
                ))),
                revision,
                state.epoch(),
            ),
        },
    }
}

/// The 200 answer whose body is the lines sent on `rx`, until the stream drops its sender.
fn streamed(rx: mpsc::Receiver<Bytes>) -> Response {
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    }));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// One open watch.
struct Stream {
    store: Arc<Store>,
    settings: WatchSettings,
    ctx: Context,
    request: WatchRequest,
    changes: tokio::sync::watch::Receiver<u64>,
    cursor: u64,
    epoch: u64,
    tx: mpsc::Sender<Bytes>,
}

impl Stream {
    async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send(bytes).await.is_ok()
    }

    async fn run(mut self, initial: Result<Vec<Bytes>, ApiError>, send_initial: bool) {
        let initial = match initial {
            Ok(initial) => initial,
            Err(gone) => {
                self.send(error_line(&gone)).await;
                return;
            }
        };
        for event in initial {
            if !self.send(event).await {
                return;
            }
        }
        if send_initial && !self.send(bookmark(&self.ctx, self.cursor, true)).await {
            return;
        }
        let deadline = Instant::now() + self.request.timeout;
        let mut ticker = tokio::time::interval_at(
            Instant::now() + self.settings.bookmark_interval,
            self.settings.bookmark_interval,
        );
        loop {
            let pulled = {
                let state = self.store.lock();
                if state.epoch() != self.epoch {
                    Err(ApiError::expired(
                        "The resourceVersion for the provided watch is too old.",
                    ))
                } else {
                    match state.events_after(&self.ctx.resource.key(), self.cursor) {
                        Ok(events) => Ok((events, state.revision())),
                        Err(too_old) => Err(ApiError::expired(format!(
                            "too old resource version: {} ({})",
                            self.cursor, too_old.oldest
                        ))),
                    }
                }
            };
            match pulled {
                Err(gone) => {
                    self.send(error_line(&gone)).await;
                    return;
                }
                Ok((events, revision)) => {
                    for event in &events {
                        if let Some(bytes) = convert(&self.ctx, &self.request.selection, event)
                            && !self.send(bytes).await
                        {
                            return;
                        }
                    }
                    self.cursor = revision;
                }
            }
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = ticker.tick(), if self.request.bookmarks => {
                    if !self.send(bookmark(&self.ctx, self.cursor, false)).await {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = self.tx.closed() => return,
                () = self.settings.shutdown.cancelled() => return,
            }
        }
    }
}
