#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
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
mod faults;
mod flow;
mod helpers;
mod inspector;
mod keys;
mod mcp;
mod mcp_sessions;
mod ops;
mod pages;
mod policy;
mod process;
mod register;
mod store;
mod token;
mod upstream;
