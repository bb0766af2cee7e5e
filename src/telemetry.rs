//! Logs and metrics. Logs carry a request id and never a query string, secret, code, token or
//! cookie; metrics are Prometheus, served on their own listener.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide metrics recorder (once) and returns its handle.
pub fn metrics() -> Option<PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0,
                ])
                .ok()?;
            builder.install_recorder().ok()
        })
        .clone()
}

pub fn init_logs(json: bool) {
    let filter = EnvFilter::try_from_env("AUTHGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

/// An error and its sources on one line (`outer: inner: innermost`), for messages that must not
/// lose the cause a library wraps.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        out.push_str(": ");
        out.push_str(&inner.to_string());
        source = inner.source();
    }
    out
}

/// Names of the metrics, in one place.
pub mod names {
    pub const REGISTRATIONS: &str = "authgate_registrations_total";
    pub const AUTHORIZATIONS: &str = "authgate_authorizations_total";
    pub const TOKEN_GRANTS: &str = "authgate_token_grants_total";
    pub const REFRESH_EVENTS: &str = "authgate_refresh_events_total";
    pub const GUARD_REJECTIONS: &str = "authgate_guard_rejections_total";
    pub const UPSTREAM_LOGIN_SECONDS: &str = "authgate_upstream_login_seconds";
    pub const MCP_FORWARD_SECONDS: &str = "authgate_mcp_forward_seconds";
    pub const MCP_FORWARD_RESPONSES: &str = "authgate_mcp_forward_responses_total";
    pub const MCP_SESSION_REFUSALS: &str = "authgate_mcp_session_refusals_total";
    pub const DB_POOL_CONNECTIONS: &str = "authgate_db_pool_connections";
    pub const HTTP_REQUESTS: &str = "authgate_http_requests_total";
    pub const RATE_LIMITED: &str = "authgate_rate_limited_total";
    /// Database queries of the MCP guard's revocation check (its cache misses), by operation.
    pub const DB_QUERIES: &str = "authgate_db_queries_total";
    /// Refreshes of users' upstream tokens, by outcome (`refreshed`, `refused`, `failed`).
    pub const UPSTREAM_TOKEN_REFRESHES: &str = "authgate_upstream_token_refreshes_total";
    /// Audit events by `kind` and `outcome` (every event, whether or not its row was stored).
    pub const AUDIT_EVENTS: &str = "authgate_audit_events_total";
    /// Audit rows not stored, by `reason`: `database` (a failed write) or `queue_full`.
    pub const AUDIT_WRITE_FAILURES: &str = "authgate_audit_write_failures_total";
}
