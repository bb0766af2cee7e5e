use super::values::parse_rate;
use super::*;
use crate::domain::identity::SubjectSpace;

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::from_raw(&RawConfig::from_env(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    ))
}

#[test]
fn defaults_are_a_loopback_dev_server() {
    let s = settings(&[]).unwrap();
    assert!(s.dev_mode);
    assert_eq!(s.issuer, "http://127.0.0.1:8080");
    assert_eq!(s.database_url(), "sqlite://authgate.db");
    assert_eq!(s.scopes.to_string(), "mcp");
}

#[test]
fn the_pinned_document_fallback_is_on_unless_turned_off() {
    assert!(settings(&[]).unwrap().cimd_fallback);
    assert!(
        !settings(&[("AUTHGATE_CIMD_FALLBACK", "false")])
            .unwrap()
            .cimd_fallback
    );
    let e = settings(&[("AUTHGATE_CIMD_FALLBACK", "sometimes")]).unwrap_err();
    assert!(e.0.contains("AUTHGATE_CIMD_FALLBACK"), "{e}");
}

const UPSTREAM: [(&str, &str); 4] = [
    ("AUTHGATE_UPSTREAM_ISSUER", "https://tenant.auth0.example/"),
    ("AUTHGATE_UPSTREAM_CLIENT_ID", "cid"),
    ("AUTHGATE_UPSTREAM_CLIENT_SECRET", "upstream-s3cret"),
    ("AUTHGATE_ALLOW_ANY_USER", "true"),
];

fn with_upstream(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = UPSTREAM.to_vec();
    v.extend_from_slice(extra);
    v
}

#[test]
fn issuer_is_normalized_once() {
    let s = settings(&with_upstream(&[(
        "AUTHGATE_PUBLIC_URL",
        "https://MCP.Example.com/",
    )]))
    .unwrap();
    assert_eq!(s.issuer, "https://mcp.example.com");
    assert_eq!(s.url("/token"), "https://mcp.example.com/token");
    assert_eq!(s.issuer_path(), "");
    let s = settings(&with_upstream(&[(
        "AUTHGATE_PUBLIC_URL",
        "https://example.com/auth/",
    )]))
    .unwrap();
    assert_eq!(s.issuer, "https://example.com/auth");
    assert_eq!(s.issuer_path(), "/auth");
}

#[test]
fn bad_settings_name_the_variable() {
    for (pairs, var) in [
        (
            vec![("AUTHGATE_PUBLIC_URL", "http://mcp.example.com")],
            "AUTHGATE_PUBLIC_URL",
        ),
        (
            vec![("AUTHGATE_PUBLIC_URL", "not a url")],
            "AUTHGATE_PUBLIC_URL",
        ),
        (
            vec![("AUTHGATE_PUBLIC_URL", "https://x.example/?a=b")],
            "AUTHGATE_PUBLIC_URL",
        ),
        (
            vec![("AUTHGATE_LISTEN", "0.0.0.0:80")],
            "AUTHGATE_PUBLIC_URL",
        ),
        (vec![("AUTHGATE_LISTEN", "localhost")], "AUTHGATE_LISTEN"),
        (
            vec![("AUTHGATE_REGISTER_RATE_LIMIT", "fast")],
            "AUTHGATE_REGISTER_RATE_LIMIT",
        ),
        (
            vec![("AUTHGATE_DCR_IDLE_TTL", "soon")],
            "AUTHGATE_DCR_IDLE_TTL",
        ),
        (
            vec![("AUTHGATE_SCOPES", "mcp offline_access")],
            "AUTHGATE_SCOPES",
        ),
        (vec![("AUTHGATE_SCOPES", "mcp openid")], "AUTHGATE_SCOPES"),
        (
            vec![("AUTHGATE_CIMD_TEST_HOSTS", "claude.ai=10.0.0.1:443")],
            "AUTHGATE_CIMD_TEST_HOSTS",
        ),
        (
            vec![("AUTHGATE_PUBLIC_URL", "https://mcp.example.com")],
            "AUTHGATE_UPSTREAM_ISSUER",
        ),
        (
            vec![("AUTHGATE_UPSTREAM_ISSUER", "http://idp.example.com/")],
            "AUTHGATE_UPSTREAM_ISSUER",
        ),
        (
            vec![("AUTHGATE_UPSTREAM_ISSUER", "https://idp.example.com/")],
            "AUTHGATE_UPSTREAM_CLIENT_ID",
        ),
        (
            with_upstream(&[("AUTHGATE_UPSTREAM_AUTH_METHOD", "private_key_jwt")]),
            "AUTHGATE_UPSTREAM_AUTH_METHOD",
        ),
        (
            with_upstream(&[("AUTHGATE_UPSTREAM_SCOPES", "email")]),
            "AUTHGATE_UPSTREAM_SCOPES",
        ),
        (
            with_upstream(&[(
                "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
                "redirect_uri=https://evil",
            )]),
            "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
        ),
        (
            with_upstream(&[("AUTHGATE_ACCESS_TOKEN_TTL", "forever")]),
            "AUTHGATE_ACCESS_TOKEN_TTL",
        ),
        (UPSTREAM[..3].to_vec(), "AUTHGATE_ALLOWED_EMAILS"),
        (
            vec![("AUTHGATE_KEY_ENCRYPTION_KEY", "c2hvcnQ=")],
            "AUTHGATE_KEY_ENCRYPTION_KEY",
        ),
        (
            vec![("AUTHGATE_KEY_PUBLICATION_DELAY", "-5")],
            "AUTHGATE_KEY_PUBLICATION_DELAY",
        ),
    ] {
        let e = settings(&pairs).unwrap_err();
        assert!(e.0.contains(var), "{e} should name {var}");
        assert_eq!(e.0.lines().count(), 1);
    }
}

