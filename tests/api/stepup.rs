//! Step-up and incremental consent: a tool that needs more scope gets a 403 naming every scope
//! to ask for; asking again shows consent only for what is new and continues the same grant, so
//! the client's earlier refresh chain and the person's grant list stay one grant, and revoking it
//! ends both chains.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use authgate::store::{DynStore, Repo, Store, StoreError, Tx};
use serde_json::{Value, json};

use crate::both_backends;
use crate::browser::{Browser, form_inputs, location};
use crate::flow::{
    self, RegisteredClient, authorize_url, decide, dev_flow, new_pkce, param, redeem, refresh,
    register_public,
};
use crate::helpers::{Backend, TestApp, spawn_app_with, spawn_app_wrapped_with};

const CB: &str = "http://127.0.0.1:33418/";

fn call(tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":tool,"arguments":{}}})
        .to_string()
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

async fn mcp(app: &TestApp, token: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url("/mcp"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// The `scope` of a response's challenge.
fn challenge_scope(resp: &reqwest::Response) -> String {
    let c = resp.headers()["www-authenticate"].to_str().unwrap();
    c.split("scope=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// `/mcp` needs `mcp`; its `whoami` tool needs `admin` too, a made-up `export` tool `files`
/// (tool rules with scopes).
async fn app_with_tool_scopes(backend: Backend) -> TestApp {
    spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_SCOPES", "mcp");
        raw.overlay_toml("[[tool]]\nname = \"whoami\"\nscopes = [\"admin\"]\n[[tool]]\nname = \"export\"\nscopes = [\"files\"]\n", "tools.toml")
            .unwrap();
        raw.set("AUTHGATE_MCP_MAX_BODY", "16KiB");
    })
    .await
}

/// One browser's authorization with `scope`, through consent (and the development login when it
/// has no session): the token response.
async fn authorized(
    app: &TestApp,
    browser: &Browser,
    client: &RegisteredClient,
    scope: &str,
) -> Value {
    let pkce = new_pkce();
    let code = dev_flow(app, browser, client, &pkce, &[("scope", scope)]).await;
    let resp = redeem(app, client, &code, &pkce).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn insufficient_scope_names_every_scope_the_call_needs(backend: Backend) {
    let app = app_with_tool_scopes(backend).await;
    let bare = mcp(&app, None, LIST).await;
    assert_eq!(bare.status(), 401);
    assert_eq!(
        challenge_scope(&bare),
        "mcp",
        "a client starts with what every request needs"
    );
    let prm: Value = app
        .http
        .get(app.url("/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["scopes_supported"], json!(["admin", "files", "mcp"]));

    let client = register_public(&app, CB).await;
    let tokens = authorized(&app, &Browser::new(), &client, "mcp").await;
    assert_eq!(tokens["scope"], "mcp");
    let token = tokens["access_token"].as_str();
    assert_eq!(mcp(&app, token, LIST).await.status(), 200);
    let refused = mcp(&app, token, &call("whoami")).await;
    assert_eq!(refused.status(), 403);
    let c = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(c.contains("error=\"insufficient_scope\""), "{c}");
    assert!(c.contains("resource_metadata=\""), "{c}");
    assert_eq!(challenge_scope(&refused), "admin mcp", "{c}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(body["scope"], "admin mcp", "the body names them too");

    // The token's other scopes for this resource are kept in the challenge (a client that
    // replaces its scopes with the challenge's loses none).
    let tokens = authorized(&app, &Browser::new(), &client, "mcp files").await;
    let token = tokens["access_token"].as_str();
    let refused = mcp(&app, token, &call("whoami")).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(challenge_scope(&refused), "admin files mcp");
    assert_eq!(
        mcp(&app, token, &call("export")).await.status(),
        200,
        "it has files"
    );

    // A body that parsers could read differently is not forwarded at all.
    let smuggled = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"whoami","name":"echo"}}"#;
    let refused = mcp(&app, token, smuggled).await;
    assert_eq!(
        refused.status(),
        400,
        "a repeated name is not read as the harmless one"
    );

    // The body is read to find the tool, never beyond the limit (no length given: chunked).
    let chunks = (0..2).map(|_| Ok::<_, std::io::Error>(vec![b' '; 12 * 1024]));
    let large = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(token.unwrap())
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 413);

    let tokens = authorized(&app, &Browser::new(), &client, "mcp admin").await;
    let ok = mcp(&app, tokens["access_token"].as_str(), &call("whoami")).await;
    assert_eq!(ok.status(), 200);
    let text = ok.text().await.unwrap();
    assert!(
        text.contains("admin"),
        "the tool ran with the token's scopes: {text}"
    );
}

/// The consent page's lists: what it asks for, and what it shows as allowed before.
pub fn consent_lists(html: &str) -> (Vec<String>, Vec<String>) {
    let items = |class: &str| -> Vec<String> {
        let Some(start) = html.find(&format!("<ul class=\"scopes {class}\">")) else {
            return Vec::new();
        };
        let list = &html[start..start + html[start..].find("</ul>").unwrap()];
        list.split("<li>")
            .skip(1)
            .map(|i| i.split("</li>").next().unwrap().to_owned())
            .collect()
    };
    (items("new"), items("allowed"))
}

async fn step_up_asks_only_for_the_new_scope_and_continues_the_grant(backend: Backend) {
    let app = app_with_tool_scopes(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let first = authorized(&app, &browser, &client, "mcp").await;
    let first_refresh = first["refresh_token"].as_str().unwrap().to_owned();

    let pkce = new_pkce();
    let url = authorize_url(&app, &client.id, CB, &pkce, &[("scope", "admin mcp")]);
    let page = browser.get(&url).await;
    assert_eq!(page.status(), 200, "something new: the consent page");
    let html = page.text().await.unwrap();
    let (asked, allowed) = consent_lists(&html);
    assert_eq!(
        asked,
        ["use the “admin” permission"],
        "only what is new is asked"
    );
    assert_eq!(
        allowed,
        ["use this server&#39;s tools and data on your behalf"],
        "what was allowed before is shown as such"
    );
    let request = form_inputs(&html).remove("request").unwrap();
    let approved = decide(&browser, &app, &request, "approve").await;
    assert_eq!(approved.status(), 303, "signed in: no second login");
    let code = param(&location(&approved), "code").unwrap();
    let second: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["scope"], "admin mcp");

    let claims = |token: &Value| {
        app.state
            .keys
            .verify_signature(token["access_token"].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(claims(&first).sid, claims(&second).sid, "one grant");
    let grants = app.store.list_grants(None, Some(&client.id)).await.unwrap();
    assert_eq!(grants.len(), 1, "the person's list has one entry");
    assert_eq!(grants[0].scope.to_string(), "admin mcp");

    // The earlier chain refreshes to the widened scope.
    let refreshed = refresh(&app, &client, &first_refresh).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert_eq!(refreshed["scope"], "admin mcp");
    let ok = mcp(&app, refreshed["access_token"].as_str(), &call("whoami")).await;
    assert_eq!(ok.status(), 200);

    // `prompt=consent` asks again, with nothing new: everything shows as allowed before.
    let forced = browser
        .get(&authorize_url(
            &app,
            &client.id,
            CB,
            &new_pkce(),
            &[("scope", "admin mcp"), ("prompt", "consent")],
        ))
        .await;
    let html = forced.text().await.unwrap();
    let (asked, allowed) = consent_lists(&html);
    assert!(asked.is_empty());
    assert_eq!(allowed.len(), 2);
    assert!(html.contains("asks you to confirm it"), "{html}");

    // Now covered: asking again, even for less, answers at once and still continues the grant.
    let again = browser
        .get(&authorize_url(
            &app,
            &client.id,
            CB,
            &new_pkce(),
            &[("scope", "mcp")],
        ))
        .await;
    assert_eq!(again.status(), 302);
    assert_eq!(
        app.store
            .list_grants(None, Some(&client.id))
            .await
            .unwrap()
            .len(),
        1
    );

    // Revoking the grant through one chain ends both.
    let revoke = app
        .http
        .post(app.url("/revoke"))
        .form(&[
            ("token", second["refresh_token"].as_str().unwrap()),
            ("client_id", client.id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let old_chain = refresh(&app, &client, refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        old_chain.status(),
        400,
        "the first chain is revoked with the grant"
    );
    for token in [&first, &second, &refreshed] {
        app.clock.advance(11);
        let resp = mcp(&app, token["access_token"].as_str(), LIST).await;
        assert_eq!(resp.status(), 401, "every access token of the grant");
    }
    // A revoked grant is not continued: the next authorization starts a new one.
    let again = browser
        .get(&authorize_url(
            &app,
            &client.id,
            CB,
            &new_pkce(),
            &[("scope", "mcp")],
        ))
        .await;
    assert_eq!(
        again.status(),
        302,
        "the client revoked its tokens, not the approval"
    );
    let grants = app.store.list_grants(None, Some(&client.id)).await.unwrap();
    assert_eq!(grants.len(), 2);
    assert!(grants[0].revoked_at.is_none() && grants[0].scope.to_string() == "mcp");
    assert!(grants[1].revoked_at.is_some());
}

async fn without_a_session_the_page_asks_for_everything_and_the_grant_still_continues(
    backend: Backend,
) {
    let app = app_with_tool_scopes(backend).await;
    let client = register_public(&app, CB).await;
    let first = authorized(&app, &Browser::new(), &client, "mcp").await;
    // Another browser: authgate cannot know who this is before the login.
    let browser = Browser::new();
    let pkce = new_pkce();
    let url = authorize_url(&app, &client.id, CB, &pkce, &[("scope", "admin mcp")]);
    let html = browser.get(&url).await.text().await.unwrap();
    let (asked, allowed) = consent_lists(&html);
    assert_eq!(asked.len(), 2);
    assert!(allowed.is_empty());
    let request = form_inputs(&html).remove("request").unwrap();
    let done = flow::approve_and_dev_login(&browser, &app, &request, "ann@example.com").await;
    let code = param(&location(&done), "code").unwrap();
    let second: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let sid = |t: &Value| {
        app.state
            .keys
            .verify_signature(t["access_token"].as_str().unwrap())
            .unwrap()
            .sid
    };
    assert_eq!(sid(&first), sid(&second));
    // Another person (or another client) gets a grant of their own.
    let other = authorized(&app, &Browser::new(), &client, "mcp").await;
    assert_eq!(sid(&other), sid(&first), "same person again: same grant");
    let bob = {
        let b = Browser::new();
        let pkce = new_pkce();
        let url = authorize_url(&app, &client.id, CB, &pkce, &[("scope", "mcp")]);
        let request = flow::open_consent(&b, &url).await;
        let done = flow::approve_and_dev_login(&b, &app, &request, "bob@example.com").await;
        let code = param(&location(&done), "code").unwrap();
        redeem(&app, &client, &code, &pkce)
            .await
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_ne!(sid(&bob), sid(&first));
    assert_eq!(bob["scope"], "mcp");
}

async fn approvals_add_up_across_resources(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        raw.add_resource(authgate::config::RawResource {
            path: Some("/files/mcp".into()),
            scopes: vec!["files".into()],
            ..Default::default()
        });
    })
    .await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    authorized(&app, &browser, &client, "mcp").await;
    let pkce = new_pkce();
    let url = authorize_url(
        &app,
        &client.id,
        CB,
        &pkce,
        &[("resource", &app.url("/files/mcp"))],
    );
    let request = flow::open_consent(&browser, &url).await;
    let approved = decide(&browser, &app, &request, "approve").await;
    assert!(param(&location(&approved), "code").is_some());
    // Approving the second resource did not forget the first.
    let back = browser
        .get(&authorize_url(&app, &client.id, CB, &new_pkce(), &[]))
        .await;
    assert_eq!(back.status(), 302, "the /mcp approval still holds");
    let grants = app.store.list_grants(None, Some(&client.id)).await.unwrap();
    assert_eq!(grants.len(), 2, "one grant per resource");
}

/// Holds each look-up of a live grant until `expected` of them have happened (or a second has
/// passed): concurrent authorizations of one grant then all find it before any of them widens
/// it. SQLite runs them one after the other anyway (its write transactions are exclusive).
#[derive(Default)]
struct Rendezvous {
    expected: AtomicUsize,
    arrived: AtomicUsize,
}

impl Rendezvous {
    async fn meet(&self) {
        let expected = self.expected.load(Ordering::SeqCst);
        if expected == 0 {
            return;
        }
        self.arrived.fetch_add(1, Ordering::SeqCst);
        for _ in 0..100 {
            if self.arrived.load(Ordering::SeqCst) >= expected {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

struct Meeting {
    inner: DynStore,
    at: Arc<Rendezvous>,
}

struct MeetingTx {
    inner: Box<dyn Tx>,
    at: Arc<Rendezvous>,
}

macro_rules! meeting_repo {
    ($ty:ty; $( $mode:ident $name:ident ( $( $arg:ident : $argty:ty ),* ) -> $ret:ty ; )*) => {
        #[async_trait]
        impl Repo for $ty {
            $(
                async fn $name(&self, $( $arg: $argty ),*) -> Result<$ret, StoreError> {
                    let out = self.inner.$name($( $arg ),*).await;
                    if stringify!($name) == "find_live_grant" {
                        self.at.meet().await;
                    }
                    out
                }
            )*
        }
    };
}

authgate::repo_operations!(meeting_repo! { Meeting; });
authgate::repo_operations!(meeting_repo! { MeetingTx; });

#[async_trait]
impl Store for Meeting {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn pool_state(&self) -> (u32, u32) {
        self.inner.pool_state()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
        Ok(Box::new(MeetingTx {
            inner: self.inner.begin().await?,
            at: self.at.clone(),
        }))
    }
}

#[async_trait]
impl Tx for MeetingTx {
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.commit().await
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.rollback().await
    }
}

async fn concurrent_step_ups_keep_every_widening(backend: Backend) {
    let rendezvous = Arc::new(Rendezvous::default());
    let at = rendezvous.clone();
    let app = spawn_app_wrapped_with(
        backend,
        |inner| Arc::new(Meeting { inner, at }) as DynStore,
        |raw| {
            raw.set("AUTHGATE_SCOPES", "mcp");
            raw.overlay_toml("[[tool]]\nname = \"a\"\nscopes = [\"alpha\"]\n[[tool]]\nname = \"b\"\nscopes = [\"beta\"]\n[[tool]]\nname = \"c\"\nscopes = [\"gamma\"]\n", "tools.toml")
            .unwrap();
        },
    )
    .await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    authorized(&app, &browser, &client, "mcp").await;
    let mut requests = Vec::new();
    for scope in ["mcp alpha", "mcp beta", "mcp gamma"] {
        let url = authorize_url(&app, &client.id, CB, &new_pkce(), &[("scope", scope)]);
        requests.push(flow::open_consent(&browser, &url).await);
    }
    rendezvous.expected.store(requests.len(), Ordering::SeqCst);
    let answers = futures::future::join_all(
        requests
            .iter()
            .map(|r| decide(&browser, &app, r, "approve")),
    )
    .await;
    for a in &answers {
        assert_eq!(a.status(), 303);
    }
    let grants = app.store.list_grants(None, Some(&client.id)).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(
        grants[0].scope.to_string(),
        "alpha beta gamma mcp",
        "no widening lost"
    );
}

both_backends!(
    insufficient_scope_names_every_scope_the_call_needs,
    step_up_asks_only_for_the_new_scope_and_continues_the_grant,
    without_a_session_the_page_asks_for_everything_and_the_grant_still_continues,
    approvals_add_up_across_resources,
    concurrent_step_ups_keep_every_widening,
);
