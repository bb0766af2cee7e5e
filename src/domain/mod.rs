//! The authorization flow as pure state machines: what a pending request is for and how far it
//! got, a grant's code and refresh tokens, who may log in. No I/O; `now` is always an argument.

pub mod consent;
pub mod grant;
pub mod identity;
pub mod pending;
pub mod upstream_token;
