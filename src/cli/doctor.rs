//! `authgate doctor <public url>`: checks a deployment from outside, the way Claude.ai will see
//! it, one line per check with a fix for each failure.

use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, DATE, LOCATION, WWW_AUTHENTICATE};
use serde::Serialize;
use serde_json::{Value, json};
use time::PrimitiveDateTime;
use time::macros::format_description;
use url::Url;

use crate::clock::{Clock, Timestamp};
use crate::oauth::url_rules::is_loopback_host;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// Not applicable here (for example no upstream to check): neither passed nor failed.
    pub skipped: bool,
    pub detail: String,
    pub fix: &'static str,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok && !c.skipped).count()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let tag = if c.skipped {
                "skip"
            } else if c.ok {
                "ok  "
            } else {
                "FAIL"
            };
            out.push_str(&format!("{tag}  {}: {}", c.name, c.detail));
            if !c.ok && !c.skipped {
                out.push_str(&format!("\n      fix: {}", c.fix));
            }
            out.push('\n');
        }
        let passed = self.checks.iter().filter(|c| c.ok).count();
        out.push_str(&format!("{passed} passed, {} failed\n", self.failed()));
        out
    }

    fn add(&mut self, name: &'static str, ok: bool, detail: impl Into<String>, fix: &'static str) {
        self.checks.push(Check {
            name,
            ok,
            skipped: false,
            detail: detail.into(),
            fix,
        });
    }

    fn skip(&mut self, name: &'static str, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            ok: false,
            skipped: true,
            detail: detail.into(),
            fix: "",
        });
    }
}

const CLAUDE_DCR: &str = r#"{"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"authgate doctor (Claude.ai's registration body)"}"#;
const ORIGIN: &str = "https://claude.ai";

struct Probe {
    http: reqwest::Client,
}

impl Probe {
    async fn get(&self, url: &str) -> Result<reqwest::Response, String> {
        self.http.get(url).send().await.map_err(|e| describe(&e))
    }

    async fn json(&self, url: &str) -> Result<(u16, Value), String> {
        let resp = self.get(url).await?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn preflight(&self, url: &str, method: &str) -> Result<bool, String> {
        let resp = self
            .http
            .request(reqwest::Method::OPTIONS, url)
            .header("Origin", ORIGIN)
            .header("Access-Control-Request-Method", method)
            .header(
                "Access-Control-Request-Headers",
                "content-type, mcp-protocol-version",
            )
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(resp.status().is_success() && resp.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN))
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    }
}

/// A 43-character PKCE challenge (never redeemed: the doctor stops at the consent page).
fn challenge() -> String {
    URL_SAFE_NO_PAD.encode([7u8; 32])
}