#[test]
fn key_publication_delay_defaults_to_two_minutes_and_may_be_zero() {
    let delay = |v: Option<&str>| {
        let pairs: Vec<(&str, &str)> = v
            .map(|v| vec![("AUTHGATE_KEY_PUBLICATION_DELAY", v)])
            .unwrap_or_default();
        settings(&pairs).unwrap().key_publication_delay
    };
    assert_eq!(delay(None), 120);
    assert_eq!(delay(Some("0")), 0);
    assert_eq!(delay(Some("5m")), 300);
    assert_eq!(delay(Some("45")), 45);
}

#[test]
fn database_url_is_never_printed() {
    let e = settings(&[("DATABASE_URL", "mysql://u:hunter2@h/db")]).unwrap_err();
    assert!(e.0.contains("DATABASE_URL") && !e.0.contains("hunter2"));
    let s = settings(&with_upstream(&[(
        "DATABASE_URL",
        "postgres://u:hunter2@h/db",
    )]))
    .unwrap();
    assert!(!format!("{s:?}").contains("hunter2"));
    assert!(!format!("{s:?}").contains("upstream-s3cret"));
}

#[test]
fn toml_overlays_environment() {
    let mut raw = RawConfig::from_env([("AUTHGATE_LISTEN".to_owned(), "127.0.0.1:1".to_owned())]);
    raw.overlay_toml(
        "listen = \"127.0.0.1:2\"\nallowed_redirects = [\"https://a/*\", \"https://b/*\"]\n",
        "f.toml",
    )
    .unwrap();
    let s = Settings::from_raw(&raw).unwrap();
    assert_eq!(s.listen.port(), 2);
    assert!(s.allowed_redirects.allows("https://b/x"));
    assert!(!s.allowed_redirects.allows("https://c/x"));
    let e = raw.overlay_toml("lisen = 1", "f.toml").unwrap_err();
    assert!(e.0.contains("lisen"));
}

#[test]
fn upstream_settings() {
    let s = settings(&with_upstream(&[
        ("AUTHGATE_PUBLIC_URL", "https://mcp.example.com"),
        (
            "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
            "connection=google-oauth2&audience=https://api.example",
        ),
    ]))
    .unwrap();
    let up = s.upstream.unwrap();
    assert_eq!(up.callback_url, "https://mcp.example.com/oauth/callback");
    assert_eq!(up.scopes, ["openid", "email", "profile"]);
    assert_eq!(
        up.authorize_params[0],
        ("connection".to_owned(), "google-oauth2".to_owned())
    );
    assert!(!up.auth_method_basic);
    let dev = settings(&[]).unwrap();
    assert!(dev.upstream.is_none());
    assert!(
        dev.login_policy.anyone,
        "the development login admits anyone unless a list is set"
    );
    let listed = settings(&[("AUTHGATE_ALLOWED_DOMAINS", "@corp.example")]).unwrap();
    assert!(!listed.login_policy.anyone);
    assert_eq!(listed.login_policy.domains, ["corp.example"]);
}

