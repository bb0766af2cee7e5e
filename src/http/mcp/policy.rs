//! Per-tool policy on a resource that has tool rules (`crate::policy`): a layer between the
//! bearer guard and the MCP server. It reads the JSON-RPC body (already bounded by
//! `AUTHGATE_MCP_MAX_BODY`), refuses mirrored headers that disagree with it, decides every
//! `tools/call`, and either answers itself (nothing reaches the MCP server) or passes the same
//! bytes on. Answers to `tools/list` are filtered (a JSON body whole, an SSE stream event by
//! event); every `tools/call` is audited when its answer ends. Resources without rules never get
//! this layer, so their requests are forwarded without being read.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde_json::Value;

use super::Caller;
use super::guard::{ResourceState, resource_metadata_url};
use crate::config::ResourceConfig;
use crate::http::error::{Challenge, McpError};
use crate::oauth::scope::ScopeSet;
use crate::oauth::step_up::challenge_scope;
use crate::policy::jsonrpc::{
    HEADER_MISMATCH, Header, INVALID_PARAMS, Inbound, Lists, Mismatch, PARSE_ERROR, check_headers,
    filter_tools_lists,
};
use crate::policy::sse::{EventSplitter, rewrite_event};
use crate::policy::{Call, Screening, ToolDecision, Verdict, Who, screen};
use crate::services::audit::{self, Kind, Outcome};
use crate::state::AppState;

/// The largest `tools/list` answer (a JSON body, or one SSE event) that is filtered; a larger
/// one is cut off rather than passed on unfiltered.
const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// The request being judged: who, where, since when.
#[derive(Clone)]
struct Gate {
    app: AppState,
    resource: Arc<ResourceConfig>,
    caller: Caller,
    scopes: ScopeSet,
    request_id: Option<String>,
    started: Instant,
}