/// `authgate doctor`: the report as text or JSON; the exit code says whether every check passed.
pub(super) async fn command(
    public_url: &str,
    upstream_issuer: Option<&str>,
    json: bool,
    clock: &dyn Clock,
) -> anyhow::Result<ExitCode> {
    let report = run(public_url, upstream_issuer, clock.now()).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.render());
    }
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn run(public_url: &str, upstream_issuer: Option<&str>, now: Timestamp) -> Report {
    let mut r = Report::default();
    let issuer = public_url.trim().trim_end_matches('/').to_owned();
    let url = match Url::parse(&format!("{issuer}/")) {
        Ok(u) if u.host().is_some() => u,
        _ => {
            r.add(
                "public URL",
                false,
                format!("{public_url:?} is not an absolute URL"),
                "pass the URL clients use, e.g. https://mcp.example.com",
            );
            return r;
        }
    };
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("authgate-doctor/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            r.add("http client", false, e.to_string(), "");
            return r;
        }
    };
    let p = Probe { http };
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/').to_owned();
    let mcp = format!("{issuer}/mcp");

    // 1. https
    let https = url.scheme() == "https";
    let loopback = is_loopback_host(&url);
    r.add(
        "https",
        https || loopback,
        if https { "the public URL uses https".to_owned() } else if loopback { "http on loopback (local testing only)".to_owned() } else { "the public URL uses http".to_owned() },
        "serve authgate over https (Claude.ai refuses plain http) and set AUTHGATE_PUBLIC_URL to the https URL",
    );

    // 2. protected-resource metadata, path-inserted and root
    let prm_inserted = format!("{origin}/.well-known/oauth-protected-resource{path}/mcp");
    let mut prm_doc = Value::Null;
    for (name, prm_url) in [
        ("resource metadata (path-inserted)", prm_inserted.clone()),
        (
            "resource metadata (root)",
            format!("{origin}/.well-known/oauth-protected-resource"),
        ),
    ] {
        match p.json(&prm_url).await {
            Ok((200, doc)) if doc["resource"] == json!(mcp) && doc["authorization_servers"].as_array().is_some_and(|a| !a.is_empty()) => {
                r.add(name, true, format!("{prm_url} names {mcp}"), "");
                prm_doc = doc;
            }
            Ok((200, doc)) => r.add(name, false, format!("{prm_url} says resource {} (expected {mcp})", doc["resource"]), "set AUTHGATE_PUBLIC_URL to exactly the URL clients use"),
            Ok((s, _)) => r.add(name, false, format!("{prm_url} answered {s}"), "route /.well-known/oauth-protected-resource* at the host root to authgate (see README, Deploy)"),
            Err(e) => r.add(name, false, format!("{prm_url}: {e}"), "make the public URL reachable"),
        }
    }

    // 3. the 401 challenge on /mcp, POST and GET
    for method in [reqwest::Method::POST, reqwest::Method::GET] {
        let name = if method == reqwest::Method::POST {
            "401 challenge on POST /mcp"
        } else {
            "401 challenge on GET /mcp"
        };
        match p
            .http
            .request(method, &mcp)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let ok = status == 401
                    && challenge.starts_with("Bearer")
                    && challenge.contains(&format!("resource_metadata=\"{prm_inserted}\""));
                r.add(name, ok, format!("{status} {challenge}"), "every request without a token must get 401 with WWW-Authenticate: Bearer resource_metadata=... (check that no proxy or WAF answers first)");
            }
            Err(e) => r.add(name, false, describe(&e), "make /mcp reachable"),
        }
    }

    // 4. authorization-server metadata at the root (path-inserted if the issuer has a path)
    let as_url = format!("{origin}/.well-known/oauth-authorization-server{path}");
    let meta = match p.json(&as_url).await {
        Ok((200, doc)) => {
            r.add("authorization server metadata", true, as_url.clone(), "");
            doc
        }
        Ok((s, _)) => {
            r.add(
                "authorization server metadata",
                false,
                format!("{as_url} answered {s}"),
                "route /.well-known/oauth-authorization-server* at the host root to authgate",
            );
            Value::Null
        }
        Err(e) => {
            r.add(
                "authorization server metadata",
                false,
                format!("{as_url}: {e}"),
                "make the public URL reachable",
            );
            Value::Null
        }
    };

    // 5. S256, none + CIMD
    let has = |key: &str, v: &str| meta[key].as_array().is_some_and(|a| a.contains(&json!(v)));
    r.add(
        "PKCE S256 advertised",
        has("code_challenge_methods_supported", "S256"),
        format!(
            "code_challenge_methods_supported = {}",
            meta["code_challenge_methods_supported"]
        ),
        "authgate always advertises S256: is another server answering the metadata?",
    );
    let cimd = meta["client_id_metadata_document_supported"] == json!(true)
        && has("token_endpoint_auth_methods_supported", "none");
    r.add("CIMD and \"none\" advertised", cimd, format!("client_id_metadata_document_supported = {}, token_endpoint_auth_methods_supported = {}", meta["client_id_metadata_document_supported"], meta["token_endpoint_auth_methods_supported"]), "leave AUTHGATE_CIMD on: Claude uses metadata documents only when both are advertised (otherwise it registers a new client on every connection)");

    // 6. CORS where browsers need it, never on /authorize
    let mut cors_ok = true;
    let mut missing = Vec::new();
    for target in [
        as_url.clone(),
        prm_inserted.clone(),
        format!("{issuer}/register"),
        format!("{issuer}/token"),
    ] {
        match p.preflight(&target, "POST").await {
            Ok(true) => {}
            _ => {
                cors_ok = false;
                missing.push(target);
            }
        }
    }
    r.add("CORS on the JSON endpoints", cors_ok, if cors_ok { "preflights answered with Access-Control-Allow-Origin".to_owned() } else { format!("no CORS on {}", missing.join(", ")) }, "leave AUTHGATE_CORS on, or make the reverse proxy answer preflights for /.well-known/*, /register, /token and /revoke");
    let authorize_cors = p
        .preflight(&format!("{issuer}/authorize"), "GET")
        .await
        .unwrap_or(false);
    r.add(
        "no CORS on /authorize",
        !authorize_cors,
        if authorize_cors {
            "/authorize allows cross-origin calls"
        } else {
            "/authorize sends no CORS headers"
        },
        "remove CORS from /authorize in the reverse proxy",
    );

    // 7. registration with Claude's body; the test client is deleted afterwards
    let register = format!("{issuer}/register");
    match p
        .http
        .post(&register)
        .header("Content-Type", "application/json")
        .body(CLAUDE_DCR)
        .send()
        .await
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let ok = status == 201
                && body["client_secret"].is_string()
                && body["client_secret_expires_at"].is_i64()
                && body["token_endpoint_auth_method"] == "client_secret_post";
            let deleted = delete_client(&p, &register, &body).await;
            r.add("registration accepts Claude's body", ok && deleted, format!("{status}; secret {}; test client {}", if body["client_secret"].is_string() { "issued" } else { "missing" }, if deleted { "deleted" } else { "NOT deleted" }), "POST /register must give 201 with client_secret and an integer client_secret_expires_at for client_secret_post");
        }
        Err(e) => r.add(
            "registration accepts Claude's body",
            false,
            describe(&e),
            "make /register reachable",
        ),
    }

    // 8. loopback redirect ports, and the issuer in authorization responses
    let mut response_iss = None;
    match p.http.post(&register).header("Content-Type", "application/json").body(r#"{"redirect_uris":["http://127.0.0.1/callback"],"token_endpoint_auth_method":"client_secret_basic","client_name":"authgate doctor (loopback)"}"#).send().await {
        Ok(resp) if resp.status().as_u16() == 201 => {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let id = body["client_id"].as_str().unwrap_or_default().to_owned();
            let mut authorize = Url::parse(&format!("{issuer}/authorize")).unwrap_or_else(|_| url.clone());
            authorize.query_pairs_mut().append_pair("response_type", "code").append_pair("client_id", &id).append_pair("redirect_uri", "http://127.0.0.1:54321/callback").append_pair("state", "doctor");
            let mut with_pkce = authorize.clone();
            with_pkce.query_pairs_mut().append_pair("code_challenge", &challenge()).append_pair("code_challenge_method", "S256");
            let status = p.get(with_pkce.as_str()).await.map(|r| r.status().as_u16()).unwrap_or(0);
            r.add("loopback port tolerance", status == 200, format!("registered http://127.0.0.1/callback, asked for port 54321: {status}"), "loopback redirect URIs must match on any port (Claude Code listens on an ephemeral port)");
            // Without PKCE the answer is an error redirect, which carries `iss`.
            if let Ok(resp) = p.get(authorize.as_str()).await {
                response_iss = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()).and_then(|l| Url::parse(l).ok()).and_then(|l| l.query_pairs().find(|(k, _)| k == "iss").map(|(_, v)| v.into_owned()));
            }
            delete_client(&p, &register, &body).await;
        }
        Ok(resp) => r.add("loopback port tolerance", false, format!("registering a loopback client answered {}", resp.status().as_u16()), "http loopback redirect URIs must be accepted at /register"),
        Err(e) => r.add("loopback port tolerance", false, describe(&e), "make /register reachable"),
    }

    // 9. one issuer, byte for byte, everywhere
    let prm_as = prm_doc["authorization_servers"][0]
        .as_str()
        .map(str::to_owned);
    let meta_issuer = meta["issuer"].as_str().map(str::to_owned);
    let all = [
        Some(issuer.clone()),
        prm_as.clone(),
        meta_issuer.clone(),
        response_iss.clone(),
    ];
    let same = all.iter().all(|v| v.as_deref() == Some(issuer.as_str()));
    r.add(
        "issuer identical everywhere",
        same,
        format!("URL {issuer}, resource metadata {prm_as:?}, AS metadata {meta_issuer:?}, authorization response iss {response_iss:?} (tokens carry the same iss)"),
        "set AUTHGATE_PUBLIC_URL to exactly the URL clients use (scheme, host, port, path, no trailing slash)",
    );

    // 10. clock skew
    match p.get(&as_url).await {
        Ok(resp) => {
            let server = resp
                .headers()
                .get(DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(parse_http_date);
            match server {
                Some(t) => {
                    let skew = (t - now).abs();
                    r.add(
                        "clock skew",
                        skew <= 60,
                        format!("server clock differs by {skew} s"),
                        "synchronise the server clock (NTP): tokens carry iat/exp",
                    );
                }
                None => r.add(
                    "clock skew",
                    false,
                    "no Date header",
                    "a proxy removed the Date header",
                ),
            }
        }
        Err(e) => r.add("clock skew", false, e, "make the public URL reachable"),
    }

    // 11. the upstream provider's discovery
    match upstream_issuer {
        None => r.skip(
            "upstream discovery",
            "AUTHGATE_UPSTREAM_ISSUER is not set here",
        ),
        Some(up) => {
            let disc = format!(
                "{}/.well-known/openid-configuration",
                up.trim_end_matches('/')
            );
            match p.json(&disc).await {
                Ok((200, doc)) if doc["issuer"] == json!(up) => r.add("upstream discovery", true, format!("{disc} (issuer matches)"), ""),
                Ok((200, doc)) => r.add("upstream discovery", false, format!("{disc} says issuer {} but AUTHGATE_UPSTREAM_ISSUER is {up:?}", doc["issuer"]), "copy the issuer exactly from the provider's discovery document (Auth0's ends with /)"),
                Ok((s, _)) => r.add("upstream discovery", false, format!("{disc} answered {s}"), "check AUTHGATE_UPSTREAM_ISSUER"),
                Err(e) => r.add("upstream discovery", false, format!("{disc}: {e}"), "authgate must reach the upstream provider"),
            }
        }
    }
    r
}

async fn delete_client(p: &Probe, register: &str, body: &Value) -> bool {
    let (Some(id), Some(secret)) = (body["client_id"].as_str(), body["client_secret"].as_str())
    else {
        return false;
    };
    p.http
        .delete(format!("{register}/{id}"))
        .basic_auth(id, Some(secret))
        .send()
        .await
        .is_ok_and(|r| r.status().as_u16() == 204)
}

/// RFC 9110 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to epoch seconds.
fn parse_http_date(s: &str) -> Option<Timestamp> {
    let imf_fixdate = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    PrimitiveDateTime::parse(s.trim(), &imf_fixdate)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Thu, 26 Nov 2026 03:45:20 GMT"),
            Some(1_795_664_720)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
    }
}
