//! authgate: an OAuth 2.1 authorization server that stands in front of MCP servers.
//!
//! Layering, dependencies pointing one way: `oauth` (the protocol's rules), `domain` (the
//! flow's state machines) and `policy` (per-tool rules at the gateway) are pure; `store` persists them; `services` decide and persist without
//! HTTP types; `http` extracts, parses, calls a service and responds; the CLIs sit beside it.

pub mod cimd;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod keys;
pub mod oauth;
pub mod policy;
pub mod random;
pub mod ratelimit;
pub mod sealing;
pub mod services;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
