//! Deciding and persisting, without HTTP types: resolving and authenticating clients, the
//! authorization flow, the token exchanges, revocation, the upstream login, the guard's
//! revocation cache, and the audit trail. Handlers call these and turn their results into responses.

pub mod audit;
pub mod authorization;
pub mod clients;
pub mod grants;
pub mod revocation;
pub mod tokens;
pub mod upstream;
