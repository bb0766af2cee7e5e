//! Enterprise-managed authorization (MCP extension `io.modelcontextprotocol/auth/ema`): a client
//! presents an ID-JAG that an enterprise identity provider signed for it, with the jwt-bearer
//! grant (RFC 7523), and gets an access token with no consent page. The provider is a small one on
//! the TLS test host, reached through the documented test setting as metadata documents are: it
//! publishes an OpenID discovery document and a JWK Set as Okta does, and answers the token
//! exchange (RFC 8693) that hands a client its ID-JAG, for the real Python SDK client. Every
//! refusal is checked to leave nothing behind: no grant, no used `jti`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use authgate::clock::{Clock, MockClock};
use authgate::config::RawConfig;
use authgate::domain::identity::{SubjectSpace, derive_subject, enterprise_subject};
use authgate::oauth::client::{MetadataSource, parse_client_metadata};
use authgate::oauth::redirect::RedirectAllowlist;
use authgate::oauth::scope::ScopeSet;
use authgate::oauth::secrets::{Secret, kind};
use authgate::store::ClientRecord;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::both_backends;
use crate::cimd::{CHATGPT_CIMD, DocHost, serve_tls, spawn_doc_host};
use crate::clients::{require_installed, run_client};
use crate::helpers::{Backend, TestApp, record_compat, spawn_app_with, stub_upstream};
use crate::private_key_jwt::{ClientKey, post_with_assertion};

pub const IDP: &str = "https://idp.example";
/// Trusted with an explicit `jwks_uri` (no discovery), and for public clients.
const OTHER_IDP: &str = "https://other-idp.example";
/// Its discovery document claims to be `IDP`'s.
const LIAR: &str = "https://liar.example";
/// Trusted, its users the upstream login's.
const LINKED_IDP: &str = "https://linked-idp.example";
const TYP: &str = "oauth-id-jag+jwt";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const CONFIDENTIAL: &str = "agc_ema_confidential";
const UNLISTED: &str = "agc_ema_unlisted";
const PUBLIC: &str = "agc_ema_public";
const SECRET: &str = "ema-client-s3cret";

type Shared<T> = Arc<Mutex<T>>;

/// The identity provider: the key it signs with (tests rotate it), the keys it publishes, how
/// often each document was fetched, and for its token exchange its own clients (id → secret and
/// the `client_id` it stamps for authgate) and the people signed in (SSO token → `sub`, email).
pub struct Idp {
    pub addr: SocketAddr,
    pub ca_pem: String,
    signer: Shared<Arc<ClientKey>>,
    jwks: Shared<Value>,
    pub jwks_hits: Arc<AtomicUsize>,
    pub discovery_hits: Arc<AtomicUsize>,
    clock: Shared<Option<MockClock>>,
    clients: Shared<HashMap<String, (String, String)>>,
    sessions: Shared<HashMap<String, (String, String)>>,
}

fn json_response(status: StatusCode, body: Value, cache: Option<&'static str>) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(c) = cache {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(c));
    }
    resp
}

pub async fn spawn_idp() -> Idp {
    let key = Arc::new(ClientKey::rsa("idp-1"));
    let jwks = Arc::new(Mutex::new(json!({ "keys": [key.jwk.clone()] })));
    let signer = Arc::new(Mutex::new(key));
    let jwks_hits = Arc::new(AtomicUsize::new(0));
    let discovery_hits = Arc::new(AtomicUsize::new(0));
    let clock: Shared<Option<MockClock>> = Arc::new(Mutex::new(None));
    let clients: Shared<HashMap<String, (String, String)>> = Arc::default();
    let sessions: Shared<HashMap<String, (String, String)>> = Arc::default();

    let discovery = {
        let hits = discovery_hits.clone();
        get(move |headers: HeaderMap| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let issuer = if host == "liar.example" {
                    IDP.to_owned()
                } else {
                    format!("https://{host}")
                };
                let doc = json!({
                    "issuer": issuer,
                    "jwks_uri": format!("https://{host}/keys"),
                    "token_endpoint": format!("https://{host}/oauth2/token"),
                    "grant_types_supported": ["urn:ietf:params:oauth:grant-type:token-exchange"],
                    "identity_chaining_requested_token_types_supported": ["urn:ietf:params:oauth:token-type:id-jag"],
                });
                json_response(StatusCode::OK, doc, Some("public, max-age=3600"))
            }
        })
    };
    let keys = {
        let (jwks, hits) = (jwks.clone(), jwks_hits.clone());
        get(move || {
            let (jwks, hits) = (jwks.clone(), hits.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let body = jwks.lock().unwrap().clone();
                json_response(StatusCode::OK, body, Some("public, max-age=3600"))
            }
        })
    };
    let exchange = {
        let (signer, clock, clients, sessions) = (
            signer.clone(),
            clock.clone(),
            clients.clone(),
            sessions.clone(),
        );
        post(move |Form(form): Form<HashMap<String, String>>| {
            let (signer, clock, clients, sessions) = (
                signer.clone(),
                clock.clone(),
                clients.clone(),
                sessions.clone(),
            );
            async move { token_exchange(&form, &signer, &clock, &clients, &sessions) }
        })
    };
    let app = Router::new()
        .route("/.well-known/openid-configuration", discovery)
        .route("/keys", keys)
        .route("/oauth2/token", exchange);
    let (addr, ca_pem) = serve_tls(
        app,
        &[
            "idp.example",
            "other-idp.example",
            "liar.example",
            "linked-idp.example",
        ],
    )
    .await;
    Idp {
        addr,
        ca_pem,
        signer,
        jwks,
        jwks_hits,
        discovery_hits,
        clock,
        clients,
        sessions,
    }
}

