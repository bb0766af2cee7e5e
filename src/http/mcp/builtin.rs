//! The built-in MCP server, used when no upstream is configured: `cargo run -- serve` is then a
//! complete, protected MCP server whose `whoami` tool shows the caller's identity.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, tool, tool_handler, tool_router};
use serde_json::json;

use super::Caller;

#[derive(Clone)]
pub struct Builtin {
    #[allow(dead_code, reason = "read by the tool_handler macro")]
    tool_router: ToolRouter<Self>,
}

impl Default for Builtin {
    fn default() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl Builtin {
    #[tool(
        description = "Who am I? Returns the identity and scopes authgate verified for this request."
    )]
    async fn whoami(&self, ctx: RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
        let caller = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>())
            .ok_or_else(|| ErrorData::internal_error("no verified caller", None))?;
        let body = json!({
            "sub": caller.sub,
            "email": caller.email,
            "client_id": caller.client_id,
            "scope": caller.scope,
        });
        Ok(CallToolResult::success(vec![ContentBlock::text(
            body.to_string(),
        )]))
    }
}

#[tool_handler]
impl rmcp::ServerHandler for Builtin {}

pub type BuiltinService = StreamableHttpService<Builtin, NeverSessionManager>;

/// Stateless (no MCP sessions in memory), so any instance can answer any request. The Host check
/// is authgate's concern (it sits behind a reverse proxy whose Host may differ), and the guard
/// checks `Origin` before this runs.
pub fn service() -> BuiltinService {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .disable_allowed_hosts();
    StreamableHttpService::new(
        || Ok(Builtin::default()),
        std::sync::Arc::new(NeverSessionManager::default()),
        config,
    )
}
