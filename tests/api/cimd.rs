//! Client ID Metadata Documents fetched from a real TLS test host on loopback, reached only
//! through the documented test setting (`AUTHGATE_CIMD_TEST_HOSTS` + `AUTHGATE_CIMD_TEST_CA_FILE`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use authgate::cimd::{CimdResolver, FetchOptions, Source};
use authgate::oauth::ErrorCode;
use authgate::oauth::client::TokenAuthMethod;
use authgate::oauth::redirect::RedirectAllowlist;
use authgate::oauth::scope::ScopeSet;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::json;

pub const CLAUDE_CIMD: &str = "https://claude.ai/oauth/mcp-oauth-client-metadata";
pub const CLAUDE_CODE_CIMD: &str = "https://claude.ai/oauth/claude-code-client-metadata";
pub const CHATGPT_CIMD: &str = "https://chatgpt.com/oauth/client.json";
pub const CHATGPT_CALLBACK: &str = "https://chatgpt.com/connector_platform_oauth_redirect";
pub const CHATGPT_JWKS: &str = "https://chatgpt.com/oauth/jwks.json";
pub const CODEX_CIMD: &str = "https://chatgpt.com/oauth/codex/client.json";

/// ChatGPT's stable document, as published (public fixtures, Sep-Oct 2026).
pub fn chatgpt_document() -> serde_json::Value {
    json!({"client_id":CHATGPT_CIMD,"client_uri":"https://chatgpt.com/","redirect_uris":[CHATGPT_CALLBACK],"token_endpoint_auth_method":"private_key_jwt","token_endpoint_auth_methods_supported":["none","private_key_jwt"],"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"ChatGPT","logo_uri":"https://persistent.oaistatic.com/sonic/misc/openai-logo.png","token_endpoint_auth_signing_alg":"RS256","jwks_uri":CHATGPT_JWKS})
}

/// Codex's stable document: written from its documented fields (a public native client with
/// port-less loopback redirects), as authgate's pinned copy is.
pub fn codex_document() -> serde_json::Value {
    json!({"client_id":CODEX_CIMD,"client_name":"Codex","client_uri":"https://chatgpt.com/codex","application_type":"native","redirect_uris":["http://127.0.0.1/callback","http://localhost/callback"],"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"token_endpoint_auth_method":"none"})
}

pub struct DocHost {
    pub addr: SocketAddr,
    pub ca_pem: String,
    /// Fetches of `/cached` and `/uncached`.
    pub hits: Arc<AtomicUsize>,
    /// Fetches of `/short` (a shorter lifetime than `/cached`).
    pub short_hits: Arc<AtomicUsize>,
    /// The key set served at ChatGPT's `jwks_uri` (and `docs.example/jwks.json`); the tests
    /// that sign assertions put their public keys here.
    pub jwks: Arc<Mutex<serde_json::Value>>,
    /// Fetches of the key sets.
    pub jwks_hits: Arc<AtomicUsize>,
    /// When not 0, the well-known hosts' documents (Claude, Claude Code, ChatGPT, Codex) answer
    /// this status instead, as claude.ai's edge answers some datacenter addresses with 403.
    pub refuse_with: Arc<AtomicU16>,
}

impl DocHost {
    pub fn set_keys(&self, keys: &[&serde_json::Value]) {
        *self.jwks.lock().unwrap() = json!({ "keys": keys });
    }
}

fn json_doc(body: serde_json::Value, cache: Option<&'static str>) -> Response {
    let mut resp = axum::Json(body).into_response();
    if let Some(c) = cache {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(c));
    }
    resp
}

/// Serves `app` over TLS on a loopback port, with a certificate for `names` (and the loopback
/// names) from a CA of its own: the address, and the CA in PEM for
/// `AUTHGATE_CIMD_TEST_CA_FILE`.
pub async fn serve_tls(app: Router, names: &[&str]) -> (SocketAddr, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "authgate test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut all: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    all.extend(["localhost", "127.0.0.1", "::1"].map(str::to_owned));
    let leaf = rcgen::CertificateParams::new(all)
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert_der = leaf.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                        .await;
                }
            });
        }
    });
    (addr, ca_cert.pem())
}

