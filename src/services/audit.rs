//! The audit trail: tool calls the gateway inspects and security events, each written three
//! ways: a JSON log line (target `authgate::audit`), the Prometheus counter
//! `authgate_audit_events_total{kind,outcome}`, and a row of `audit_events`.
//!
//! The row is written off the request's path. Requests hand events to a bounded queue without
//! waiting; one writer task per instance stores them in batches (one transaction each), so a
//! burst of tool calls costs the database one commit per batch, not one per call, and a slow or
//! failing database never slows or fails a user's request. A failed batch is logged and counted
//! (`authgate_audit_write_failures_total`); when the queue is full the row is dropped and counted
//! the same way. The log line is written before the row is queued, so the log stays complete
//! even when the table misses rows.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::clock::Timestamp;
use crate::state::App;
use crate::store::{AuditEvent, DynStore};
use crate::telemetry::names;

/// Events waiting for the writer; beyond this, rows are dropped (and counted) rather than
/// making requests wait.
const QUEUE: usize = 16_384;
/// Rows per transaction at most.
const BATCH: usize = 512;
/// How long the writer waits for more events after the first of a batch: under load a batch then
/// holds many rows (a few statements, one commit) instead of one, at the price of rows reaching
/// the table this much later. A flush does not wait.
const LINGER: Duration = Duration::from_millis(50);
/// Longest text kept in a column: tool names come from the caller and may be anything.
const MAX_TEXT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ToolCall,
    Login,
    Consent,
    RefreshReuse,
    CodeReplay,
    Revocation,
    PolicyRefusal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ToolCall => "tool_call",
            Self::Login => "login",
            Self::Consent => "consent",
            Self::RefreshReuse => "refresh_reuse",
            Self::CodeReplay => "code_replay",
            Self::Revocation => "revocation",
            Self::PolicyRefusal => "policy_refusal",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A call the MCP server answered (whatever the tool's result), a login that succeeded.
    Ok,
    /// A call that failed at the gateway or got an error status from the MCP server.
    Error,
    /// The client went away before the answer was complete.
    Cancelled,
    /// Refused until the token carries more scope.
    StepUp,
    /// Refused for good: this user may never call the tool.
    Forbidden,
    /// A login the login policy refused.
    Refused,
    Approved,
    Denied,
    Revoked,
    /// `Mcp-Method`/`Mcp-Name` disagree with the body.
    Mismatch,
    /// A body the gateway cannot judge (not JSON-RPC, a key repeated, a call without a name).
    Malformed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
            Self::StepUp => "step_up",
            Self::Forbidden => "forbidden",
            Self::Refused => "refused",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Revoked => "revoked",
            Self::Mismatch => "mismatch",
            Self::Malformed => "malformed",
        }
    }
}

tokio::task_local! {
    static REQUEST_ID: Option<String>;
}

/// Runs a request's handler with its `X-Request-Id` at hand, so that the events the services
/// record carry it without every service taking it as an argument.
pub async fn with_request_id<F: Future>(id: Option<String>, handler: F) -> F::Output {
    REQUEST_ID.scope(id, handler).await
}

fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok().flatten()
}

/// Control characters out (the CLI prints these columns to a terminal), and at most `MAX_TEXT`
/// characters.
fn clean(text: &str) -> String {
    text.chars()
        .take(MAX_TEXT)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// A new event: when, what and how it ended; the rest is filled in by the caller.
pub fn event(id: String, at: Timestamp, kind: Kind, outcome: Outcome) -> AuditEvent {
    AuditEvent {
        id,
        at,
        kind: kind.as_str().to_owned(),
        outcome: outcome.as_str().to_owned(),
        subject: None,
        email: None,
        client_id: None,
        resource: None,
        tool: None,
        latency_ms: None,
        request_id: None,
        detail: None,
    }
}

/// The log line and the counter of an event (the row is the caller's business).
pub fn emit(kind: Kind, outcome: Outcome, e: &AuditEvent) {
    metrics::counter!(names::AUDIT_EVENTS, "kind" => kind.as_str(), "outcome" => outcome.as_str())
        .increment(1);
    tracing::info!(
        target: "authgate::audit",
        kind = kind.as_str(),
        outcome = outcome.as_str(),
        subject = e.subject.as_deref(),
        email = e.email.as_deref(),
        client_id = e.client_id.as_deref(),
        resource = e.resource.as_deref(),
        tool = e.tool.as_deref(),
        latency_ms = e.latency_ms,
        request_id = e.request_id.as_deref(),
        detail = e.detail.as_deref(),
        "audit event"
    );
}

/// An event being described; [`Entry::record`] sends it.
#[must_use = "an audit entry is only written by record()"]
pub struct Entry<'a> {
    log: &'a AuditLog,
    kind: Kind,
    outcome: Outcome,
    event: AuditEvent,
}

