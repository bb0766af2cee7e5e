//! Pure OAuth rules: parsing and deciding, with time and randomness as arguments. No I/O, no
//! HTTP types, no database types.

pub mod client;
pub mod error;
pub mod redirect;
pub mod scope;
pub mod secrets;
pub mod url_rules;

pub use error::{ErrorCode, OAuthError};
pub mod grant;
pub mod identity;
pub mod pkce;
pub mod resource;
