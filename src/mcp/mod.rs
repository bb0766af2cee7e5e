//! The protected MCP endpoints: the bearer guard in front of every resource path, then either
//! streaming forwarding to the MCP server behind authgate or the built-in MCP server.

pub mod builtin;
pub mod forward;
pub mod guard;
pub mod headers;
pub mod host;
pub mod revocation;
pub mod session;

/// Who is calling, as established by the guard from a verified access token. Handlers behind the
/// guard read it from the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub sub: String,
    pub email: Option<String>,
    pub client_id: String,
    pub scope: String,
}