/// The IdP's side of SEP-990's first leg: the person's SSO token for an ID-JAG, if its client
/// authenticates and the person is signed in.
fn token_exchange(
    form: &HashMap<String, String>,
    signer: &Shared<Arc<ClientKey>>,
    clock: &Shared<Option<MockClock>>,
    clients: &Shared<HashMap<String, (String, String)>>,
    sessions: &Shared<HashMap<String, (String, String)>>,
) -> Response {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let refuse =
        |status: StatusCode, error: &str| json_response(status, json!({ "error": error }), None);
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" {
        return refuse(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    if field("requested_token_type") != "urn:ietf:params:oauth:token-type:id-jag"
        || field("subject_token_type") != "urn:ietf:params:oauth:token-type:id_token"
        || field("audience").is_empty()
    {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let stamped = match clients.lock().unwrap().get(field("client_id")) {
        Some((secret, stamped)) if secret == field("client_secret") => stamped.clone(),
        _ => return refuse(StatusCode::UNAUTHORIZED, "invalid_client"),
    };
    let Some((sub, email)) = sessions
        .lock()
        .unwrap()
        .get(field("subject_token"))
        .cloned()
    else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let now = clock.lock().unwrap().as_ref().map(Clock::now).unwrap_or(0);
    let mut claims = json!({
        "iss": IDP, "sub": sub, "email": email, "email_verified": true,
        "aud": field("audience"), "client_id": stamped,
        "iat": now, "exp": now + 300, "jti": uuid::Uuid::new_v4().to_string(),
    });
    if !field("resource").is_empty() {
        claims["resource"] = json!(field("resource"));
    }
    if !field("scope").is_empty() {
        claims["scope"] = json!(field("scope"));
    }
    let jag = signer.lock().unwrap().sign_typed(TYP, &claims);
    json_response(
        StatusCode::OK,
        json!({
            "issued_token_type": "urn:ietf:params:oauth:token-type:id-jag",
            "access_token": jag, "token_type": "N_A", "expires_in": 300,
        }),
        None,
    )
}

impl Idp {
    /// Serves `app`: its three clients registered (a confidential one named under the issuers,
    /// one not named, a public one named), and the IdP's clock set to the app's.
    pub async fn serve(&self, app: &TestApp) {
        for (id, method) in [
            (CONFIDENTIAL, "client_secret_post"),
            (UNLISTED, "client_secret_post"),
            (PUBLIC, "none"),
        ] {
            add_client(app, id, method, app.clock_now()).await;
        }
        *self.clock.lock().unwrap() = Some(app.clock.clone());
    }

    /// Signs with `key` from now on, publishing it beside the keys already published.
    fn rotate_to(&self, key: ClientKey) {
        self.jwks.lock().unwrap()["keys"]
            .as_array_mut()
            .unwrap()
            .push(key.jwk.clone());
        *self.signer.lock().unwrap() = Arc::new(key);
    }

    fn signer(&self) -> Arc<ClientKey> {
        self.signer.lock().unwrap().clone()
    }

    /// An ID-JAG from `IDP` for ann, for `client_id` at `app`, valid five minutes, a new `jti`
    /// each time; `change` sets claims (`null` removes one).
    pub fn id_jag(&self, app: &TestApp, client_id: &str, change: Value) -> String {
        self.signer()
            .sign_typed(TYP, &jag_claims(app, client_id, change))
    }
}

fn jag_claims(app: &TestApp, client_id: &str, change: Value) -> Value {
    let now = app.clock_now();
    let mut c = json!({
        "iss": IDP, "sub": "00u-ann", "email": "ann@example.com", "email_verified": true,
        "aud": app.base, "client_id": client_id, "resource": app.url("/mcp"), "scope": "mcp",
        "iat": now, "exp": now + 300, "jti": uuid::Uuid::new_v4().to_string(),
    });
    for (k, v) in change.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn enterprise_toml() -> String {
    format!(
        r#"
[[resource]]
path = "/github/mcp"
scopes = ["github"]

[[enterprise_issuer]]
issuer = "{IDP}"
client_ids = ["{CONFIDENTIAL}", "{PUBLIC}", "{CHATGPT_CIMD}"]
resources = ["/mcp"]

[[enterprise_issuer]]
issuer = "{OTHER_IDP}"
jwks_uri = "{OTHER_IDP}/keys"
client_ids = ["{CONFIDENTIAL}", "{PUBLIC}"]
allow_public_clients = true

[[enterprise_issuer]]
issuer = "{LIAR}"
client_ids = ["{CONFIDENTIAL}"]
"#
    )
}

fn ca_file(pem: &str) -> String {
    let path =
        std::env::temp_dir().join(format!("authgate-ca-{}.pem", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

/// The app trusting the test IdP (and the issuers above), with who may log in listed, and its
/// three clients registered: a confidential one named under the issuers, one not named, and a
/// public one named. `configure` may set more.
async fn ema_app_with(backend: Backend, configure: impl FnOnce(&mut RawConfig)) -> (TestApp, Idp) {
    ema_app_beside(backend, None, configure).await
}

/// [`ema_app_with`], with the metadata-document host `docs` reachable too.
async fn ema_app_beside(
    backend: Backend,
    docs: Option<&DocHost>,
    configure: impl FnOnce(&mut RawConfig),
) -> (TestApp, Idp) {
    let idp = spawn_idp().await;
    let trust = trusting(&idp, docs);
    let app = spawn_app_with(backend, move |raw| {
        trust(raw);
        configure(raw);
    })
    .await;
    idp.serve(&app).await;
    (app, idp)
}

/// The settings that make authgate trust `idp` (through the test-host setting, with `docs` too
/// when given) and list who may log in.
pub fn trusting(idp: &Idp, docs: Option<&DocHost>) -> impl FnOnce(&mut RawConfig) + use<> {
    let addr = idp.addr;
    let mut hosts = format!(
        "idp.example={addr},other-idp.example={addr},liar.example={addr},linked-idp.example={addr}"
    );
    let mut cas = idp.ca_pem.clone();
    if let Some(docs) = docs {
        hosts.push_str(&format!(",chatgpt.com={}", docs.addr));
        cas.push_str(&docs.ca_pem);
    }
    let ca = ca_file(&cas);
    move |raw| {
        raw.set("AUTHGATE_CIMD_TEST_HOSTS", hosts);
        raw.set("AUTHGATE_CIMD_TEST_CA_FILE", ca);
        raw.set("AUTHGATE_ALLOWED_DOMAINS", "example.com");
        raw.overlay_toml(&enterprise_toml(), "enterprise.toml")
            .unwrap();
    }
}

async fn ema_app(backend: Backend) -> (TestApp, Idp) {
    ema_app_with(backend, |_| {}).await
}

/// A client as `POST /register` would have stored it, under an id the test chooses.
async fn add_client(app: &TestApp, id: &str, method: &str, created_at: i64) {
    let metadata = parse_client_metadata(
        &json!({"redirect_uris": ["https://agent.example/cb"], "token_endpoint_auth_method": method, "client_name": id}),
        MetadataSource::Registration,
        &ScopeSet::parse("mcp"),
        &RedirectAllowlist::default(),
    )
    .unwrap();
    let secret_hash = (method != "none").then(|| Secret::<kind::ClientSecret>::new(SECRET).hash());
    app.store
        .insert_client(&ClientRecord {
            id: id.to_owned(),
            secret_hash,
            secret_expires_at: 0,
            metadata,
            created_at,
            last_used_at: None,
        })
        .await
        .unwrap();
}

/// `POST /token` with the jwt-bearer grant, the client authenticating with its secret in the
/// body (none for the public client).
pub async fn present(
    app: &TestApp,
    client_id: &str,
    assertion: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", GRANT),
        ("assertion", assertion),
        ("client_id", client_id),
    ];
    if client_id != PUBLIC {
        form.push(("client_secret", SECRET));
    }
    form.extend_from_slice(extra);
    app.http
        .post(app.url("/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

pub fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

async fn whoami(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .post(app.url("/mcp"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .bearer_auth(token)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#)
        .send()
        .await
        .unwrap()
}

async fn who(app: &TestApp, token: &str) -> Value {
    let resp = whoami(app, token).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    serde_json::from_str(body["result"]["content"][0]["text"].as_str().unwrap()).unwrap()
}

async fn grants_and_used_jtis(app: &TestApp) -> (i64, i64) {
    (
        app.count_rows("SELECT COUNT(*) FROM grant_families").await,
        app.count_rows("SELECT COUNT(*) FROM client_assertions")
            .await,
    )
}

async fn the_grant_is_advertised_only_with_an_issuer(backend: Backend) {
    let plain = spawn_app_with(backend, |_| {}).await;
    let meta: Value = plain
        .http
        .get(plain.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    assert!(meta.get("authorization_grant_profiles_supported").is_none());
    // Refused as a grant type nobody supports, before any client authentication.
    let resp = plain
        .http
        .post(plain.url("/token"))
        .form(&[("grant_type", GRANT), ("assertion", "a.b.c")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type", "{body}");

    let (app, _idp) = ema_app(backend).await;
    let meta: Value = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["grant_types_supported"],
        json!(["authorization_code", "refresh_token", GRANT])
    );
    assert_eq!(
        meta["authorization_grant_profiles_supported"],
        json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );
}

async fn an_id_jag_buys_an_access_token_for_the_mapped_user(backend: Backend) {
    let (app, idp) = ema_app(backend).await;
    let jag = idp.id_jag(&app, CONFIDENTIAL, json!({}));
    let resp = present(&app, CONFIDENTIAL, &jag, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "mcp");
    assert_eq!(body["expires_in"], 3600);
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token: {body}"
    );
    let at = body["access_token"].as_str().unwrap();
    let claims = payload(at);
    let sub = enterprise_subject(&SubjectSpace::Issuer, IDP, "00u-ann");
    assert_eq!(claims["sub"], sub.as_str());
    assert_ne!(
        claims["sub"],
        derive_subject(IDP, "00u-ann").as_str(),
        "not the upstream login's subject unless configured"
    );
    assert_eq!(claims["aud"], app.url("/mcp").as_str());
    assert_eq!(claims["client_id"], CONFIDENTIAL);
    assert_eq!(claims["email"], "ann@example.com");
    let me = who(&app, at).await;
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["sub"], sub.as_str());
    // One grant, its `jti` recorded, the client marked used.
    assert_eq!(grants_and_used_jtis(&app).await, (1, 1));
    let grants = app
        .store
        .list_grants(None, Some(CONFIDENTIAL))
        .await
        .unwrap();
    assert_eq!(grants[0].resource, app.url("/mcp"));
    assert_eq!(grants[0].expires_at, app.clock_now() + 3600);
    let client = app.store.get_client(CONFIDENTIAL).await.unwrap().unwrap();
    assert_eq!(client.last_used_at, Some(app.clock_now()));

    // The other spelling of the type, an EC key the IdP rotated to (fetched as its kid appears),
    // the resource and scope sent explicitly; the discovery document stays cached.
    idp.rotate_to(ClientKey::ec("idp-ec"));
    app.clock.advance(31);
    let jag = idp.id_jag(&app, CONFIDENTIAL, json!({"scope": "mcp github"}));
    let header = idp
        .signer()
        .sign_typed("application/oauth-id-jag+jwt", &payload(&jag));
    let resp = present(
        &app,
        CONFIDENTIAL,
        &header,
        &[("resource", &app.url("/mcp/")), ("scope", "mcp other")],
    )
    .await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["scope"], "mcp", "the intersection: {body}");
    assert_eq!(idp.discovery_hits.load(Ordering::SeqCst), 1);
    assert_eq!(idp.jwks_hits.load(Ordering::SeqCst), 2);

    // An explicit jwks_uri needs no discovery document; that issuer also admits public clients.
    let discoveries = idp.discovery_hits.load(Ordering::SeqCst);
    let other = |client: &str| {
        idp.signer()
            .sign_typed(TYP, &jag_claims(&app, client, json!({"iss": OTHER_IDP})))
    };
    let resp = present(&app, PUBLIC, &other(PUBLIC), &[]).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(idp.discovery_hits.load(Ordering::SeqCst), discoveries);

    // The operator revokes ann's grants: within the guard's cache time, her token stops working.
    let revoked = app
        .store
        .revoke_grants(Some("ann@example.com"), None, app.clock_now())
        .await
        .unwrap();
    assert_eq!(revoked, 3);
    app.clock.advance(11);
    assert_eq!(whoami(&app, at).await.status(), 401);
}

/// What each refused request sends and what it must get.
struct Refused {
    why: &'static str,
    client: &'static str,
    assertion: String,
    extra: Vec<(&'static str, String)>,
    status: u16,
    error: &'static str,
    /// In the description: refused for this reason, not another.
    says: &'static str,
}

async fn every_refusal_leaves_nothing_behind(backend: Backend) {
    let (app, idp) = ema_app(backend).await;
    let jag = |change: Value| idp.id_jag(&app, CONFIDENTIAL, change);
    let now = app.clock_now();
    let signed_by = |key: &ClientKey, typ: &str| {
        key.sign_typed(typ, &jag_claims(&app, CONFIDENTIAL, json!({})))
    };
    let mut hs = Header::new(Algorithm::HS256);
    hs.typ = Some(TYP.into());
    hs.kid = Some("idp-1".into());
    let modulus = idp.signer().jwk["n"].as_str().unwrap().to_owned();
    let hs256 = jsonwebtoken::encode(
        &hs,
        &jag_claims(&app, CONFIDENTIAL, json!({})),
        &EncodingKey::from_secret(modulus.as_bytes()),
    )
    .unwrap();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": TYP})),
        b64(&jag_claims(&app, CONFIDENTIAL, json!({})))
    );
    let case = |why, client, assertion: String, status, error, says| Refused {
        why,
        client,
        assertion,
        extra: Vec::new(),
        status,
        error,
        says,
    };
    let with_extra = |mut r: Refused, extra: &[(&'static str, &str)]| {
        r.extra = extra.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        r
    };
    let cases = vec![
        case(
            "typ JWT",
            CONFIDENTIAL,
            signed_by(&idp.signer(), "JWT"),
            400,
            "invalid_grant",
            "typ must be oauth-id-jag+jwt",
        ),
        case(
            "an access token's typ",
            CONFIDENTIAL,
            signed_by(&idp.signer(), "at+jwt"),
            400,
            "invalid_grant",
            "typ must be oauth-id-jag+jwt",
        ),
        case(
            "bad signature",
            CONFIDENTIAL,
            signed_by(&ClientKey::rsa("idp-1"), TYP),
            400,
            "invalid_grant",
            "signature does not verify",
        ),
        case(
            "unknown kid",
            CONFIDENTIAL,
            signed_by(&ClientKey::rsa("idp-9"), TYP),
            400,
            "invalid_grant",
            "no key of the issuer's JWK Set has the assertion's kid",
        ),
        case(
            "alg none",
            CONFIDENTIAL,
            none,
            400,
            "invalid_grant",
            "not a valid JWT",
        ),
        case(
            "HS256 with the public key",
            CONFIDENTIAL,
            hs256,
            400,
            "invalid_grant",
            "alg is not supported",
        ),
        case(
            "untrusted iss",
            CONFIDENTIAL,
            jag(json!({"iss": "https://evil.example"})),
            400,
            "invalid_grant",
            "issuer is not trusted",
        ),
        case(
            "discovery names another issuer",
            CONFIDENTIAL,
            idp.signer()
                .sign_typed(TYP, &jag_claims(&app, CONFIDENTIAL, json!({"iss": LIAR}))),
            400,
            "invalid_grant",
            "discovery document names another issuer",
        ),
        case(
            "aud the token endpoint",
            CONFIDENTIAL,
            jag(json!({"aud": app.url("/token")})),
            400,
            "invalid_grant",
            "aud must be this authorization server's issuer",
        ),
        case(
            "aud another server",
            CONFIDENTIAL,
            jag(json!({"aud": "https://mcp.other.example"})),
            400,
            "invalid_grant",
            "aud must be this authorization server's issuer",
        ),
        case(
            "client_id claim of another client",
            CONFIDENTIAL,
            idp.id_jag(&app, UNLISTED, json!({})),
            400,
            "invalid_grant",
            "client_id is not the authenticated client",
        ),
        case(
            "client not named for the issuer",
            UNLISTED,
            idp.id_jag(&app, UNLISTED, json!({})),
            400,
            "invalid_grant",
            "this client may not present this issuer's assertions",
        ),
        case(
            "public client, issuer for confidential ones",
            PUBLIC,
            idp.id_jag(&app, PUBLIC, json!({})),
            400,
            "unauthorized_client",
            "authenticated clients only",
        ),
        case(
            "resource not allowed for the issuer",
            CONFIDENTIAL,
            jag(json!({"resource": app.url("/github/mcp"), "scope": "github"})),
            400,
            "invalid_grant",
            "this issuer may not grant access",
        ),
        case(
            "resource not served",
            CONFIDENTIAL,
            jag(json!({"resource": "https://elsewhere.example/mcp"})),
            400,
            "invalid_grant",
            "assertion's resource is not served",
        ),
        with_extra(
            case(
                "requested resource not served",
                CONFIDENTIAL,
                jag(json!({})),
                400,
                "invalid_target",
                "requested resource is not served",
            ),
            &[("resource", "https://elsewhere.example/mcp")],
        ),
        with_extra(
            case(
                "requested resource not the assertion's",
                CONFIDENTIAL,
                jag(json!({})),
                400,
                "invalid_target",
                "not the assertion's resource",
            ),
            &[("resource", &app.url("/github/mcp"))],
        ),
        case(
            "no scope offered",
            CONFIDENTIAL,
            jag(json!({"scope": "admin"})),
            400,
            "invalid_grant",
            "none of the assertion's scopes",
        ),
        with_extra(
            case(
                "requested scope not allowed",
                CONFIDENTIAL,
                jag(json!({})),
                400,
                "invalid_scope",
                "none of the requested scopes",
            ),
            &[("scope", "github")],
        ),
        case(
            "expired",
            CONFIDENTIAL,
            jag(json!({"exp": now - 61, "iat": now - 400})),
            400,
            "invalid_grant",
            "has expired",
        ),
        case(
            "valid for days",
            CONFIDENTIAL,
            jag(json!({"exp": now + 86_400})),
            400,
            "invalid_grant",
            "valid for too long",
        ),
        case(
            "iat in the future",
            CONFIDENTIAL,
            jag(json!({"iat": now + 120})),
            400,
            "invalid_grant",
            "not valid yet",
        ),
        case(
            "no iat",
            CONFIDENTIAL,
            jag(json!({"iat": null})),
            400,
            "invalid_grant",
            "has no iat",
        ),
        case(
            "no jti",
            CONFIDENTIAL,
            jag(json!({"jti": null})),
            400,
            "invalid_grant",
            "no usable jti",
        ),
        case(
            "no sub",
            CONFIDENTIAL,
            jag(json!({"sub": null})),
            400,
            "invalid_grant",
            "has no sub",
        ),
        case(
            "user refused by the login policy",
            CONFIDENTIAL,
            jag(json!({"email": "eve@evil.example"})),
            400,
            "invalid_grant",
            "login policy",
        ),
        case(
            "email not verified",
            CONFIDENTIAL,
            jag(json!({"email_verified": false})),
            400,
            "invalid_grant",
            "login policy",
        ),
        case(
            "no email with a login allowlist",
            CONFIDENTIAL,
            jag(json!({"email": null})),
            400,
            "invalid_grant",
            "login policy",
        ),
        case(
            "not a JWT",
            CONFIDENTIAL,
            "not-a-jwt".to_owned(),
            400,
            "invalid_grant",
            "not a valid JWT",
        ),
    ];
    for r in &cases {
        let extra: Vec<(&str, &str)> = r.extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = present(&app, r.client, &r.assertion, &extra).await;
        assert_eq!(resp.status(), r.status, "{}", r.why);
        let text = resp.text().await.unwrap();
        assert!(
            !text.contains(&r.assertion),
            "{}: the assertion is never echoed",
            r.why
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"], r.error, "{}: {body}", r.why);
        assert!(
            body["error_description"].as_str().unwrap().contains(r.says),
            "{}: {body}",
            r.why
        );
        assert_eq!(
            grants_and_used_jtis(&app).await,
            (0, 0),
            "{}: nothing is left behind",
            r.why
        );
    }
    // A request without the assertion is malformed; a client with a wrong secret is not
    // authenticated, whatever it presents.
    let resp = app
        .http
        .post(app.url("/token"))
        .form(&[
            ("grant_type", GRANT),
            ("client_id", CONFIDENTIAL),
            ("client_secret", SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );
    let resp = app
        .http
        .post(app.url("/token"))
        .form(&[
            ("grant_type", GRANT),
            ("assertion", &jag(json!({}))),
            ("client_id", CONFIDENTIAL),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(grants_and_used_jtis(&app).await, (0, 0));
    // A refused assertion used up nothing: the valid one with the same jti still works.
    let jti = "kept-jti";
    let expired = jag(json!({"jti": jti, "exp": now - 61, "iat": now - 400}));
    assert_eq!(
        present(&app, CONFIDENTIAL, &expired, &[]).await.status(),
        400
    );
    let valid = jag(json!({"jti": jti}));
    assert_eq!(present(&app, CONFIDENTIAL, &valid, &[]).await.status(), 200);
}

async fn a_replayed_id_jag_is_refused_on_every_instance(backend: Backend) {
    let (app, idp) = ema_app(backend).await;
    let second = app.another_instance(|_| {}).await;
    let jag = idp.id_jag(&app, CONFIDENTIAL, json!({}));
    assert_eq!(present(&app, CONFIDENTIAL, &jag, &[]).await.status(), 200);
    for instance in [&app, &second] {
        let resp = present(instance, CONFIDENTIAL, &jag, &[]).await;
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("already used"),
            "{body}"
        );
    }
    // Racing copies of one fresh assertion across both instances: exactly one token.
    let racing = idp.id_jag(&app, CONFIDENTIAL, json!({}));
    let (app, second) = (Arc::new(app), Arc::new(second));
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let instance = if i % 2 == 0 {
                app.clone()
            } else {
                second.clone()
            };
            let racing = racing.clone();
            tokio::spawn(async move {
                present(&instance, CONFIDENTIAL, &racing, &[])
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );
    assert_eq!(grants_and_used_jtis(&app).await, (2, 2));
}

async fn a_new_issuer_key_is_fetched_once_when_its_kid_appears(backend: Backend) {
    let (app, idp) = ema_app(backend).await;
    let first = idp.id_jag(&app, CONFIDENTIAL, json!({}));
    assert_eq!(present(&app, CONFIDENTIAL, &first, &[]).await.status(), 200);
    assert_eq!(idp.jwks_hits.load(Ordering::SeqCst), 1);
    // The IdP rotates. Right after a fetch, an unknown kid does not fetch again.
    idp.rotate_to(ClientKey::rsa("idp-2"));
    let rotated = idp.id_jag(&app, CONFIDENTIAL, json!({}));
    let resp = present(&app, CONFIDENTIAL, &rotated, &[]).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(idp.jwks_hits.load(Ordering::SeqCst), 1);
    // Thirty seconds on, it does, once, and the new key is used.
    app.clock.advance(31);
    let rotated = idp.id_jag(&app, CONFIDENTIAL, json!({}));
    let resp = present(&app, CONFIDENTIAL, &rotated, &[]).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(idp.jwks_hits.load(Ordering::SeqCst), 2);
    let bogus = ClientKey::rsa("idp-3").sign_typed(TYP, &jag_claims(&app, CONFIDENTIAL, json!({})));
    assert_eq!(present(&app, CONFIDENTIAL, &bogus, &[]).await.status(), 400);
    assert_eq!(idp.jwks_hits.load(Ordering::SeqCst), 2, "no fetch loop");
}

async fn linked_subjects_are_the_upstream_logins(backend: Backend) {
    let (app, idp) = ema_app_with(backend, |raw| {
        stub_upstream(raw);
        raw.overlay_toml(
            &format!("[[enterprise_issuer]]\nissuer = \"{LINKED_IDP}\"\nclient_ids = [\"{CONFIDENTIAL}\"]\nsame_users_as_upstream = true\n"),
            "linked.toml",
        )
        .unwrap();
    })
    .await;
    let jag = idp.signer().sign_typed(
        TYP,
        &jag_claims(&app, CONFIDENTIAL, json!({"iss": LINKED_IDP})),
    );
    let body: Value = present(&app, CONFIDENTIAL, &jag, &[])
        .await
        .json()
        .await
        .unwrap();
    let claims = payload(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["sub"],
        derive_subject("https://login.example.invalid/", "00u-ann").as_str(),
        "the subject ann gets through the upstream login"
    );
}

async fn named_clients_survive_the_idle_clean_up(backend: Backend) {
    let (app, _idp) = ema_app(backend).await;
    let long_ago = app.clock_now() - 3 * 86_400;
    // Registered days ago, never used; one of them named under an issuer by the operator.
    add_client(&app, "agc_ema_named_late", "client_secret_basic", long_ago).await;
    add_client(&app, "agc_ema_idle", "client_secret_basic", long_ago).await;
    let app = app
        .restart_with(|s| {
            s.enterprise_issuers[0]
                .client_ids
                .push("agc_ema_named_late".to_owned());
        })
        .await;
    authgate::startup::remove_idle_clients(&app.state)
        .await
        .unwrap();
    assert!(
        app.store
            .get_client("agc_ema_named_late")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        app.store
            .get_client("agc_ema_idle")
            .await
            .unwrap()
            .is_none()
    );
}

/// A metadata-document client (ChatGPT's, signing with `private_key_jwt`) presents an ID-JAG:
/// two JWTs in one request, one authenticating the client, one the grant, each used once.
async fn a_metadata_document_client_signs_its_request(backend: Backend) {
    let docs = spawn_doc_host().await;
    let client_key = ClientKey::rsa("chatgpt-1");
    docs.set_keys(&[&client_key.jwk]);
    let (app, idp) = ema_app_beside(backend, Some(&docs), |_| {}).await;
    let jag = idp.id_jag(&app, CHATGPT_CIMD, json!({}));
    let client_assertion = client_key.assertion(&app, CHATGPT_CIMD);
    let form = [("grant_type", GRANT), ("assertion", jag.as_str())];
    let resp = post_with_assertion(&app, "/token", &client_assertion, &form).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    // Both are recorded, apart: the client assertion once more is refused as a client
    // assertion (401), with a fresh one the ID-JAG once more as a grant (400).
    assert_eq!(grants_and_used_jtis(&app).await, (1, 2));
    let again = post_with_assertion(&app, "/token", &client_assertion, &form).await;
    assert_eq!(again.status(), 401);
    let fresh = client_key.assertion(&app, CHATGPT_CIMD);
    let again = post_with_assertion(&app, "/token", &fresh, &form).await;
    assert_eq!(again.status(), 400);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    // ChatGPT's document lists no jwt-bearer grant: naming it under the issuer is what counts.
    let id_jag_for_another = idp.id_jag(&app, CHATGPT_CIMD, json!({"client_id": CONFIDENTIAL}));
    let fresh = client_key.assertion(&app, CHATGPT_CIMD);
    let form = [
        ("grant_type", GRANT),
        ("assertion", id_jag_for_another.as_str()),
    ];
    let resp = post_with_assertion(&app, "/token", &fresh, &form).await;
    assert_eq!(resp.status(), 400, "the ID-JAG names another client");
}

async fn python_sdk_presents_an_id_jag(backend: Backend) {
    require_installed();
    let (app, idp) = ema_app_with(backend, |raw| {
        raw.set("AUTHGATE_ACCESS_TOKEN_TTL", "3s");
    })
    .await;
    // The operator registers the agent once, as a confidential client...
    let reg: Value = app
        .register(json!({"client_name": "Enterprise agent", "redirect_uris": ["https://agent.example/cb"], "token_endpoint_auth_method": "client_secret_basic"}))
        .await
        .json()
        .await
        .unwrap();
    let id = reg["client_id"].as_str().unwrap().to_owned();
    let secret = reg["client_secret"].as_str().unwrap().to_owned();
    // ...names it under the issuer and restarts authgate; the IdP's admin maps the agent's IdP
    // client to that client_id, and ann has signed in to the agent.
    let named = id.clone();
    let app = app
        .restart_with(move |s| s.enterprise_issuers[0].client_ids.push(named))
        .await;
    idp.clients
        .lock()
        .unwrap()
        .insert("enterprise-agent".into(), ("idp-s3cret".into(), id.clone()));
    idp.sessions.lock().unwrap().insert(
        "sso-id-token-ann".into(),
        ("00u-ann".into(), "ann@example.com".into()),
    );
    let ca = ca_file(&idp.ca_pem);
    let mcp = app.url("/mcp");
    let port = idp.addr.port();
    let r = run_client(
        ".venv/bin/python",
        "py_ema_client.py",
        &mcp,
        "whoami",
        "{}",
        &[
            ("AS_ISSUER", app.base.as_str()),
            ("CLIENT_ID", &id),
            ("CLIENT_SECRET", &secret),
            ("AUTH_METHOD", "client_secret_basic"),
            (
                "IDP_TOKEN_URL",
                &format!("https://127.0.0.1:{port}/oauth2/token"),
            ),
            ("IDP_CA_FILE", &ca),
            ("IDP_CLIENT_ID", "enterprise-agent"),
            ("IDP_CLIENT_SECRET", "idp-s3cret"),
            ("SUBJECT_TOKEN", "sso-id-token-ann"),
            ("EXPIRY_WAIT_S", "4"),
        ],
    )
    .await;
    assert!(
        r["tools"].as_array().unwrap().contains(&"whoami".into()),
        "{r}"
    );
    let me: Value = serde_json::from_str(r["call"].as_str().unwrap()).unwrap();
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["client_id"], id.as_str());
    assert_eq!(
        me["sub"],
        enterprise_subject(&SubjectSpace::Issuer, IDP, "00u-ann").as_str()
    );
    assert_eq!(
        r["audience"],
        app.base.as_str(),
        "the ID-JAG's aud is authgate's issuer"
    );
    assert_eq!(r["resource"], mcp.as_str());
    assert_eq!(r["renewed"], true, "{r}");
    let requests = r["tokenRequests"].as_array().unwrap();
    assert!(requests.len() >= 2, "{r}");
    for t in requests {
        assert_eq!(t["grant_type"], GRANT, "{r}");
        assert_eq!(t["client_auth"], "basic", "{r}");
    }
    record_compat("Python SDK", "EMA (ID-JAG), client_secret_basic", backend);
}

both_backends!(
    the_grant_is_advertised_only_with_an_issuer,
    an_id_jag_buys_an_access_token_for_the_mapped_user,
    every_refusal_leaves_nothing_behind,
    a_replayed_id_jag_is_refused_on_every_instance,
    a_new_issuer_key_is_fetched_once_when_its_kid_appears,
    linked_subjects_are_the_upstream_logins,
    named_clients_survive_the_idle_clean_up,
    a_metadata_document_client_signs_its_request,
    python_sdk_presents_an_id_jag,
);
