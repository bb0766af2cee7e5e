#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::disallowed_methods,
    reason = "tests drive real processes and real providers on the wall clock, and make throw-away keys"
)]
//! One integration binary: every module here boots the real application (real HTTP, real
//! database) and runs against both storage backends.

mod account;
mod audit;
mod auth0;
mod authorize;
mod boundary;
mod browser;
mod caches;
mod cimd;
mod clients;
mod compat;
mod conformance;
mod discovery;
mod doctor;
mod enterprise;
mod faults;
mod flow;
mod helpers;
mod inspector;
mod issuer;
mod keys;
mod mcp;
mod mcp_sessions;
mod oidc;
mod ops;
mod pages;
mod policy;
mod private_key_jwt;
mod process;
mod register;
mod stepup;
mod store;
mod token;
mod upstream;
mod upstream_tokens;
mod webview;
