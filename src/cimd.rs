//! Client ID Metadata Documents: a `client_id` that is an https URL names a JSON document that
//! describes the client. This module fetches it safely (no redirects, capped body, no private
//! addresses after DNS resolution) and caches it as its HTTP headers allow. The rules for the
//! document itself are in `oauth::client`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH};

use crate::clock::Timestamp;
use crate::oauth::client::{
    ClientMetadata, parse_metadata_document, validate_metadata_document_url,
};
use crate::oauth::redirect::RedirectAllowlist;
use crate::oauth::scope::ScopeSet;
use crate::oauth::url_rules::is_special_use_ip;
use crate::oauth::{ErrorCode, OAuthError};

/// The draft recommends a 5 KB cap; Claude's document is about 400 bytes.
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
const MAX_CACHE_SECONDS: i64 = 24 * 3600;
pub const MAX_CACHE_ENTRIES: u64 = 1024;

/// Each document carries its own deadline (from its `Cache-Control`), checked against the
/// injected clock; the cache itself only bounds the count, evicting the least useful entry.
#[derive(Clone)]
struct Cached {
    metadata: ClientMetadata,
    expires_at: Timestamp,
}

pub struct CimdResolver {
    http: reqwest::Client,
    cache: Cache<String, Cached>,
    offered_scopes: ScopeSet,
    allowlist: RedirectAllowlist,
}

/// Options for the fetcher. `test_hosts` maps host names to loopback addresses and is the only
/// way a loopback address is ever reached (for the project's own tests); `extra_ca_pem` adds a
/// trusted root for those test hosts.
#[derive(Default, Clone)]
pub struct FetchOptions {
    pub test_hosts: Vec<(String, SocketAddr)>,
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl CimdResolver {
    pub fn new(
        offered_scopes: ScopeSet,
        allowlist: RedirectAllowlist,
        options: FetchOptions,
    ) -> Result<Self, anyhow::Error> {
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
            offered_scopes,
            allowlist,
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
        if let Some(hit) = self.cache.get(client_id).await
            && hit.expires_at > now
        {
            return Ok(hit.metadata);
        }
        let url = validate_metadata_document_url(client_id)?;
        if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host() {
            // IP literals bypass the resolver, so check them here.
            let ip = url
                .host_str()
                .and_then(|h| h.trim_matches(['[', ']']).parse().ok());
            if ip.is_none_or(is_special_use_ip) {
                return Err(fetch_error("its host is a special-use address"));
            }
        }
        let (doc, max_age) = self.fetch(url).await?;
        let metadata =
            parse_metadata_document(client_id, &doc, &self.offered_scopes, &self.allowlist)?;
        if let Some(max_age) = max_age {
            self.cache
                .insert(
                    client_id.to_owned(),
                    Cached {
                        metadata: metadata.clone(),
                        expires_at: now + max_age.min(MAX_CACHE_SECONDS),
                    },
                )
                .await;
        }
        Ok(metadata)
    }

    async fn fetch(&self, url: url::Url) -> Result<(serde_json::Value, Option<i64>), OAuthError> {
        let mut resp = self
            .http
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    fetch_error("timed out")
                } else if e.is_connect() {
                    fetch_error("could not connect (or its host resolves to a special-use address)")
                } else {
                    fetch_error("request failed")
                }
            })?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(fetch_error(&format!(
                "answered HTTP {} (only 200 is accepted; redirects are not followed)",
                resp.status().as_u16()
            )));
        }
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_DOCUMENT_BYTES) {
            return Err(fetch_error("is larger than 5 KB"));
        }
        let max_age = cache_lifetime(
            resp.headers()
                .get_all(CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let mut body = Vec::with_capacity(declared.unwrap_or(1024).min(MAX_DOCUMENT_BYTES));
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|_| fetch_error("body could not be read"))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(fetch_error("is larger than 5 KB"));
            }
            body.extend_from_slice(&chunk);
        }
        let doc = serde_json::from_slice(&body).map_err(|_| fetch_error("is not JSON"))?;
        Ok((doc, max_age))
    }
}

fn fetch_error(why: &str) -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidClient,
        format!("the client metadata document {why}"),
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
