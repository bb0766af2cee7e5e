//! Client ID Metadata Documents: a `client_id` that is an https URL names a JSON document that
//! describes the client. This module fetches it safely (no redirects, capped body, no private
//! addresses after DNS resolution) and caches it as its HTTP headers allow; the key sets of
//! clients that sign their assertions (`jwks_uri`) are fetched and cached the same way. When
//! the live fetch of a well-known host's document fails, its pinned copy ([`pinned`]) may stand
//! in. Enterprise identity providers' key sets (and the discovery documents that name them) come
//! through the same guard and caches. The rules for the documents themselves are in
//! `oauth::client`.

pub mod pinned;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use moka::future::Cache;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH};

use crate::clock::Timestamp;
use crate::oauth::assertion::parse_key_set;
use crate::oauth::client::{
    ClientMetadata, parse_metadata_document, validate_jwks_uri, validate_metadata_document_url,
};
use crate::oauth::redirect::RedirectAllowlist;
use crate::oauth::scope::ScopeSet;
use crate::oauth::url_rules::is_special_use_ip;
use crate::oauth::{ErrorCode, OAuthError};

/// The draft recommends a 5 KB cap; Claude's document is about 400 bytes.
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// A key set of a few RSA keys is a few KB; twenty keys (the most accepted) fit.
pub const MAX_KEY_SET_BYTES: usize = 16 * 1024;
/// Enterprise identity providers publish larger documents: discovery documents list many
/// endpoints, and key sets carry certificate chains (`x5c`) beside each key.
pub const MAX_ISSUER_DOCUMENT_BYTES: usize = 64 * 1024;
const MAX_CACHE_SECONDS: i64 = 24 * 3600;
pub const MAX_CACHE_ENTRIES: u64 = 1024;
/// A cached key set is fetched again for an unknown `kid` (the client rotated its keys), but
/// not more often than this, so unknown kids cannot turn authgate into a fetch loop.
pub const MIN_KEY_REFETCH_SECONDS: i64 = 30;

/// Each entry carries its own deadline (from its `Cache-Control`), checked against the injected
/// clock; the cache itself only bounds the count, evicting the least useful entry.
#[derive(Clone)]
struct Cached<T> {
    value: T,
    fetched_at: Timestamp,
    expires_at: Timestamp,
}

pub struct CimdResolver {
    http: reqwest::Client,
    cache: Cache<String, Cached<ClientMetadata>>,
    key_sets: Cache<String, Cached<JwkSet>>,
    /// An enterprise issuer's `jwks_uri`, from its discovery document.
    issuer_key_uris: Cache<String, Cached<String>>,
    offered_scopes: ScopeSet,
    allowlist: RedirectAllowlist,
    pinned_fallback: bool,
}

/// Options for the fetcher. `test_hosts` maps host names to loopback addresses and is the only
/// way a loopback address is ever reached (for the project's own tests); `extra_ca_pem` adds a
/// trusted root for those test hosts. `pinned_fallback` lets the pinned copies stand in for
/// failed fetches of the well-known documents (`AUTHGATE_CIMD_FALLBACK`).
#[derive(Default, Clone)]
pub struct FetchOptions {
    pub test_hosts: Vec<(String, SocketAddr)>,
    pub extra_ca_pem: Option<Vec<u8>>,
    pub pinned_fallback: bool,
}

/// Where a resolved document came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A live fetch made earlier, still fresh.
    Cache,
    Live,
    /// The pinned copy, because the live fetch failed for this reason.
    Pinned(String),
}

#[derive(Debug, Clone)]
pub struct Resolved {
    pub metadata: ClientMetadata,
    pub source: Source,
}

/// A client's keys, and when they were fetched if they came from the cache (an unknown `kid`
/// may then mean they have rotated since).
#[derive(Debug, Clone)]
pub struct ClientKeys {
    pub keys: JwkSet,
    pub cached_since: Option<Timestamp>,
}

/// Why a fetch failed.
#[derive(Debug)]
enum FetchFailure {
    /// No usable answer: no connection, a time-out, or a status other than 200. A pinned copy
    /// may stand in.
    Unavailable(String),
    /// The host answered, and what it said is refused: that is the client's answer.
    Unacceptable(String),
}