/// Starts an event of the request being served (its request id is taken from the request).
pub fn entry(app: &App, kind: Kind, outcome: Outcome) -> Entry<'_> {
    let mut event = event(app.random.id(), app.clock.now(), kind, outcome);
    event.request_id = current_request_id();
    Entry {
        log: &app.audit,
        kind,
        outcome,
        event,
    }
}

impl Entry<'_> {
    pub fn user(mut self, sub: &str, email: Option<&str>) -> Self {
        self.event.subject = Some(clean(sub));
        self.event.email = email.map(clean);
        self
    }

    pub fn client(mut self, client_id: &str) -> Self {
        self.event.client_id = Some(clean(client_id));
        self
    }

    /// The client, when there is one (an account-page login has none).
    pub fn client_if(mut self, client_id: Option<&str>) -> Self {
        self.event.client_id = client_id.map(clean);
        self
    }

    pub fn resource(mut self, uri: &str) -> Self {
        self.event.resource = Some(clean(uri));
        self
    }

    pub fn tool(mut self, name: &str) -> Self {
        self.event.tool = Some(clean(name));
        self
    }

    pub fn latency(mut self, took: Duration) -> Self {
        self.event.latency_ms = Some(i64::try_from(took.as_millis()).unwrap_or(i64::MAX));
        self
    }

    /// For events recorded after the request's handler returned (a streamed answer's end).
    pub fn request_id(mut self, id: Option<&str>) -> Self {
        if let Some(id) = id {
            self.event.request_id = Some(clean(id));
        }
        self
    }

    pub fn detail(mut self, text: &str) -> Self {
        self.event.detail = Some(clean(text));
        self
    }

    pub fn record(self) {
        self.log.record(self.kind, self.outcome, self.event);
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "events are nearly every message; boxing them would allocate once per event for the rare flush"
)]
enum Msg {
    Event(AuditEvent),
    /// Answered once every event queued before it has been written (or has failed).
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct Counts {
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// The queue between requests and the writer.
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    rx: Mutex<Option<mpsc::Receiver<Msg>>>,
    counts: Arc<Counts>,
}

impl Default for AuditLog {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditLog {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            counts: Arc::default(),
        }
    }

    fn record(&self, kind: Kind, outcome: Outcome, event: AuditEvent) {
        emit(kind, outcome, &event);
        if self.tx.try_send(Msg::Event(event)).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(names::AUDIT_WRITE_FAILURES, "reason" => "queue_full").increment(1);
            tracing::warn!(
                kind = kind.as_str(),
                "audit queue full; the event is in the log but not in the audit table"
            );
        }
    }

    /// Waits until every event recorded so far has been written (or its write has failed).
    /// Without a running writer it returns at once.
    pub async fn flush(&self) {
        if self.rx.lock().await.is_some() {
            return;
        }
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Rows that could not be stored: failed writes, and events dropped from a full queue.
    pub fn lost(&self) -> (u64, u64) {
        (
            self.counts.failed.load(Ordering::Relaxed),
            self.counts.dropped.load(Ordering::Relaxed),
        )
    }

    /// Starts the writer (once; later calls return `None`).
    pub async fn start_writer(&self, store: DynStore) -> Option<tokio::task::JoinHandle<()>> {
        let rx = self.rx.lock().await.take()?;
        Some(tokio::spawn(write(store, rx, self.counts.clone())))
    }
}

async fn write(store: DynStore, mut rx: mpsc::Receiver<Msg>, counts: Arc<Counts>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        let until = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Event(e) => batch.push(e),
                Msg::Flush(done) => waiting.push(done),
            }
            next = if batch.len() >= BATCH || !waiting.is_empty() {
                None
            } else {
                tokio::time::timeout_at(until, rx.recv())
                    .await
                    .ok()
                    .flatten()
            };
        }
        if !batch.is_empty() {
            if let Err(e) = store.insert_audit_events(&batch).await {
                let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
                counts.failed.fetch_add(n, Ordering::Relaxed);
                metrics::counter!(names::AUDIT_WRITE_FAILURES, "reason" => "database").increment(n);
                tracing::warn!(error = %e, events = n, "audit events could not be stored; they are in the log only");
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_text_is_bounded_and_printable() {
        assert_eq!(clean("echo"), "echo");
        assert_eq!(clean("a\u{1b}[31mb\n"), "a\u{fffd}[31mb\u{fffd}");
        assert_eq!(clean(&"x".repeat(10_000)).chars().count(), MAX_TEXT);
    }

    #[tokio::test]
    async fn request_ids_reach_events_recorded_inside_the_request() {
        assert_eq!(current_request_id(), None);
        let seen = with_request_id(Some("req-1".into()), async { current_request_id() }).await;
        assert_eq!(seen.as_deref(), Some("req-1"));
    }
}