#[test]
fn resources_from_env_and_file() {
    let s = settings(&[("AUTHGATE_MCP_UPSTREAM", "http://127.0.0.1:9000/mcp")]).unwrap();
    assert_eq!(s.resources.len(), 1);
    assert_eq!(s.resources[0].uri, "http://127.0.0.1:8080/mcp");
    assert_eq!(
        s.resources[0].upstream.as_ref().unwrap().as_str(),
        "http://127.0.0.1:9000/mcp"
    );
    let mut raw = RawConfig::default();
    raw.overlay_toml("[[resource]]\npath = \"/github/mcp\"\nupstream = \"http://127.0.0.1:9001/mcp\"\nscopes = [\"github\"]\n", "f.toml").unwrap();
    let s = Settings::from_raw(&raw).unwrap();
    assert_eq!(s.resources.len(), 2);
    assert_eq!(s.resources[1].uri, "http://127.0.0.1:8080/github/mcp");
    assert_eq!(
        s.scopes.to_string(),
        "github mcp",
        "every resource's scopes are offered"
    );
    for bad in [
        "[[resource]]\nupstream = \"http://x/mcp\"\n",
        "[[resource]]\npath = \"/token\"\n",
        "[[resource]]\npath = \"/userinfo\"\n",
        "[[resource]]\npath = \"/a\"\nscopes = [\"openid\"]\n",
        "[[resource]]\npath = \"/mcp\"\n",
        "[[resource]]\npath = \"nopath\"\n",
        "[[resource]]\npath = \"/a\"\nupstream = \"ftp://x\"\n",
        "[[resource]]\npath = \"/a\"\ncolour = \"red\"\n",
    ] {
        let mut raw = RawConfig::default();
        let e = raw
            .overlay_toml(bad, "f.toml")
            .and_then(|()| Settings::from_raw(&raw).map(|_| ()));
        assert!(e.unwrap_err().0.contains("resource"), "{bad}");
    }
    let e = settings(&[("AUTHGATE_ALLOWED_ORIGINS", "localhost:6274")]).unwrap_err();
    assert!(e.0.contains("AUTHGATE_ALLOWED_ORIGINS"));
    let s = settings(&[(
        "AUTHGATE_ALLOWED_ORIGINS",
        "http://localhost:6274, https://app.example.com/",
    )])
    .unwrap();
    assert_eq!(
        s.allowed_origins,
        ["http://localhost:6274", "https://app.example.com"]
    );
}

#[test]
fn rates_and_durations() {
    assert_eq!(
        parse_rate("X", "10/sec").unwrap(),
        RateLimit {
            burst: 10,
            per_seconds: 1
        }
    );
    assert_eq!(parse_duration("X", "15m").unwrap(), 900);
    assert_eq!(parse_duration("X", "3600").unwrap(), 3600);
    assert!(parse_duration("X", "0").is_err());
}

#[test]
fn mcp_session_ttl_defaults_to_a_day_idle() {
    assert_eq!(settings(&[]).unwrap().mcp_session_ttl, 86_400);
    let s = settings(&[("AUTHGATE_MCP_SESSION_TTL", "90")]).unwrap();
    assert_eq!(s.mcp_session_ttl, 90);
    let e = settings(&[("AUTHGATE_MCP_SESSION_TTL", "soon")])
        .err()
        .unwrap();
    assert!(e.0.contains("AUTHGATE_MCP_SESSION_TTL"), "{e}");
}

#[test]
fn every_setting_is_a_documented_variable() {
    let readme = include_str!("../../README.md");
    let keys = load::setting_keys();
    assert!(keys.contains(&"public_url") && keys.contains(&"key_publication_delay"));
    for key in keys {
        let var = load::variable_name(key);
        assert!(
            readme.contains(&format!("| `{var}` |")) || readme.contains(&format!("[[{key}]]")),
            "{var} is not in the README's settings table"
        );
    }
}