impl CimdResolver {
    pub fn new(
        offered_scopes: ScopeSet,
        allowlist: RedirectAllowlist,
        options: FetchOptions,
    ) -> Result<Self, anyhow::Error> {
        if options.pinned_fallback {
            pinned::check_all(&offered_scopes).map_err(anyhow::Error::msg)?;
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .user_agent(concat!(
                "authgate/",
                env!("CARGO_PKG_VERSION"),
                " (client metadata fetcher)"
            ))
            .dns_resolver(Arc::new(GuardedResolver {
                test_hosts: options.test_hosts,
            }));
        if let Some(pem) = options.extra_ca_pem {
            builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem)?);
        }
        Ok(Self {
            http: builder.build()?,
            cache: Cache::new(MAX_CACHE_ENTRIES),
            key_sets: Cache::new(MAX_CACHE_ENTRIES),
            issuer_key_uris: Cache::new(MAX_CACHE_ENTRIES),
            offered_scopes,
            allowlist,
            pinned_fallback: options.pinned_fallback,
        })
    }

    /// Holds at most `capacity` documents (tests use small ones).
    #[must_use]
    pub fn with_cache_capacity(mut self, capacity: u64) -> Self {
        self.cache = Cache::new(capacity);
        self
    }

    /// Resolves a metadata-document `client_id` to validated metadata, from the cache when it is
    /// still fresh. Failures are never cached.
    pub async fn resolve(
        &self,
        client_id: &str,
        now: Timestamp,
    ) -> Result<ClientMetadata, OAuthError> {
        Ok(self.resolve_traced(client_id, now).await?.metadata)
    }

    /// [`Self::resolve`], saying where the document came from. A failed live fetch of a
    /// well-known document is answered by its pinned copy (when allowed), never a successful one.
    pub async fn resolve_traced(
        &self,
        client_id: &str,
        now: Timestamp,
    ) -> Result<Resolved, OAuthError> {
        if let Some(hit) = self.cache.get(client_id).await
            && hit.expires_at > now
        {
            return Ok(Resolved {
                metadata: hit.value,
                source: Source::Cache,
            });
        }
        let url = validate_metadata_document_url(client_id)?;
        check_ip_literal(&url).map_err(|why| document_error(&why))?;
        let (doc, max_age) = match self.fetch(url, MAX_DOCUMENT_BYTES).await {
            Ok(fetched) => fetched,
            Err(FetchFailure::Unavailable(why)) => return self.pinned(client_id, why),
            Err(FetchFailure::Unacceptable(why)) => return Err(document_error(&why)),
        };
        let metadata =
            parse_metadata_document(client_id, &doc, &self.offered_scopes, &self.allowlist)?;
        tracing::info!(client.id = %client_id, source = "live", "client metadata document fetched");
        if let Some(max_age) = max_age {
            self.cache
                .insert(
                    client_id.to_owned(),
                    Cached {
                        value: metadata.clone(),
                        fetched_at: now,
                        expires_at: now + max_age.min(MAX_CACHE_SECONDS),
                    },
                )
                .await;
        }
        Ok(Resolved {
            metadata,
            source: Source::Live,
        })
    }

    /// After a failed live fetch: the pinned copy of this exact `client_id`, if there is one and
    /// the setting allows it. It is not cached, so the next request tries the live one again.
    fn pinned(&self, client_id: &str, why: String) -> Result<Resolved, OAuthError> {
        let pinned = self
            .pinned_fallback
            .then(|| pinned::resolve(client_id, &self.offered_scopes, &self.allowlist))
            .flatten();
        let Some(pinned) = pinned else {
            return Err(document_error(&why));
        };
        let metadata = pinned?;
        tracing::warn!(
            client.id = %client_id,
            source = "pinned",
            reason = %why,
            "client metadata document could not be fetched; using the pinned copy"
        );
        Ok(Resolved {
            metadata,
            source: Source::Pinned(why),
        })
    }

    /// The public keys a client's assertions are verified with: its inline `jwks`, or the set
    /// behind its `jwks_uri`, fetched under the same guard as documents and cached likewise.
    pub async fn client_keys(
        &self,
        metadata: &ClientMetadata,
        now: Timestamp,
    ) -> Result<ClientKeys, OAuthError> {
        if let Some(keys) = &metadata.jwks {
            return Ok(ClientKeys {
                keys: keys.clone(),
                cached_since: None,
            });
        }
        let Some(uri) = metadata.jwks_uri.as_deref() else {
            return Err(OAuthError::new(
                ErrorCode::InvalidClient,
                "the client has no keys (jwks or jwks_uri)",
            ));
        };
        if let Some(hit) = self.key_sets.get(uri).await
            && hit.expires_at > now
        {
            return Ok(ClientKeys {
                keys: hit.value,
                cached_since: Some(hit.fetched_at),
            });
        }
        self.fetch_keys(uri, now).await
    }

    /// The client's key set fetched again, bypassing the cache (an assertion names a `kid` the
    /// cached set lacks); `None` when it was fetched too recently for that.
    pub async fn refetch_keys(
        &self,
        metadata: &ClientMetadata,
        cached_since: Timestamp,
        now: Timestamp,
    ) -> Result<Option<ClientKeys>, OAuthError> {
        match metadata.jwks_uri.as_deref() {
            Some(uri) if now - cached_since >= MIN_KEY_REFETCH_SECONDS => {
                self.fetch_keys(uri, now).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    async fn fetch_keys(&self, uri: &str, now: Timestamp) -> Result<ClientKeys, OAuthError> {
        self.fetch_key_set(uri, now, MAX_KEY_SET_BYTES)
            .await
            .map_err(|failure| match failure {
                KeySetFailure::Fetch(why) => keys_error(&why),
                KeySetFailure::Content(why) => OAuthError::new(
                    ErrorCode::InvalidClient,
                    format!("the client's jwks_uri: {why}"),
                ),
            })
    }

    /// The keys an enterprise issuer signs its ID-JAGs with: the set at its configured
    /// `jwks_uri`, or at the one its OpenID discovery document names. Cached like clients' key
    /// sets. `Err` says why, for the log and the client.
    pub async fn issuer_keys(
        &self,
        issuer: &str,
        jwks_uri: Option<&str>,
        now: Timestamp,
    ) -> Result<ClientKeys, String> {
        let uri = match jwks_uri {
            Some(u) => u.to_owned(),
            None => self.issuer_key_uri(issuer, now).await?,
        };
        if let Some(hit) = self.key_sets.get(&uri).await
            && hit.expires_at > now
        {
            return Ok(ClientKeys {
                keys: hit.value,
                cached_since: Some(hit.fetched_at),
            });
        }
        self.fetch_issuer_keys(&uri, now).await
    }

    /// The issuer's key set fetched again, bypassing the cache (an ID-JAG names a `kid` the
    /// cached set lacks); `None` when it was fetched too recently for that.
    pub async fn refetch_issuer_keys(
        &self,
        issuer: &str,
        jwks_uri: Option<&str>,
        cached_since: Timestamp,
        now: Timestamp,
    ) -> Result<Option<ClientKeys>, String> {
        if now - cached_since < MIN_KEY_REFETCH_SECONDS {
            return Ok(None);
        }
        let uri = match jwks_uri {
            Some(u) => u.to_owned(),
            None => self.issuer_key_uri(issuer, now).await?,
        };
        self.fetch_issuer_keys(&uri, now).await.map(Some)
    }

    async fn fetch_issuer_keys(&self, uri: &str, now: Timestamp) -> Result<ClientKeys, String> {
        self.fetch_key_set(uri, now, MAX_ISSUER_DOCUMENT_BYTES)
            .await
            .map_err(
                |(KeySetFailure::Fetch(why) | KeySetFailure::Content(why))| {
                    format!("the issuer's key set {why}")
                },
            )
    }

    /// The `jwks_uri` of an issuer's OpenID discovery document (OpenID Connect Discovery §4),
    /// whose `issuer` must be the configured one byte for byte: otherwise the document speaks for
    /// someone else.
    async fn issuer_key_uri(&self, issuer: &str, now: Timestamp) -> Result<String, String> {
        if let Some(hit) = self.issuer_key_uris.get(issuer).await
            && hit.expires_at > now
        {
            return Ok(hit.value);
        }
        let failed = |why: &str| format!("the issuer's discovery document {why}");
        let url = url::Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
        .map_err(|_| failed("has no valid URL"))?;
        check_ip_literal(&url).map_err(|why| failed(&why))?;
        let (doc, max_age) = self.fetch(url, MAX_ISSUER_DOCUMENT_BYTES).await.map_err(
            |(FetchFailure::Unavailable(why) | FetchFailure::Unacceptable(why))| failed(&why),
        )?;
        if doc.get("issuer").and_then(serde_json::Value::as_str) != Some(issuer) {
            return Err(failed("names another issuer"));
        }
        let uri = doc
            .get("jwks_uri")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| failed("has no jwks_uri"))?;
        validate_jwks_uri(uri).map_err(|e| failed(&format!("has a bad {}", e.description)))?;
        tracing::info!(issuer = %issuer, jwks_uri = %uri, "enterprise issuer discovery document fetched");
        if let Some(max_age) = max_age {
            self.issuer_key_uris
                .insert(
                    issuer.to_owned(),
                    Cached {
                        value: uri.to_owned(),
                        fetched_at: now,
                        expires_at: now + max_age.min(MAX_CACHE_SECONDS),
                    },
                )
                .await;
        }
        Ok(uri.to_owned())
    }

    /// Fetches and caches a JWK Set (by its `Cache-Control`), keeping only usable public keys.
    async fn fetch_key_set(
        &self,
        uri: &str,
        now: Timestamp,
        max_bytes: usize,
    ) -> Result<ClientKeys, KeySetFailure> {
        let url = validate_jwks_uri(uri).map_err(|e| KeySetFailure::Fetch(e.description))?;
        check_ip_literal(&url).map_err(KeySetFailure::Fetch)?;
        let (doc, max_age) = self.fetch(url, max_bytes).await.map_err(
            |(FetchFailure::Unavailable(why) | FetchFailure::Unacceptable(why))| {
                KeySetFailure::Fetch(why)
            },
        )?;
        let keys = parse_key_set(&doc).map_err(KeySetFailure::Content)?;
        tracing::info!(jwks_uri = %uri, "key set fetched");
        if let Some(max_age) = max_age {
            self.key_sets
                .insert(
                    uri.to_owned(),
                    Cached {
                        value: keys.clone(),
                        fetched_at: now,
                        expires_at: now + max_age.min(MAX_CACHE_SECONDS),
                    },
                )
                .await;
        }
        Ok(ClientKeys {
            keys,
            cached_since: None,
        })
    }

    async fn fetch(
        &self,
        url: url::Url,
        max_bytes: usize,
    ) -> Result<(serde_json::Value, Option<i64>), FetchFailure> {
        use FetchFailure::{Unacceptable, Unavailable};
        let mut resp = self
            .http
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                Unavailable(
                    if e.is_timeout() {
                        "timed out"
                    } else if e.is_connect() {
                        "could not connect (or its host resolves to a special-use address)"
                    } else {
                        "request failed"
                    }
                    .to_owned(),
                )
            })?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(Unavailable(format!(
                "answered HTTP {} (only 200 is accepted; redirects are not followed)",
                resp.status().as_u16()
            )));
        }
        let too_large = || Unacceptable(format!("is larger than {} KB", max_bytes / 1024));
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > max_bytes) {
            return Err(too_large());
        }
        let max_age = cache_lifetime(
            resp.headers()
                .get_all(CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let mut body = Vec::with_capacity(declared.unwrap_or(1024).min(max_bytes));
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|_| Unavailable("body could not be read".to_owned()))?
        {
            if body.len() + chunk.len() > max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let doc =
            serde_json::from_slice(&body).map_err(|_| Unacceptable("is not JSON".to_owned()))?;
        Ok((doc, max_age))
    }
}

