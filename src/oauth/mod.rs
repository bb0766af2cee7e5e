//! Pure OAuth rules: parsing and deciding, with time and randomness as arguments. No I/O, no
//! HTTP types, no database types.

pub mod assertion;
pub mod client;
pub mod error;
pub mod id_jag;
pub mod oidc;
pub mod pkce;
pub mod redirect;
pub mod request;
pub mod resource;
pub mod scope;
pub mod secrets;
pub mod step_up;
pub mod token_exchange;
pub mod url_rules;

pub use error::{ErrorCode, OAuthError};
