//! MCP sessions bound to their caller. A stateful MCP server hands out an `Mcp-Session-Id` and
//! serves that session to whoever presents the id; behind authgate it cannot tell callers apart
//! by anything else. So authgate binds every session id an upstream returns to the caller it was
//! returned to (subject, client id, resource), in the database that all instances share, and
//! forwards a request carrying a session id only for that caller. Every other request with a
//! session id gets the answer the streamable HTTP transport prescribes for a session the server
//! does not have (404), upon which a client starts a new session, and nothing is forwarded.
//!
//! An id authgate has no binding for is refused too, not passed on for the upstream to judge.
//! authgate binds each id before the response that carries it reaches the client, so an unbound
//! id was never issued to this caller through authgate: it is invented, copied from elsewhere,
//! expired and cleaned up, ended, or from before bindings existed. Letting the upstream decide
//! would reopen the hijack (the upstream knows only the id) and would let a client fixate a
//! session id of its choice on upstreams that accept one. A legitimate client loses at most one
//! round trip: it initializes again.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::Caller;
use crate::clock::Timestamp;
use crate::http::error::McpError;
use crate::oauth::secrets::{Hashed, kind};
use crate::state::App;
use crate::store::{McpSessionRecord, StoreError};
use crate::telemetry::names;

type SessionHash = Hashed<kind::McpSession>;

pub const HEADER: &str = "mcp-session-id";

/// Idle expiry needs only coarse use times: a busy session costs one write a minute, not one per
/// request. Short TTLs are touched more often so that a session in use never lapses.
const TOUCH_INTERVAL: i64 = 60;

/// Why a session id was not accepted from this caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No binding: never issued through authgate, ended, or cleaned up.
    Unknown,
    /// Bound to a different subject, client id or resource.
    OtherCaller,
    /// Unused for longer than the session TTL.
    Expired,
    /// Not a session id at all (outside visible ASCII, or empty).
    Malformed,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::OtherCaller => "other_caller",
            Self::Expired => "expired",
            Self::Malformed => "malformed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward { touch: bool },
    Refuse(Refusal),
}

/// The rule, without I/O: may `caller` use, on `resource`, the session whose binding is
/// `binding`?
pub fn decide(
    binding: Option<&McpSessionRecord>,
    caller: &Caller,
    resource: &str,
    now: Timestamp,
    ttl: i64,
) -> Decision {
    let Some(b) = binding else {
        return Decision::Refuse(Refusal::Unknown);
    };
    if b.subject != caller.sub || b.client_id != caller.client_id || b.resource != resource {
        return Decision::Refuse(Refusal::OtherCaller);
    }
    if now >= b.expires_at {
        return Decision::Refuse(Refusal::Expired);
    }
    Decision::Forward {
        touch: now - b.last_used_at >= TOUCH_INTERVAL.min(ttl / 2),
    }
}

/// Whether the upstream's answer to a request in a session means the session is over: an
/// accepted `DELETE`, or 404, which the transport reserves for "no such session". A `DELETE`
/// refused otherwise (405: the server does not let clients end sessions) leaves it alive.
pub fn ends_session(method: &Method, status: StatusCode) -> bool {
    status == StatusCode::NOT_FOUND || (method == Method::DELETE && status.is_success())
}

/// The transport allows only visible ASCII (0x21 to 0x7E) in a session id.
fn session_id(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return None;
    }
    value.to_str().ok()
}

enum Presented {
    None,
    One(SessionHash),
    /// More than one header: the upstream might read another one than authgate checked.
    Several,
    Malformed,
}

fn presented(headers: &HeaderMap) -> Presented {
    let mut values = headers.get_all(HEADER).iter();
    let Some(first) = values.next() else {
        return Presented::None;
    };
    if values.next().is_some() {
        return Presented::Several;
    }
    match session_id(first) {
        Some(id) => Presented::One(Hashed::of(id)),
        None => Presented::Malformed,
    }
}