impl Gate {
    fn who(&self) -> Who<'_> {
        Who {
            sub: &self.caller.sub,
            email: self.caller.email.as_deref(),
            scopes: &self.scopes,
        }
    }

    fn entry(&self, kind: Kind, outcome: Outcome) -> audit::Entry<'_> {
        audit::entry(&self.app, kind, outcome)
            .user(&self.caller.sub, self.caller.email.as_deref())
            .client(&self.caller.client_id)
            .resource(&self.resource.uri)
            .request_id(self.request_id.as_deref())
            .latency(self.started.elapsed())
    }

    fn audit_calls(&self, calls: &[Call], outcome: Outcome, detail: &str) {
        for call in calls {
            self.entry(Kind::ToolCall, outcome)
                .tool(&call.tool)
                .detail(detail)
                .record();
        }
    }

    /// A request the policy cannot judge or whose headers lie: refused, nothing forwarded.
    fn refuse(
        &self,
        outcome: Outcome,
        id: Option<Value>,
        code: i64,
        message: &'static str,
    ) -> McpError {
        self.entry(Kind::PolicyRefusal, outcome)
            .detail(message)
            .record();
        McpError::Policy {
            status: StatusCode::BAD_REQUEST,
            id: id.unwrap_or(Value::Null),
            code,
            message,
        }
    }

    /// A JSON-RPC error answering the call itself, with 200: the SDKs hand it to the one call
    /// as a tool error and the session goes on, as when an MCP server refuses a call. A non-2xx
    /// status would fail the whole transport request instead. Notifications and batches have no
    /// single call to answer, so they get 403.
    fn forbidden(&self, calls: &[Call], inbound: &Inbound) -> McpError {
        for call in calls {
            let detail = if call.decision == ToolDecision::Forbidden {
                "not allowed for this user"
            } else {
                "refused with a forbidden call in the same batch"
            };
            self.audit_calls(std::slice::from_ref(call), Outcome::Forbidden, detail);
        }
        let (status, id) = match inbound {
            Inbound::Single(m) if m.id.is_some() => (StatusCode::OK, m.id.clone()),
            _ => (StatusCode::FORBIDDEN, None),
        };
        McpError::Policy {
            status,
            id: id.unwrap_or(Value::Null),
            code: INVALID_PARAMS,
            message: "Tool not available: the gateway's policy does not let this user call it",
        }
    }

    /// 403 `insufficient_scope` naming every scope the request needs (RFC 6750 §3.1, the MCP
    /// step-up flow): the resource's own and those of the tool rules, with those the token
    /// already holds here (`challenge_scope`).
    fn step_up(&self, calls: &[Call], needed: &ScopeSet) -> McpError {
        let scope = challenge_scope(
            &ScopeSet::parse(&self.caller.scope),
            &self.resource.offered,
            &self.resource.scopes.union(needed),
        );
        self.audit_calls(calls, Outcome::StepUp, &format!("needs scope: {needed}"));
        McpError::Challenge {
            kind: Challenge::InsufficientScope,
            resource_metadata: resource_metadata_url(&self.app, &self.resource),
            scope: scope.to_string(),
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Header<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Header::Absent,
        (Some(v), None) => Header::One(v.as_bytes()),
        (Some(_), Some(_)) => Header::Several,
    }
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Which `tools/list` answers the response may carry: those of the request's ids, or any (a
/// stream resumed by GET may replay the answer to an earlier tools/list).
fn lists_to_filter(ids: Vec<Value>, method: &Method) -> Option<Lists> {
    if !ids.is_empty() {
        Some(Lists::Ids(ids))
    } else if method == Method::GET {
        Some(Lists::AnyResult)
    } else {
        None
    }
}

pub async fn enforce(
    State((app, resource)): State<ResourceState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        // The guard always runs first; without it nothing is forwarded.
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let (parts, body) = req.into_parts();
    let gate = Gate {
        scopes: ScopeSet::parse(&caller.scope),
        request_id: parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        started: Instant::now(),
        app,
        resource,
        caller,
    };
    let bytes = match axum::body::to_bytes(body, gate.app.settings.mcp_max_body).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => return McpError::TooLarge.into_response(),
        Err(_) => {
            let why = "Parse error: the body could not be read";
            return gate
                .refuse(Outcome::Malformed, None, PARSE_ERROR, why)
                .into_response();
        }
    };
    let screening = match judge(&gate, &parts.headers, &bytes) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    let lists = lists_to_filter(screening.lists, &parts.method);
    let mut parts = parts;
    if lists.is_some() {
        // A compressed answer could not be read, so it would have to pass unfiltered.
        parts.headers.remove(header::ACCEPT_ENCODING);
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let resp = match lists {
        Some(lists) if resp.status().is_success() => filter(&gate, resp, lists).await,
        _ => resp,
    };
    if screening.calls.is_empty() {
        resp
    } else {
        track_calls(gate, resp, screening.calls)
    }
}

/// The body read, its mirrored headers checked and its calls decided: what may go on, or the
/// answer that refuses it.
fn judge(gate: &Gate, headers: &HeaderMap, body: &[u8]) -> Result<Screening, McpError> {
    let inbound = Inbound::parse(body)
        .map_err(|m| gate.refuse(Outcome::Malformed, None, m.code(), m.message()))?;
    let single_id = match &inbound {
        Inbound::Single(m) => m.id.clone(),
        _ => None,
    };
    let (method, name) = (header(headers, "mcp-method"), header(headers, "mcp-name"));
    if let Err(Mismatch(why)) = check_headers(method, name, &inbound) {
        return Err(gate.refuse(Outcome::Mismatch, single_id, HEADER_MISMATCH, why));
    }
    let (screening, verdict) = screen(&gate.resource.tools, &gate.who(), &inbound);
    match verdict {
        Verdict::Forward => Ok(screening),
        Verdict::NoToolName => {
            let why = "Invalid params: tools/call needs a tool name";
            Err(gate.refuse(Outcome::Malformed, single_id, INVALID_PARAMS, why))
        }
        Verdict::Forbidden => Err(gate.forbidden(&screening.calls, &inbound)),
        Verdict::StepUp(needed) => Err(gate.step_up(&screening.calls, &needed)),
    }
}

/// The answer with the tools this caller may never call taken out of its `tools/list` results.
async fn filter(gate: &Gate, resp: Response, lists: Lists) -> Response {
    let encoded = resp
        .headers()
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        tracing::warn!("the MCP server compressed an answer to tools/list unasked; refused");
        return McpError::Gateway {
            status: StatusCode::BAD_GATEWAY,
            why: "the MCP server's answer to tools/list could not be filtered",
        }
        .into_response();
    }
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"));
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if is_sse {
        let state = SseFilter {
            inner: body.into_data_stream(),
            splitter: EventSplitter::new(MAX_LIST_BYTES),
            gate: gate.clone(),
            lists,
            done: false,
        };
        let stream = futures::stream::unfold(state, |mut f| async move {
            f.next_chunk().await.map(|item| (item, f))
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    // Anything else is read whole, as JSON; a body that is not JSON carries no tool list.
    let Ok(bytes) = axum::body::to_bytes(body, MAX_LIST_BYTES).await else {
        tracing::warn!("an answer to tools/list was too large to filter, or broke off");
        return McpError::Gateway {
            status: StatusCode::BAD_GATEWAY,
            why: "the MCP server's answer to tools/list could not be filtered",
        }
        .into_response();
    };
    let filtered = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|mut doc| {
            let who = gate.who();
            let mut keep = |tool: &str| gate.resource.tools.lists(tool, &who);
            filter_tools_lists(&mut doc, &lists, &mut keep)
                .then(|| serde_json::to_vec(&doc).ok())
                .flatten()
        });
    Response::from_parts(parts, Body::from(filtered.map_or(bytes, Bytes::from)))
}

/// An SSE answer passed on event by event, the events with a `tools/list` result rewritten.
struct SseFilter {
    inner: BodyDataStream,
    splitter: EventSplitter,
    gate: Gate,
    lists: Lists,
    done: bool,
}

impl SseFilter {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        while !self.done {
            let events = match self.inner.next().await {
                Some(Ok(chunk)) => match self.splitter.push(&chunk) {
                    Ok(events) if events.is_empty() => continue,
                    Ok(events) => events,
                    Err(_) => {
                        self.done = true;
                        tracing::warn!("an SSE event was too large to filter; stream cut");
                        return Some(Err(std::io::Error::other("SSE event too large to filter")));
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(std::io::Error::other(e)));
                }
                None => {
                    self.done = true;
                    self.splitter.finish().into_iter().collect()
                }
            };
            if !events.is_empty() {
                return Some(Ok(self.rewrite(events)));
            }
        }
        None
    }

    fn rewrite(&self, events: Vec<Vec<u8>>) -> Bytes {
        let who = self.gate.who();
        let mut out = Vec::new();
        for event in events {
            let rewritten = rewrite_event(&event, |data| {
                let mut doc: Value = serde_json::from_str(data).ok()?;
                let mut keep = |tool: &str| self.gate.resource.tools.lists(tool, &who);
                filter_tools_lists(&mut doc, &self.lists, &mut keep)
                    .then(|| serde_json::to_string(&doc).ok())
                    .flatten()
            });
            out.extend_from_slice(rewritten.as_deref().unwrap_or(&event));
        }
        Bytes::from(out)
    }
}

/// The answer, audited per call once it has been passed on completely (or broke off): the
/// latency is the call's, not the time to the first byte of a stream.
fn track_calls(gate: Gate, resp: Response, calls: Vec<Call>) -> Response {
    let (parts, body) = resp.into_parts();
    let expected = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let tracked = Tracked {
        inner: body.into_data_stream(),
        end: Some(CallsEnd {
            gate,
            calls,
            status: parts.status,
        }),
        sent: 0,
        expected,
    };
    Response::from_parts(parts, Body::from_stream(tracked))
}

struct CallsEnd {
    gate: Gate,
    calls: Vec<Call>,
    status: StatusCode,
}

impl CallsEnd {
    fn record(self, complete: bool) {
        let (outcome, detail) = match (self.status.is_success(), complete) {
            (true, true) => (Outcome::Ok, None),
            (true, false) => (Outcome::Cancelled, Some("the answer broke off".to_owned())),
            (false, _) => (
                Outcome::Error,
                Some(format!("HTTP {}", self.status.as_u16())),
            ),
        };
        for call in &self.calls {
            let mut e = self.gate.entry(Kind::ToolCall, outcome).tool(&call.tool);
            if let Some(d) = &detail {
                e = e.detail(d);
            }
            e.record();
        }
    }
}

struct Tracked {
    inner: BodyDataStream,
    end: Option<CallsEnd>,
    sent: u64,
    expected: Option<u64>,
}

impl Stream for Tracked {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                self.sent += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(end) = self.end.take() {
                    end.record(false);
                }
            }
            Poll::Ready(None) => {
                if let Some(end) = self.end.take() {
                    end.record(true);
                }
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A server may stop polling once it has sent Content-Length bytes.
        let complete = self.expected.is_some_and(|n| self.sent >= n);
        if let Some(end) = self.end.take() {
            end.record(complete);
        }
    }
}