/// Why a key set could not be had: no usable answer, or an answer that is no usable key set.
enum KeySetFailure {
    Fetch(String),
    Content(String),
}

/// IP literals bypass the resolver, so they are checked here.
fn check_ip_literal(url: &url::Url) -> Result<(), String> {
    if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host() {
        let ip = url
            .host_str()
            .and_then(|h| h.trim_matches(['[', ']']).parse().ok());
        if ip.is_none_or(is_special_use_ip) {
            return Err("its host is a special-use address".to_owned());
        }
    }
    Ok(())
}

fn document_error(why: &str) -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidClient,
        format!("the client metadata document {why}"),
    )
}

fn keys_error(why: &str) -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidClient,
        format!("the client's key set (jwks_uri) {why}"),
    )
}

/// Freshness from `Cache-Control`: `max-age` (or `s-maxage`), unless `no-store`/`no-cache`.
/// Without an explicit lifetime the document is not cached.
pub fn cache_lifetime<'a>(values: impl Iterator<Item = &'a str>) -> Option<i64> {
    let mut max_age = None;
    for directive in values.flat_map(|v| v.split(',')) {
        let d = directive.trim().to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return None;
        }
        if let Some(v) = d
            .strip_prefix("max-age=")
            .or_else(|| d.strip_prefix("s-maxage="))
        {
            max_age = v.trim_matches('"').parse::<i64>().ok().filter(|n| *n > 0);
        }
    }
    max_age
}

/// Resolves names with the system resolver, then drops every special-use address, so a document
/// host cannot point the fetcher at loopback, the cloud metadata service or the private network.
/// The connection then uses only the addresses checked here (no second lookup to rebind).
struct GuardedResolver {
    test_hosts: Vec<(String, SocketAddr)>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let test = self
            .test_hosts
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, a)| *a);
        Box::pin(async move {
            if let Some(addr) = test {
                let addrs: Addrs = Box::new(std::iter::once(addr));
                return Ok(addrs);
            }
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_special_use_ip(a.ip()))
                .collect();
            if found.is_empty() {
                return Err("host resolves only to special-use addresses".into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_headers() {
        assert_eq!(cache_lifetime(["max-age=300"].into_iter()), Some(300));
        assert_eq!(cache_lifetime(["public, max-age=60"].into_iter()), Some(60));
        assert_eq!(cache_lifetime(["max-age=60, no-store"].into_iter()), None);
        assert_eq!(cache_lifetime(["no-cache"].into_iter()), None);
        assert_eq!(cache_lifetime(std::iter::empty()), None);
        assert_eq!(cache_lifetime(["max-age=0"].into_iter()), None);
    }
}
