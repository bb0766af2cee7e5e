//! What every handler can reach, built once at start-up.

use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

use crate::cimd::CimdResolver;
use crate::clock::Clock;
use crate::config::Settings;
use crate::keys::Keystore;
use crate::random::Random;
use crate::ratelimit::RateLimiter;
use crate::store::DynStore;
use crate::upstream::OidcUpstream;

pub struct App {
    pub settings: Settings,
    pub store: DynStore,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
    pub cimd: CimdResolver,
    pub register_limiter: RateLimiter,
    pub keys: Keystore,
    /// `None`: the built-in development login.
    pub upstream: Option<OidcUpstream>,
    /// Discovery documents never change while running: serialized once.
    pub as_metadata: Bytes,
    pub resource_metadata: Bytes,
}

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}
