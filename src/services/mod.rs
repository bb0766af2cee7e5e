//! Deciding and persisting, without HTTP types: resolving and authenticating clients, the
//! authorization flow, the token exchanges, enterprise identity assertions, revocation, the
//! upstream login, the users' upstream tokens, the guard's revocation cache, UserInfo, and the
//! audit trail. Handlers call these and turn their results into responses.

pub mod audit;
pub mod authorization;
pub mod clients;
pub mod enterprise;
pub mod grants;
pub mod revocation;
pub mod tokens;
pub mod upstream;
pub mod upstream_tokens;
pub mod userinfo;