#[test]
fn a_name_that_is_no_setting_is_refused() {
    for name in [
        "AUTHGATE_LISTN",
        "LISTEN",
        "authgate_listen",
        "AUTHGATE_LOG",
    ] {
        let mut raw = RawConfig::default();
        raw.set(name, "127.0.0.1:1");
        let e = Settings::from_raw(&raw).unwrap_err();
        assert_eq!(
            e.0,
            format!("configuration error: {name}: is not an authgate setting")
        );
    }
}

#[test]
fn the_environment_is_read_for_settings_only() {
    let s = settings(&[
        ("AUTHGATE_LOG", "debug"),
        ("AUTHGATE_TEST_KEEP_DB", "1"),
        ("LISTEN", "0.0.0.0:1"),
        ("PATH", "/usr/bin"),
    ])
    .unwrap();
    assert_eq!(s.listen.port(), 8080);
    // A table cannot come from a variable.
    let e = settings(&[("AUTHGATE_RESOURCE", "/a")]).unwrap_err();
    assert!(
        e.0.starts_with("configuration error: AUTHGATE_RESOURCE: "),
        "{e}"
    );
    assert!(!e.0.contains("/a"), "{e}");
}

#[test]
fn file_values_may_be_numbers_booleans_and_lists() {
    let mut raw = RawConfig::from_env([
        ("AUTHGATE_SCOPES".to_owned(), "files".to_owned()),
        ("AUTHGATE_CORS".to_owned(), "false".to_owned()),
    ]);
    raw.overlay_toml(
        "key_publication_delay = 0\ncimd = false\nallowed_emails = [\"a@x.example\", \"b@x.example\"]\nscopes = \"\"\n",
        "f.toml",
    )
    .unwrap();
    let s = Settings::from_raw(&raw).unwrap();
    assert_eq!(s.key_publication_delay, 0);
    assert!(!s.cimd_enabled);
    assert!(!s.cors_enabled, "the environment still counts");
    assert_eq!(s.login_policy.emails, ["a@x.example", "b@x.example"]);
    assert_eq!(
        s.scopes.to_string(),
        "mcp",
        "a blank value in the file hides the variable"
    );
    raw.set("AUTHGATE_KEY_PUBLICATION_DELAY", "5m");
    assert_eq!(
        Settings::from_raw(&raw).unwrap().key_publication_delay,
        0,
        "the file wins, whatever the order"
    );
    raw.overlay_toml("listen = \"nowhere\"", "g.toml").unwrap();
    let e = Settings::from_raw(&raw).unwrap_err();
    assert!(e.0.contains("AUTHGATE_LISTEN"), "{e}");
}

#[test]
fn file_errors_are_one_line_name_the_key_and_never_show_the_value() {
    for (text, named) in [
        (
            "upstream_client_secret = 31337.5\n",
            "f.toml: upstream_client_secret: must be a string, number, boolean or list of strings",
        ),
        (
            "database_url = { password = \"hunter2\" }\n",
            "f.toml: database_url: must be",
        ),
        (
            "allowed_emails = [\"a@x\", 31337]\n",
            "f.toml: allowed_emails[1]: must be a string",
        ),
        (
            "upstream_client_secret = \"hunter2\n",
            "f.toml: not valid TOML",
        ),
        ("resource = \"hunter2\"\n", "f.toml: resource: must be"),
        (
            "[[resource]]\npath = 31337\n",
            "f.toml: resource[0].path: must be a string",
        ),
        (
            "[[resource]]\npath = \"/a\"\nscopes = \"hunter2\"\n",
            "f.toml: resource[0].scopes: must be",
        ),
        (
            "resource = [\"hunter2\"]\n",
            "f.toml: resource[0]: must be a [[resource]] table",
        ),
        (
            "[[resource]]\npath = \"/a\"\ncolour = \"red\"\n",
            "f.toml: resource[0].colour: unknown field `colour`",
        ),
        (
            "listen = \"127.0.0.1:1\"\nlisen = 1\n",
            "f.toml: unknown setting \"lisen\"",
        ),
    ] {
        let e = RawConfig::default()
            .overlay_toml(text, "f.toml")
            .unwrap_err();
        assert!(
            e.0.starts_with("configuration error: ") && e.0.contains(named),
            "{e}"
        );
        assert_eq!(e.0.lines().count(), 1, "{e}");
        assert!(!e.0.contains("hunter2") && !e.0.contains("31337"), "{e}");
    }
}