/// An https server for `claude.ai` and `docs.example`, with its own CA, serving the real
/// documents and a set of broken ones.
pub async fn spawn_doc_host() -> DocHost {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let counted2 = hits.clone();
    let short_hits = Arc::new(AtomicUsize::new(0));
    let counted_short = short_hits.clone();
    let jwks = Arc::new(Mutex::new(json!({"keys": []})));
    let jwks_hits = Arc::new(AtomicUsize::new(0));
    let refuse_with = Arc::new(AtomicU16::new(0));
    // A well-known document, unless the host is told to refuse.
    let known = |refuse: Arc<AtomicU16>, body: serde_json::Value, cache: Option<&'static str>| {
        get(move || {
            let (refuse, body) = (refuse.clone(), body.clone());
            async move {
                match refuse.load(Ordering::SeqCst) {
                    0 => json_doc(body, cache),
                    status => (
                        StatusCode::from_u16(status).unwrap(),
                        axum::response::Html("<html>Access denied</html>"),
                    )
                        .into_response(),
                }
            }
        })
    };
    let key_set = {
        let (jwks, hits) = (jwks.clone(), jwks_hits.clone());
        get(move || {
            let (jwks, hits) = (jwks.clone(), hits.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let body = jwks.lock().unwrap().clone();
                json_doc(body, Some("public, max-age=3600"))
            }
        })
    };
    let app = Router::new()
        .route(
            "/oauth/mcp-oauth-client-metadata",
            known(refuse_with.clone(), json!({"client_id":CLAUDE_CIMD,"client_name":"Claude","client_uri":"https://claude.ai","redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"grant_types":["authorization_code","refresh_token","urn:ietf:params:oauth:grant-type:jwt-bearer"],"response_types":["code"],"token_endpoint_auth_method":"none"}), Some("public, max-age=3600")),
        )
        .route(
            "/oauth/claude-code-client-metadata",
            known(refuse_with.clone(), json!({"client_id":CLAUDE_CODE_CIMD,"client_name":"Claude Code","client_uri":"https://claude.ai","redirect_uris":["http://localhost/callback","http://127.0.0.1/callback"],"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"token_endpoint_auth_method":"none"}), None),
        )
        .route("/oauth/client.json", known(refuse_with.clone(), chatgpt_document(), Some("public, max-age=300")))
        .route("/oauth/codex/client.json", known(refuse_with.clone(), codex_document(), None))
        .route("/oauth/jwks.json", key_set.clone())
        .route("/jwks.json", key_set)
        .route(
            "/cached",
            get(move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                json_doc(json!({"client_id":"https://docs.example/cached","redirect_uris":["https://docs.example/cb"]}), Some("max-age=600"))
            }),
        )
        .route(
            "/short",
            get(move || async move {
                counted_short.fetch_add(1, Ordering::SeqCst);
                json_doc(json!({"client_id":"https://docs.example/short","redirect_uris":["https://docs.example/cb"]}), Some("max-age=60"))
            }),
        )
        .route(
            "/many/{n}",
            get(|axum::extract::Path(n): axum::extract::Path<u32>| async move {
                json_doc(json!({"client_id":format!("https://docs.example/many/{n}"),"redirect_uris":["https://docs.example/cb"]}), Some("max-age=600"))
            }),
        )
        .route(
            "/uncached",
            get(move || async move {
                counted2.fetch_add(1, Ordering::SeqCst);
                json_doc(json!({"client_id":"https://docs.example/uncached","redirect_uris":["https://docs.example/cb"]}), Some("no-store"))
            }),
        )
        .route(
            "/self",
            get(|headers: axum::http::HeaderMap| async move {
                // Whatever name it was reached by, this document is valid for that URL, so only
                // the address guard can stop it.
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
                json_doc(json!({"client_id":format!("https://{host}/self"),"redirect_uris":["https://docs.example/cb"]}), None)
            }),
        )
        .route("/forged", get(|| async { json_doc(json!({"client_id":"https://docs.example/other","redirect_uris":["https://docs.example/cb"]}), None) }))
        .route("/trailing", get(|| async { json_doc(json!({"client_id":"https://docs.example/trailing/","redirect_uris":["https://docs.example/cb"]}), None) }))
        .route("/big", get(|| async { json_doc(json!({"client_id":"https://docs.example/big","redirect_uris":["https://docs.example/cb"],"client_name":"x".repeat(6000)}), None) }))
        .route("/big-chunked", get(|| async {
            let body = format!(r#"{{"client_id":"https://docs.example/big-chunked","redirect_uris":["https://docs.example/cb"],"pad":"{}"}}"#, "x".repeat(6000));
            let stream = futures::stream::iter(body.into_bytes().chunks(1000).map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c))).collect::<Vec<_>>());
            axum::body::Body::from_stream(stream).into_response()
        }))
        .route("/redirect", get(|| async { (StatusCode::FOUND, [(header::LOCATION, CLAUDE_CIMD)]).into_response() }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND.into_response() }))
        .route("/html", get(|| async { axum::response::Html("<html>hello</html>").into_response() }))
        .route("/secret", get(|| async { json_doc(json!({"client_id":"https://docs.example/secret","redirect_uris":["https://docs.example/cb"],"client_secret":"abc"}), None) }))
        .route("/post", get(|| async { json_doc(json!({"client_id":"https://docs.example/post","redirect_uris":["https://docs.example/cb"],"token_endpoint_auth_method":"client_secret_post"}), None) }))
        .route("/badredirect", get(|| async { json_doc(json!({"client_id":"https://docs.example/badredirect","redirect_uris":["http://evil.example/cb"]}), None) }));

    let (addr, ca_pem) = serve_tls(
        app,
        &["claude.ai", "chatgpt.com", "vscode.dev", "docs.example"],
    )
    .await;
    DocHost {
        addr,
        ca_pem,
        hits,
        short_hits,
        jwks,
        jwks_hits,
        refuse_with,
    }
}

fn resolver(host: &DocHost) -> CimdResolver {
    CimdResolver::new(
        ScopeSet::parse("mcp"),
        RedirectAllowlist::default(),
        FetchOptions {
            test_hosts: vec![
                ("claude.ai".into(), host.addr),
                ("docs.example".into(), host.addr),
            ],
            extra_ca_pem: Some(host.ca_pem.clone().into_bytes()),
            pinned_fallback: false,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn claude_document_resolves() {
    let host = spawn_doc_host().await;
    let m = resolver(&host).resolve(CLAUDE_CIMD, 0).await.unwrap();
    assert_eq!(m.client_name.as_deref(), Some("Claude"));
    assert_eq!(m.token_endpoint_auth_method, TokenAuthMethod::None);
    assert_eq!(
        m.grant_types,
        ["authorization_code", "refresh_token"],
        "jwt-bearer ignored"
    );
    assert_eq!(m.redirect_uris, ["https://claude.ai/api/mcp/auth_callback"]);
}

#[tokio::test]
async fn claude_code_document_resolves() {
    let host = spawn_doc_host().await;
    let m = resolver(&host).resolve(CLAUDE_CODE_CIMD, 0).await.unwrap();
    assert_eq!(
        m.redirect_uris,
        ["http://localhost/callback", "http://127.0.0.1/callback"]
    );
    assert!(
        authgate::oauth::redirect::find_matching(
            &m.redirect_uris,
            "http://localhost:49152/callback"
        )
        .is_some()
    );
}

#[tokio::test]
async fn bad_documents_are_refused() {
    let host = spawn_doc_host().await;
    let r = resolver(&host);
    for path in [
        "forged",
        "trailing",
        "big",
        "big-chunked",
        "redirect",
        "missing",
        "html",
        "secret",
        "post",
        "badredirect",
    ] {
        let id = format!("https://docs.example/{path}");
        let err = r.resolve(&id, 0).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidClient, "{path}: {err}");
    }
}

#[tokio::test]
async fn documents_are_cached_per_headers_and_failures_never() {
    let host = spawn_doc_host().await;
    let r = resolver(&host);
    r.resolve("https://docs.example/cached", 0).await.unwrap();
    r.resolve("https://docs.example/cached", 599).await.unwrap();
    assert_eq!(
        host.hits.load(Ordering::SeqCst),
        1,
        "served from the cache while fresh"
    );
    r.resolve("https://docs.example/cached", 601).await.unwrap();
    assert_eq!(host.hits.load(Ordering::SeqCst), 2, "refetched once stale");
    host.hits.store(0, Ordering::SeqCst);
    r.resolve("https://docs.example/uncached", 0).await.unwrap();
    r.resolve("https://docs.example/uncached", 0).await.unwrap();
    assert_eq!(
        host.hits.load(Ordering::SeqCst),
        2,
        "no-store is not cached"
    );
    assert!(r.resolve("https://docs.example/missing", 0).await.is_err());
    assert!(r.resolve("https://docs.example/missing", 0).await.is_err());
}

#[tokio::test]
async fn each_document_expires_by_its_own_lifetime() {
    let host = spawn_doc_host().await;
    let r = resolver(&host);
    r.resolve("https://docs.example/cached", 0).await.unwrap();
    r.resolve("https://docs.example/short", 10).await.unwrap();
    r.resolve("https://docs.example/short", 69).await.unwrap();
    assert_eq!(
        host.short_hits.load(Ordering::SeqCst),
        1,
        "max-age=60 from its fetch"
    );
    r.resolve("https://docs.example/short", 70).await.unwrap();
    assert_eq!(
        host.short_hits.load(Ordering::SeqCst),
        2,
        "refetched after 60 s"
    );
    r.resolve("https://docs.example/cached", 599).await.unwrap();
    assert_eq!(
        host.hits.load(Ordering::SeqCst),
        1,
        "max-age=600 is still fresh"
    );
}

#[tokio::test]
async fn a_full_cache_keeps_the_documents_in_use() {
    const CAPACITY: u64 = 4;
    let host = spawn_doc_host().await;
    let r = resolver(&host).with_cache_capacity(CAPACITY);
    r.resolve("https://docs.example/cached", 0).await.unwrap();
    // Three times the capacity of one-off clients, while one client keeps coming back.
    for n in 0..3 * CAPACITY {
        r.resolve(&format!("https://docs.example/many/{n}"), 0)
            .await
            .unwrap();
        r.resolve("https://docs.example/cached", 0).await.unwrap();
    }
    assert_eq!(
        host.hits.load(Ordering::SeqCst),
        1,
        "the document in use was fetched once, not again after the cache filled"
    );
}

#[tokio::test]
async fn private_addresses_are_refused() {
    let host = spawn_doc_host().await;
    // The same server, reached without the test mapping: loopback by DNS or literal is refused.
    let plain = CimdResolver::new(
        ScopeSet::parse("mcp"),
        RedirectAllowlist::default(),
        FetchOptions {
            test_hosts: vec![],
            extra_ca_pem: Some(host.ca_pem.clone().into_bytes()),
            pinned_fallback: false,
        },
    )
    .unwrap();
    let port = host.addr.port();
    for id in [
        format!("https://localhost:{port}/self"),
        format!("https://127.0.0.1:{port}/self"),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://10.0.0.1/client.json".to_owned(),
    ] {
        let err = plain.resolve(&id, 0).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidClient, "{id}");
    }
}

#[tokio::test]
async fn the_test_mapping_reaches_the_self_document() {
    // Proves the /self route works, so `private_addresses_are_refused` fails only by the guard.
    let host = spawn_doc_host().await;
    assert!(
        resolver(&host)
            .resolve("https://docs.example/self", 0)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn malformed_client_id_urls_are_refused_before_any_fetch() {
    let host = spawn_doc_host().await;
    let r = resolver(&host);
    for id in [
        "https://docs.example",
        "https://docs.example/",
        "https://docs.example/cached#x",
        "https://user@docs.example/cached",
        "https://docs.example/a/../cached",
    ] {
        assert!(r.resolve(id, 0).await.is_err(), "{id}");
    }
    assert_eq!(host.hits.load(Ordering::SeqCst), 0);
}

/// A loopback port nothing listens on: fetches to it cannot connect.
pub fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A resolver whose well-known hosts go to `to` (the doc host, or a closed port).
fn resolver_to(host: &DocHost, to: SocketAddr, pinned_fallback: bool) -> CimdResolver {
    CimdResolver::new(
        ScopeSet::parse("mcp"),
        RedirectAllowlist::default(),
        FetchOptions {
            test_hosts: ["claude.ai", "chatgpt.com", "vscode.dev", "docs.example"]
                .into_iter()
                .map(|h| (h.to_owned(), to))
                .collect(),
            extra_ca_pem: Some(host.ca_pem.clone().into_bytes()),
            pinned_fallback,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn the_live_document_wins_whenever_it_answers() {
    let host = spawn_doc_host().await;
    let r = resolver_to(&host, host.addr, true);
    for id in [CLAUDE_CIMD, CLAUDE_CODE_CIMD, CHATGPT_CIMD, CODEX_CIMD] {
        let got = r.resolve_traced(id, 0).await.unwrap();
        assert_eq!(got.source, Source::Live, "{id}");
    }
    assert_eq!(
        r.resolve_traced(CLAUDE_CIMD, 1).await.unwrap().source,
        Source::Cache,
        "a live document is cached by its max-age"
    );
}

#[tokio::test]
async fn the_pinned_copy_stands_in_when_the_live_fetch_is_refused_or_fails() {
    let host = spawn_doc_host().await;
    host.refuse_with.store(403, Ordering::SeqCst);
    let r = resolver_to(&host, host.addr, true);
    let got = r.resolve_traced(CLAUDE_CIMD, 0).await.unwrap();
    assert!(
        matches!(&got.source, Source::Pinned(why) if why.contains("HTTP 403")),
        "{:?}",
        got.source
    );
    assert_eq!(got.metadata.client_name.as_deref(), Some("Claude"));
    assert_eq!(
        got.metadata.redirect_uris,
        ["https://claude.ai/api/mcp/auth_callback"]
    );
    let chatgpt = r.resolve_traced(CHATGPT_CIMD, 0).await.unwrap();
    assert!(matches!(chatgpt.source, Source::Pinned(_)));
    assert_eq!(
        chatgpt.metadata.token_endpoint_auth_method,
        TokenAuthMethod::PrivateKeyJwt
    );
    // The pinned copy is not cached: as soon as the host answers again, its document is used.
    host.refuse_with.store(0, Ordering::SeqCst);
    assert_eq!(
        r.resolve_traced(CLAUDE_CIMD, 1).await.unwrap().source,
        Source::Live
    );
    // No connection at all.
    let unreachable = resolver_to(&host, closed_port(), true);
    for id in [
        CLAUDE_CIMD,
        CLAUDE_CODE_CIMD,
        CHATGPT_CIMD,
        CODEX_CIMD,
        "https://vscode.dev/oauth/client-metadata.json",
    ] {
        let got = unreachable.resolve_traced(id, 0).await.unwrap();
        assert!(
            matches!(&got.source, Source::Pinned(why) if why.contains("could not connect")),
            "{id}: {:?}",
            got.source
        );
    }
}

#[tokio::test]
async fn without_the_fallback_a_failed_fetch_is_refused() {
    let host = spawn_doc_host().await;
    host.refuse_with.store(403, Ordering::SeqCst);
    let refused = resolver_to(&host, host.addr, false);
    let err = refused.resolve(CLAUDE_CIMD, 0).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidClient);
    assert!(err.description.contains("HTTP 403"), "{err}");
    let unreachable = resolver_to(&host, closed_port(), false);
    let err = unreachable.resolve(CLAUDE_CODE_CIMD, 0).await.unwrap_err();
    assert!(err.description.contains("could not connect"), "{err}");
}

#[tokio::test]
async fn a_failing_fetch_of_another_client_id_is_still_refused() {
    let host = spawn_doc_host().await;
    host.refuse_with.store(403, Ordering::SeqCst);
    let r = resolver_to(&host, host.addr, true);
    // Pinned documents are found by their exact id only.
    for id in [
        "https://docs.example/missing",
        "https://claude.ai/oauth/another-client",
        "https://chatgpt.com/oauth/3f2a9c/client.json",
        "https://claude.ai/oauth/mcp-oauth-client-metadata?v=2",
    ] {
        let err = r.resolve(id, 0).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidClient, "{id}");
    }
    let unreachable = resolver_to(&host, closed_port(), true);
    assert!(
        unreachable
            .resolve("https://docs.example/cached", 0)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_unacceptable_answer_is_not_replaced_by_the_pinned_copy() {
    // The host answered 200 with something that is no document: that is its answer, and a
    // pinned copy stands in only for documents that could not be fetched.
    let host = spawn_doc_host().await;
    host.refuse_with.store(200, Ordering::SeqCst);
    let r = resolver_to(&host, host.addr, true);
    let err = r.resolve(CLAUDE_CIMD, 0).await.unwrap_err();
    assert!(err.description.contains("not JSON"), "{err}");
}

pub mod through_the_app {
    use super::*;
    use crate::both_backends;
    use crate::browser::{Browser, location};
    use crate::flow::{self, RegisteredClient, new_pkce, param, redeem, refresh};
    use crate::helpers::{Backend, spawn_app_with};

    pub async fn app_with_doc_host(backend: Backend) -> (crate::helpers::TestApp, DocHost) {
        app_with_doc_host_and(backend, |_| {}).await
    }

    /// The app with its metadata-document hosts on the doc host; `configure` may set more.
    pub async fn app_with_doc_host_and(
        backend: Backend,
        configure: impl FnOnce(&mut authgate::config::RawConfig),
    ) -> (crate::helpers::TestApp, DocHost) {
        let host = spawn_doc_host().await;
        let ca =
            std::env::temp_dir().join(format!("authgate-ca-{}.pem", uuid::Uuid::new_v4().simple()));
        std::fs::write(&ca, &host.ca_pem).unwrap();
        let addr = host.addr;
        let app = spawn_app_with(backend, move |raw| {
            raw.set(
                "AUTHGATE_CIMD_TEST_HOSTS",
                format!(
                    "claude.ai={addr},chatgpt.com={addr},vscode.dev={addr},docs.example={addr}"
                ),
            );
            raw.set("AUTHGATE_CIMD_TEST_CA_FILE", ca.display().to_string());
            configure(raw);
        })
        .await;
        (app, host)
    }

    async fn claude_code_over_cimd_with_an_ephemeral_port(backend: Backend) {
        let (app, _host) = app_with_doc_host(backend).await;
        let client = RegisteredClient {
            id: CLAUDE_CODE_CIMD.to_owned(),
            secret: None,
            redirect_uri: "http://localhost:54321/callback".to_owned(),
        };
        let browser = Browser::new();
        let pkce = new_pkce();
        let url = flow::authorize_url(&app, &client.id, &client.redirect_uri, &pkce, &[]);
        let page = browser.get(&url).await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(
            html.contains("Claude Code") && html.contains("claude.ai"),
            "verified host on the consent page"
        );
        assert!(html.contains("localhost"), "loopback redirect host shown");
        let request = crate::browser::form_inputs(&html)
            .remove("request")
            .unwrap();
        let done = flow::approve_and_dev_login(&browser, &app, &request, "ann@example.com").await;
        let back = location(&done);
        assert!(
            back.starts_with("http://localhost:54321/callback?"),
            "{back}"
        );
        let code = param(&back, "code").unwrap();
        // Claude Code sometimes omits `resource`: the default resource applies.
        let tokens: serde_json::Value = redeem(&app, &client, &code, &pkce)
            .await
            .json()
            .await
            .unwrap();
        let claims = app
            .state
            .keys
            .verify(
                tokens["access_token"].as_str().unwrap(),
                &app.base,
                &app.url("/mcp"),
                app.clock_now(),
            )
            .unwrap();
        assert_eq!(claims.client_id, CLAUDE_CODE_CIMD);
        assert_eq!(
            refresh(&app, &client, tokens["refresh_token"].as_str().unwrap())
                .await
                .status(),
            200,
            "CIMD clients resolve at refresh too"
        );
    }

    async fn cimd_clients_are_public_and_redirects_must_match(backend: Backend) {
        let (app, _host) = app_with_doc_host(backend).await;
        let browser = Browser::new();
        let bad = browser
            .get(&flow::authorize_url(
                &app,
                CLAUDE_CIMD,
                "https://claude.ai/elsewhere",
                &new_pkce(),
                &[],
            ))
            .await;
        assert_eq!(bad.status(), 400);
        assert!(bad.headers().get("location").is_none());
        let forged = browser
            .get(&flow::authorize_url(
                &app,
                "https://docs.example/forged",
                "https://docs.example/cb",
                &new_pkce(),
                &[],
            ))
            .await;
        assert_eq!(forged.status(), 400);
        let with_secret = RegisteredClient {
            id: CLAUDE_CIMD.to_owned(),
            secret: Some("guess".to_owned()),
            redirect_uri: "https://claude.ai/api/mcp/auth_callback".to_owned(),
        };
        let resp = flow::token_request(
            &app,
            &with_secret,
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
        )
        .await;
        assert_eq!(resp.status(), 401);
        let claude = RegisteredClient {
            id: CLAUDE_CIMD.to_owned(),
            secret: None,
            redirect_uri: "https://claude.ai/api/mcp/auth_callback".to_owned(),
        };
        let grant = flow::full_grant(&app, &claude).await;
        assert!(grant["refresh_token"].is_string());
    }

    async fn claude_connects_with_the_pinned_document_when_claude_ai_refuses(backend: Backend) {
        let (app, host) = app_with_doc_host(backend).await;
        host.refuse_with.store(403, Ordering::SeqCst);
        let claude = RegisteredClient {
            id: CLAUDE_CIMD.to_owned(),
            secret: None,
            redirect_uri: "https://claude.ai/api/mcp/auth_callback".to_owned(),
        };
        // The consent page, the code and the refresh all resolve the client by the pinned copy.
        let grant = flow::full_grant(&app, &claude).await;
        let refreshed = refresh(&app, &claude, grant["refresh_token"].as_str().unwrap()).await;
        assert_eq!(refreshed.status(), 200);
    }

    async fn with_the_fallback_off_a_refused_document_is_refused(backend: Backend) {
        let (app, host) =
            app_with_doc_host_and(backend, |raw| raw.set("AUTHGATE_CIMD_FALLBACK", "false")).await;
        host.refuse_with.store(403, Ordering::SeqCst);
        let page = Browser::new()
            .get(&flow::authorize_url(
                &app,
                CLAUDE_CIMD,
                "https://claude.ai/api/mcp/auth_callback",
                &new_pkce(),
                &[],
            ))
            .await;
        assert_eq!(page.status(), 400);
        assert!(page.headers().get("location").is_none());
        assert!(page.text().await.unwrap().contains("HTTP 403"));
        let claude = RegisteredClient {
            id: CLAUDE_CIMD.to_owned(),
            secret: None,
            redirect_uri: "https://claude.ai/api/mcp/auth_callback".to_owned(),
        };
        let resp = refresh(&app, &claude, "x").await;
        assert_eq!(resp.status(), 401);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
    }

    both_backends!(
        claude_code_over_cimd_with_an_ephemeral_port,
        cimd_clients_are_public_and_redirects_must_match,
        claude_connects_with_the_pinned_document_when_claude_ai_refuses,
        with_the_fallback_off_a_refused_document_is_refused,
    );
}
