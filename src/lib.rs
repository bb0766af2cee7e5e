//! authgate: an OAuth 2.1 authorization server that stands in front of MCP servers.
//!
//! Layering: `oauth` holds the pure protocol rules (no I/O); `store` persists; `cimd` fetches
//! client metadata documents; `http` extracts, parses, decides and responds.

pub mod cimd;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod keys;
pub mod mcp;
pub mod oauth;
pub mod random;
pub mod ratelimit;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod upstream;