#[test]
fn files_add_up_like_one_document() {
    let mut raw = RawConfig::default();
    raw.overlay_toml(
        "listen = \"127.0.0.1:1\"\n[[resource]]\npath = \"/a\"\n",
        "f.toml",
    )
    .unwrap();
    raw.overlay_toml(
        "listen = \"127.0.0.1:2\"\n[[resource]]\npath = \"/b\"\n",
        "g.toml",
    )
    .unwrap();
    raw.add_resource(RawResource {
        path: Some("/c".into()),
        upstream: None,
        scopes: vec!["c".into()],
        ..RawResource::default()
    });
    let s = Settings::from_raw(&raw).unwrap();
    assert_eq!(s.listen.port(), 2);
    let paths: Vec<_> = s.resources.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/mcp", "/a", "/b", "/c"]);
}

/// 32 bytes (0, 1, ..., 31) in base64.
const KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

const KEEPS_TOKENS: [(&str, &str); 3] = [
    ("AUTHGATE_MCP_UPSTREAM", "http://127.0.0.1:9000/mcp"),
    ("AUTHGATE_MCP_UPSTREAM_TOKEN", "header"),
    ("AUTHGATE_KEY_ENCRYPTION_KEY", KEK),
];

fn without(
    pairs: &[(&'static str, &'static str)],
    name: &str,
) -> Vec<(&'static str, &'static str)> {
    pairs.iter().copied().filter(|(k, _)| *k != name).collect()
}

#[test]
fn upstream_tokens_need_an_mcp_server_a_provider_and_the_key() {
    let s = settings(&with_upstream(&KEEPS_TOKENS)).unwrap();
    assert!(s.resources[0].upstream_token);
    assert!(s.keeps_upstream_tokens());
    assert!(s.upstream_token_sealer.is_some());
    assert!(
        s.upstream_token_resource(&format!("{}/mcp", s.issuer))
            .is_some()
    );

    let off = settings(&with_upstream(&[])).unwrap();
    assert!(!off.keeps_upstream_tokens() && off.upstream_token_sealer.is_none());
    let none = settings(&with_upstream(&[("AUTHGATE_MCP_UPSTREAM_TOKEN", "none")])).unwrap();
    assert!(!none.keeps_upstream_tokens());

    let refused = |pairs: Vec<(&'static str, &'static str)>, var: &str| {
        let e = settings(&pairs)
            .err()
            .unwrap_or_else(|| panic!("{var}: accepted"));
        assert!(e.0.contains(var), "{var}: {e}");
        assert!(
            !e.0.contains(KEK) && !e.0.contains("upstream-s3cret"),
            "{e}"
        );
        assert_eq!(e.0.lines().count(), 1, "{e}");
    };
    refused(
        with_upstream(&without(&KEEPS_TOKENS, "AUTHGATE_KEY_ENCRYPTION_KEY")),
        "AUTHGATE_KEY_ENCRYPTION_KEY",
    );
    refused(KEEPS_TOKENS.to_vec(), "AUTHGATE_UPSTREAM_ISSUER");
    refused(
        with_upstream(&without(&KEEPS_TOKENS, "AUTHGATE_MCP_UPSTREAM")),
        "AUTHGATE_MCP_UPSTREAM_TOKEN",
    );
    let mut bad_value = with_upstream(&without(&KEEPS_TOKENS, "AUTHGATE_MCP_UPSTREAM_TOKEN"));
    bad_value.push(("AUTHGATE_MCP_UPSTREAM_TOKEN", "query"));
    refused(bad_value, "AUTHGATE_MCP_UPSTREAM_TOKEN");
    let mut short_key = with_upstream(&without(&KEEPS_TOKENS, "AUTHGATE_KEY_ENCRYPTION_KEY"));
    short_key.push(("AUTHGATE_KEY_ENCRYPTION_KEY", "AAECAwQFBgcICQoLDA0ODw=="));
    refused(short_key, "AUTHGATE_KEY_ENCRYPTION_KEY");
}