fn refused(why: Refusal) -> McpError {
    metrics::counter!(names::MCP_SESSION_REFUSALS, "reason" => why.label()).increment(1);
    if why == Refusal::OtherCaller {
        tracing::info!("refused an MCP session id bound to another caller; nothing forwarded");
    } else {
        tracing::debug!(reason = why.label(), "refused an MCP session id");
    }
    // The TypeScript SDK's code and wording for an unknown session.
    McpError::JsonRpc {
        status: StatusCode::NOT_FOUND,
        code: -32001,
        message: "Session not found",
    }
}

fn unavailable(e: &StoreError) -> McpError {
    tracing::warn!(error = %e, "MCP session check failed");
    McpError::Unavailable
}

fn bad_gateway(why: &'static str) -> McpError {
    McpError::Gateway {
        status: StatusCode::BAD_GATEWAY,
        why,
    }
}

/// A request's session, checked before forwarding; [`Checked::after`] records what the
/// upstream's answer changes.
#[derive(Debug)]
pub struct Checked {
    resource: String,
    presented: Option<SessionHash>,
    method: Method,
}

/// Runs before anything is forwarded. `Err` is the answer to send instead (404 for a session
/// this caller may not use, 503 when the database cannot say: fail closed).
pub async fn before(
    state: &App,
    caller: &Caller,
    resource: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Checked, McpError> {
    let hash = match presented(headers) {
        Presented::None => None,
        Presented::One(hash) => Some(hash),
        Presented::Several => {
            return Err(McpError::JsonRpc {
                status: StatusCode::BAD_REQUEST,
                code: -32600,
                message: "Bad Request: more than one Mcp-Session-Id",
            });
        }
        Presented::Malformed => return Err(refused(Refusal::Malformed)),
    };
    if let Some(hash) = &hash {
        let now = state.clock.now();
        let ttl = state.settings.mcp_session_ttl;
        let binding = state
            .store
            .get_mcp_session(hash, resource)
            .await
            .map_err(|e| unavailable(&e))?;
        match decide(binding.as_ref(), caller, resource, now, ttl) {
            Decision::Refuse(why) => return Err(refused(why)),
            Decision::Forward { touch: false } => {}
            Decision::Forward { touch: true } => state
                .store
                .touch_mcp_session(hash, resource, now, now.saturating_add(ttl))
                .await
                .map_err(|e| unavailable(&e))?,
        }
    }
    Ok(Checked {
        resource: resource.to_owned(),
        presented: hash,
        method: method.clone(),
    })
}

impl Checked {
    /// Runs once the upstream's status and headers are in, before any of it reaches the client:
    /// ends the binding of an ended session, and binds a session id the upstream issued to this
    /// caller. `Err` is the answer to send instead of the upstream's.
    pub async fn after(
        self,
        state: &App,
        caller: &Caller,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<(), McpError> {
        if let Some(hash) = &self.presented
            && ends_session(&self.method, status)
        {
            // A leftover binding is harmless (only its owner may use it, and the upstream no
            // longer knows the id), so a failure here does not fail the request.
            if let Err(e) = state.store.delete_mcp_session(hash, &self.resource).await {
                tracing::warn!(error = %e, "could not remove an ended MCP session binding; it expires idle");
            }
        }
        let mut values = headers.get_all(HEADER).iter();
        let Some(first) = values.next() else {
            return Ok(());
        };
        let issued = match (session_id(first), values.next()) {
            (Some(id), None) => Hashed::of(id),
            _ => {
                tracing::warn!(
                    "the MCP server sent a malformed or repeated Mcp-Session-Id; refused"
                );
                return Err(bad_gateway("the MCP server sent an invalid session id"));
            }
        };
        if self.presented.as_ref() == Some(&issued) {
            // Checked above as this caller's (or just ended: not to be bound again).
            return Ok(());
        }
        let now = state.clock.now();
        let binding = McpSessionRecord {
            id: issued,
            resource: self.resource,
            subject: caller.sub.clone(),
            client_id: caller.client_id.clone(),
            created_at: now,
            last_used_at: now,
            expires_at: now.saturating_add(state.settings.mcp_session_ttl),
        };
        match state.store.bind_mcp_session(&binding).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::warn!(
                    "the MCP server issued a session id already bound to another caller; refused"
                );
                Err(bad_gateway(
                    "the MCP server issued a session id that belongs to another caller",
                ))
            }
            // Without a binding the client could not use the session anyway.
            Err(e) => Err(unavailable(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOURCE: &str = "https://mcp.example.com/mcp";
    const NOW: Timestamp = 1_790_000_000;
    const TTL: i64 = 86_400;

    fn caller(sub: &str, client_id: &str) -> Caller {
        Caller {
            sub: sub.into(),
            email: None,
            client_id: client_id.into(),
            scope: "mcp".into(),
            grant_id: "g1".into(),
        }
    }

    fn bound_to(sub: &str, client_id: &str, last_used_at: Timestamp) -> McpSessionRecord {
        McpSessionRecord {
            id: Hashed::of("h"),
            resource: RESOURCE.into(),
            subject: sub.into(),
            client_id: client_id.into(),
            created_at: NOW - 1000,
            last_used_at,
            expires_at: last_used_at + TTL,
        }
    }

    #[test]
    fn only_the_caller_it_was_issued_to_may_use_a_session() {
        let b = bound_to("ann", "c1", NOW - 10);
        let ann = caller("ann", "c1");
        assert_eq!(
            decide(Some(&b), &ann, RESOURCE, NOW, TTL),
            Decision::Forward { touch: false }
        );
        for (who, resource) in [
            (caller("bob", "c1"), RESOURCE),
            (caller("ann", "c2"), RESOURCE),
            (caller("ann", "c1"), "https://mcp.example.com/files/mcp"),
        ] {
            assert_eq!(
                decide(Some(&b), &who, resource, NOW, TTL),
                Decision::Refuse(Refusal::OtherCaller),
                "{who:?} on {resource}"
            );
        }
        assert_eq!(
            decide(None, &ann, RESOURCE, NOW, TTL),
            Decision::Refuse(Refusal::Unknown)
        );
    }

    #[test]
    fn sessions_expire_idle_and_are_touched_at_most_once_a_minute() {
        let ann = caller("ann", "c1");
        let b = bound_to("ann", "c1", NOW - 59);
        assert_eq!(
            decide(Some(&b), &ann, RESOURCE, NOW, TTL),
            Decision::Forward { touch: false }
        );
        let b = bound_to("ann", "c1", NOW - 60);
        assert_eq!(
            decide(Some(&b), &ann, RESOURCE, NOW, TTL),
            Decision::Forward { touch: true }
        );
        let b = bound_to("ann", "c1", NOW - TTL);
        assert_eq!(
            decide(Some(&b), &ann, RESOURCE, NOW, TTL),
            Decision::Refuse(Refusal::Expired)
        );
        // A TTL under two minutes is touched at half its length, so a session in use lives on.
        let mut b = bound_to("ann", "c1", NOW - 15);
        b.expires_at = b.last_used_at + 30;
        assert_eq!(
            decide(Some(&b), &ann, RESOURCE, NOW, 30),
            Decision::Forward { touch: true }
        );
    }

    #[test]
    fn what_ends_a_session() {
        assert!(ends_session(&Method::DELETE, StatusCode::OK));
        assert!(ends_session(&Method::DELETE, StatusCode::NO_CONTENT));
        assert!(ends_session(&Method::POST, StatusCode::NOT_FOUND));
        assert!(ends_session(&Method::DELETE, StatusCode::NOT_FOUND));
        assert!(!ends_session(
            &Method::DELETE,
            StatusCode::METHOD_NOT_ALLOWED
        ));
        assert!(!ends_session(&Method::DELETE, StatusCode::BAD_GATEWAY));
        assert!(!ends_session(&Method::POST, StatusCode::OK));
    }

    #[test]
    fn session_ids_are_visible_ascii_and_presented_once() {
        let mut h = HeaderMap::new();
        assert!(matches!(presented(&h), Presented::None));
        h.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert!(matches!(presented(&h), Presented::One(x) if x == Hashed::of("abc-123")));
        h.append(HEADER, HeaderValue::from_static("other"));
        assert!(matches!(presented(&h), Presented::Several));
        for bad in ["", "a b", "caf\u{e9}"] {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_bytes(bad.as_bytes()).unwrap());
            assert!(matches!(presented(&h), Presented::Malformed), "{bad:?}");
        }
    }
}
