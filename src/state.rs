//! What every handler can reach, built once at start-up.

use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

use crate::cimd::CimdResolver;
use crate::clock::Clock;
use crate::config::Settings;
use crate::keys::Keystore;
use crate::random::Random;
use crate::ratelimit::Limiters;
use crate::services::audit::AuditLog;
use crate::services::revocation::RevocationCache;
use crate::services::upstream::Upstream;
use crate::store::DynStore;

pub struct App {
    pub settings: Settings,
    pub store: DynStore,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
    pub cimd: CimdResolver,
    /// Per-source rate limits of the endpoints a flood could hurt.
    pub limiters: Limiters,
    pub keys: Keystore,
    /// Where people log in: the upstream OpenID provider, or the development login.
    pub upstream: Box<dyn Upstream>,
    /// Discovery documents never change while running: serialized once.
    pub as_metadata: Bytes,
    /// The OpenID Connect Discovery document, likewise.
    pub openid_metadata: Bytes,
    /// One serialized metadata document per protected resource, in settings order.
    pub resource_metadata: Vec<Bytes>,
    pub revocations: RevocationCache,
    /// The HTTP client for upstream MCP servers (connection pool shared by all requests).
    pub mcp_http: reqwest::Client,
    /// Where audit events go (their rows are written by a background writer).
    pub audit: AuditLog,
}

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}