#[test]
fn a_resource_table_opts_in_by_itself() {
    let mut raw = RawConfig::from_env(
        with_upstream(&[("AUTHGATE_KEY_ENCRYPTION_KEY", KEK)])
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    raw.overlay_toml(
        "[[resource]]\npath = \"/github/mcp\"\nupstream = \"http://127.0.0.1:9001/mcp\"\nupstream_token = \"header\"\n[[resource]]\npath = \"/plain\"\n",
        "f.toml",
    )
    .unwrap();
    let s = Settings::from_raw(&raw).unwrap();
    let keeps: Vec<(&str, bool)> = s
        .resources
        .iter()
        .map(|r| (r.path.as_str(), r.upstream_token))
        .collect();
    assert_eq!(
        keeps,
        [("/mcp", false), ("/github/mcp", true), ("/plain", false)]
    );

    let mut builtin = RawConfig::from_env(
        with_upstream(&[("AUTHGATE_KEY_ENCRYPTION_KEY", KEK)])
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    builtin
        .overlay_toml(
            "[[resource]]\npath = \"/x\"\nupstream_token = \"header\"\n",
            "g.toml",
        )
        .unwrap();
    let e = Settings::from_raw(&builtin).err().unwrap();
    assert!(e.0.contains("[[resource]]") && e.0.contains("/x"), "{e}");
}

#[test]
fn token_exchange_clients_need_a_resource_that_keeps_tokens() {
    let mut pairs = with_upstream(&KEEPS_TOKENS);
    pairs.push(("AUTHGATE_TOKEN_EXCHANGE_CLIENTS", "agc_a, agc_b"));
    assert_eq!(
        settings(&pairs).unwrap().token_exchange_clients,
        ["agc_a", "agc_b"]
    );
    let e = settings(&with_upstream(&[(
        "AUTHGATE_TOKEN_EXCHANGE_CLIENTS",
        "agc_a",
    )]))
    .err()
    .unwrap();
    assert!(e.0.contains("AUTHGATE_TOKEN_EXCHANGE_CLIENTS"), "{e}");
    assert!(
        settings(&with_upstream(&[]))
            .unwrap()
            .token_exchange_clients
            .is_empty()
    );
}

#[test]
fn the_worked_enterprise_example_is_valid() {
    let mut raw = RawConfig::from_env([(
        "AUTHGATE_UPSTREAM_CLIENT_SECRET".to_owned(),
        "s3cret".to_owned(),
    )]);
    raw.overlay_toml(
        include_str!("../../deploy/enterprise-managed-authorization.toml"),
        "enterprise-managed-authorization.toml",
    )
    .unwrap();
    let s = Settings::from_raw(&raw).unwrap();
    let [okta] = s.enterprise_issuers.as_slice() else {
        panic!("one issuer: {:?}", s.enterprise_issuers)
    };
    assert_eq!(okta.issuer, "https://acme.okta.com");
    assert_eq!(
        okta.jwks_uri.as_deref(),
        Some("https://acme.okta.com/oauth2/v1/keys")
    );
    assert_eq!(okta.client_ids.len(), 2);
    assert_eq!(
        okta.resources,
        [
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/tickets/mcp"
        ]
    );
    assert_eq!(
        okta.subjects,
        SubjectSpace::Upstream {
            upstream_issuer: "https://acme.okta.com".into()
        }
    );
    assert!(!okta.allow_public_clients);
}

#[test]
fn enterprise_issuers_default_to_every_resource_and_their_own_users() {
    let mut raw = RawConfig::default();
    raw.overlay_toml(
        "[[resource]]\npath = \"/b\"\n[[enterprise_issuer]]\nissuer = \"https://idp.example/\"\nclient_ids = [\"agc_1\"]\nallow_public_clients = true\n",
        "f.toml",
    )
    .unwrap();
    let s = Settings::from_raw(&raw).unwrap();
    let e = &s.enterprise_issuers[0];
    assert_eq!(e.issuer, "https://idp.example/", "kept byte for byte");
    assert_eq!(e.jwks_uri, None, "from discovery");
    assert_eq!(
        e.resources,
        ["http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/b"]
    );
    assert_eq!(e.subjects, SubjectSpace::Issuer);
    assert!(e.allow_public_clients);
    assert!(settings(&[]).unwrap().enterprise_issuers.is_empty());
}

#[test]
fn enterprise_issuer_errors_name_the_table_and_key() {
    let table = |extra: &str| {
        format!(
            "[[enterprise_issuer]]\nissuer = \"https://idp.example\"\nclient_ids = [\"agc_1\"]\n{extra}"
        )
    };
    for (text, named) in [
        (
            "[[enterprise_issuer]]\nclient_ids = [\"agc_1\"]\n".to_owned(),
            "enterprise_issuer[0].issuer: is required",
        ),
        (
            "[[enterprise_issuer]]\nissuer = \"http://idp.example\"\nclient_ids = [\"a\"]\n"
                .to_owned(),
            "enterprise_issuer[0].issuer: must be an https URL",
        ),
        (
            "[[enterprise_issuer]]\nissuer = \"https://idp.example/?x=1\"\nclient_ids = [\"a\"]\n"
                .to_owned(),
            "enterprise_issuer[0].issuer: must be an https URL",
        ),
        (
            "[[enterprise_issuer]]\nissuer = \"https://idp.example\"\n".to_owned(),
            "enterprise_issuer[0].client_ids: must list",
        ),
        (
            table("jwks_uri = \"http://idp.example/keys\""),
            "enterprise_issuer[0].jwks_uri: must be an https URL",
        ),
        (
            table("resources = [\"/nowhere\"]"),
            "enterprise_issuer[0].resources: \"/nowhere\" is not a protected resource",
        ),
        (
            table("same_users_as_upstream = true"),
            "enterprise_issuer[0].same_users_as_upstream: needs an upstream provider",
        ),
        (
            format!("{}{}", table(""), table("")),
            "enterprise_issuer[1].issuer: is listed twice",
        ),
        (
            "[[enterprise_issuer]]\nissuer = \"http://127.0.0.1:8080\"\nclient_ids = [\"a\"]\n"
                .to_owned(),
            "enterprise_issuer[0].issuer: must be an https URL",
        ),
    ] {
        let mut raw = RawConfig::default();
        raw.overlay_toml(&text, "f.toml").unwrap();
        let e = Settings::from_raw(&raw).unwrap_err();
        assert!(e.0.contains(named), "{e} should contain {named}");
        assert_eq!(e.0.lines().count(), 1, "{e}");
    }
    // authgate never trusts itself as an enterprise issuer.
    let mut raw = RawConfig::from_env([(
        "AUTHGATE_PUBLIC_URL".to_owned(),
        "https://mcp.example.com".to_owned(),
    )]);
    crate::config::tests::with_stub_upstream(&mut raw);
    raw.overlay_toml(
        "[[enterprise_issuer]]\nissuer = \"https://mcp.example.com\"\nclient_ids = [\"a\"]\n",
        "f.toml",
    )
    .unwrap();
    let e = Settings::from_raw(&raw).unwrap_err();
    assert!(
        e.0.contains("enterprise_issuer[0].issuer: must not be authgate's own issuer"),
        "{e}"
    );
    // Field types and unknown fields are refused by the reader, naming the key.
    for (text, named) in [
        (
            "[[enterprise_issuer]]\nclient_ids = \"agc_1\"\n",
            "f.toml: enterprise_issuer[0].client_ids: must be",
        ),
        (
            "[[enterprise_issuer]]\nsame_users_as_upstream = \"yes\"\n",
            "f.toml: enterprise_issuer[0].same_users_as_upstream: must be",
        ),
        (
            "[[enterprise_issuer]]\naudience = \"x\"\n",
            "f.toml: enterprise_issuer[0].audience: unknown field",
        ),
        (
            "enterprise_issuer = \"https://idp.example\"\n",
            "f.toml: enterprise_issuer: must be",
        ),
    ] {
        let e = RawConfig::default()
            .overlay_toml(text, "f.toml")
            .unwrap_err();
        assert!(e.0.contains(named), "{e} should contain {named}");
    }
}

fn with_stub_upstream(raw: &mut RawConfig) {
    for (k, v) in UPSTREAM {
        raw.set(k, v);
    }
}

#[test]
fn bad_tool_rules_name_their_key() {
    for (toml, key) in [
        ("[[tool]]\nscopes = [\"a\"]\n", "tool[0].name"),
        ("[[tool]]\nname = \"a b\"\n", "tool[0].name"),
        ("[[tool]]\nname = \"\"\n", "tool[0].name"),
        (
            "[[tool]]\nname = \"x\"\nscopes = [\"a b\"]\n",
            "tool[0].scopes",
        ),
        (
            "[[tool]]\nname = \"x\"\nscopes = [\"\"]\n",
            "tool[0].scopes",
        ),
        (
            "[[tool]]\nname = \"x\"\nscopes = [\"offline_access\"]\n",
            "tool[0].scopes",
        ),
        (
            "[[tool]]\nname = \"x\"\nallow_users = [\"bob\"]\n",
            "tool[0].allow_users",
        ),
        (
            "[[tool]]\nname = \"x\"\nallow_users = [\"@example.com\"]\n",
            "tool[0].allow_users",
        ),
        (
            "[[tool]]\nname = \"x\"\nallow_domains = [\"a@b\"]\n",
            "tool[0].allow_domains",
        ),
        (
            "[[tool]]\nname = \"x\"\nallow_domains = [\"\"]\n",
            "tool[0].allow_domains",
        ),
        ("[[tool]]\nname = \"x\"\ncolour = 1\n", "tool[0].colour"),
        (
            "[[tool]]\nname = \"a\"\n[[tool]]\nname = 5\n",
            "tool[1].name",
        ),
        (
            "[[resource]]\npath = \"/a\"\n[[resource.tool]]\nname = \"x\"\nallow_users = [\"\"]\n",
            "resource[0].tool[0].allow_users",
        ),
        ("unlisted_tools = \"maybe\"\n", "AUTHGATE_UNLISTED_TOOLS"),
        (
            "audit_retention = \"forever\"\n",
            "AUTHGATE_AUDIT_RETENTION",
        ),
    ] {
        let mut raw = RawConfig::default();
        let e = raw
            .overlay_toml(toml, "f.toml")
            .and_then(|()| Settings::from_raw(&raw).map(|_| ()))
            .unwrap_err();
        assert!(e.0.contains(key) && !e.0.contains('\n'), "{toml}: {e}");
    }
}

#[test]
fn the_readme_tool_policy_example_is_valid() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme
        .find("### Tool policy and audit trail")
        .expect("the section")..];
    let start = section.find("```toml\n").expect("an example") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let mut raw = RawConfig::from_env(
        UPSTREAM
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    raw.overlay_toml(example, "README.md").unwrap();
    let s = Settings::from_raw(&raw).unwrap();
    assert_eq!(s.resources[0].tools.rules.len(), 3);
    assert_eq!(s.resources[1].tools.rules[0].name, "merge_*");
    assert_eq!(s.resources[0].offered.to_string(), "admin mcp");
}

#[test]
fn tool_rules_from_the_file() {
    use crate::policy::Unlisted;
    let mut raw = RawConfig::default();
    raw.overlay_toml(
        r#"
unlisted_tools = "deny"
[[tool]]
name = "delete_*"
scopes = ["admin"]
[[tool]]
name = "payroll"
allow_users = ["Ann@Example.com", "ag_boss"]
allow_domains = ["@hr.example"]
[[resource]]
path = "/github/mcp"
scopes = ["github"]
[[resource.tool]]
name = "merge_*"
scopes = ["github:write"]
"#,
        "f.toml",
    )
    .unwrap();
    let s = Settings::from_raw(&raw).unwrap();
    let (mcp, github) = (&s.resources[0], &s.resources[1]);
    assert_eq!(mcp.tools.rules.len(), 2);
    assert_eq!(mcp.tools.unlisted, Unlisted::Deny);
    assert_eq!(
        github.tools.unlisted,
        Unlisted::Deny,
        "the setting is for every resource"
    );
    assert_eq!(mcp.tools.rules[1].allow_domains, ["hr.example"]);
    assert_eq!(
        mcp.tools.rules[1].allow_users,
        ["Ann@Example.com", "ag_boss"]
    );
    assert_eq!(github.tools.rules[0].name, "merge_*");
    assert_eq!(
        mcp.scopes.to_string(),
        "mcp",
        "a token needs only the resource's scopes"
    );
    assert_eq!(
        mcp.offered.to_string(),
        "admin mcp",
        "and may ask for the tools' too"
    );
    assert_eq!(github.offered.to_string(), "github github:write");
    assert_eq!(s.scopes.to_string(), "admin github github:write mcp");
    assert_eq!(s.audit_retention, 90 * 86_400);
    let plain = settings(&[("AUTHGATE_AUDIT_RETENTION", "7d")]).unwrap();
    assert!(!plain.resources[0].tools.is_active());
    assert_eq!(plain.audit_retention, 7 * 86_400);
}
