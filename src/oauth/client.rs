//! Client metadata (RFC 7591 §2) as registered by DCR or published in a Client ID Metadata
//! Document, and the rules both must pass.

use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use super::OAuthError;
use super::assertion::{SIGNING_ALGS, parse_key_set};
use super::redirect::{
    ApplicationType, MAX_REDIRECT_URIS, RedirectAllowlist, validate_redirect_uri,
};
use super::scope::ScopeSet;
use super::url_rules::has_dot_segments;

const MAX_STRING_LEN: usize = 2048;
const MAX_NAME_LEN: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    None,
    ClientSecretPost,
    ClientSecretBasic,
    /// A JWT signed with one of the client's published keys (RFC 7523 §2.2).
    PrivateKeyJwt,
}

impl TokenAuthMethod {
    /// Every method authgate verifies, as advertised.
    pub const ALL: [Self; 4] = [
        Self::None,
        Self::ClientSecretPost,
        Self::ClientSecretBasic,
        Self::PrivateKeyJwt,
    ];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == raw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretPost => "client_secret_post",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }

    /// Does the client hold a secret that authgate issued (and stores hashed)?
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretPost | Self::ClientSecretBasic)
    }
}

pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
const SUPPORTED_GRANTS: &[&str] = &[GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN];

/// Registered metadata, after validation. Serialized as the stored form and echoed in the
/// registration response; absent fields are omitted, never `null` (SDK schemas reject nulls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: TokenAuthMethod,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub application_type: ApplicationType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    /// Where the client publishes its public keys (`private_key_jwt`): an https URL, fetched as
    /// metadata documents are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Or the keys themselves, only those a signature may be verified with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwkSet>,
    /// The one algorithm the client's assertions are signed with, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_signing_alg: Option<String>,
    /// What its ID tokens are signed with, when the client asked: always [`ID_TOKEN_ALG`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token_signed_response_alg: Option<String>,
}

/// The one algorithm of authgate's ID tokens (its signing keys are ES256).
pub const ID_TOKEN_ALG: &str = "ES256";

impl ClientMetadata {
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }
}

/// Where metadata came from: the rules differ slightly (documents may not carry secrets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataSource {
    Registration,
    Document,
}

/// Parses and validates a registration request body or a metadata document. Unknown fields are
/// ignored (clients send extensions); unsupported grant types are dropped (Claude's document
/// lists `jwt-bearer`); scopes are narrowed to those offered.
pub fn parse_client_metadata(
    body: &Value,
    source: MetadataSource,
    offered_scopes: &ScopeSet,
    allowlist: &RedirectAllowlist,
) -> Result<ClientMetadata, OAuthError> {
    let obj = body
        .as_object()
        .ok_or_else(|| OAuthError::invalid_client_metadata("the body must be a JSON object"))?;

    let application_type = match opt_string(obj, "application_type")? {
        None => ApplicationType::Web,
        Some("web") => ApplicationType::Web,
        Some("native") => ApplicationType::Native,
        Some(_) => {
            return Err(OAuthError::invalid_client_metadata(
                "application_type must be \"web\" or \"native\"",
            ));
        }
    };

    let redirect_uris = match obj.get("redirect_uris") {
        None | Some(Value::Null) => {
            return Err(OAuthError::invalid_redirect_uri(
                "redirect_uris is required for the authorization code flow",
            ));
        }
        Some(v) => string_array(v, "redirect_uris", OAuthError::invalid_redirect_uri)?,
    };
    if redirect_uris.is_empty() {
        return Err(OAuthError::invalid_redirect_uri(
            "redirect_uris must list at least one URI",
        ));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::invalid_redirect_uri(format!(
            "at most {MAX_REDIRECT_URIS} redirect URIs may be registered"
        )));
    }
    for uri in &redirect_uris {
        validate_redirect_uri(uri, application_type, allowlist.schemes())?;
        if !allowlist.allows(uri) {
            return Err(OAuthError::invalid_redirect_uri(format!(
                "redirect URI {uri:?} is not allowed by this server's policy"
            )));
        }
    }

    if source == MetadataSource::Document {
        for forbidden in ["client_secret", "client_secret_expires_at"] {
            if obj.contains_key(forbidden) {
                return Err(OAuthError::invalid_client_metadata(format!(
                    "a client metadata document must not contain {forbidden}"
                )));
            }
        }
    }
    let (jwks_uri, jwks) = client_keys(obj)?;
    let has_keys = jwks_uri.is_some() || jwks.is_some();
    let singular = opt_string(obj, "token_endpoint_auth_method")?;
    let token_endpoint_auth_method = match source {
        MetadataSource::Registration => registered_auth_method(singular, has_keys)?,
        MetadataSource::Document => {
            let plural = match obj.get("token_endpoint_auth_methods_supported") {
                None | Some(Value::Null) => None,
                Some(v) => Some(string_array(
                    v,
                    "token_endpoint_auth_methods_supported",
                    OAuthError::invalid_client_metadata,
                )?),
            };
            document_auth_method(singular, plural.as_deref(), has_keys)?
        }
    };
    let token_endpoint_auth_signing_alg = match opt_string(obj, "token_endpoint_auth_signing_alg")?
    {
        Some(alg) if token_endpoint_auth_method == TokenAuthMethod::PrivateKeyJwt => {
            if !SIGNING_ALGS.contains(&alg) {
                return Err(OAuthError::invalid_client_metadata(format!(
                    "token_endpoint_auth_signing_alg must be one of {}",
                    SIGNING_ALGS.join(", ")
                )));
            }
            Some(alg.to_owned())
        }
        // It only matters to private_key_jwt; another method never reads it.
        _ => None,
    };

    let grant_types = match obj.get("grant_types") {
        None | Some(Value::Null) => vec![GRANT_AUTHORIZATION_CODE.to_owned()],
        Some(v) => {
            let listed = string_array(v, "grant_types", OAuthError::invalid_client_metadata)?;
            let kept: Vec<String> = SUPPORTED_GRANTS
                .iter()
                .filter(|g| listed.iter().any(|l| l == *g))
                .map(|g| (*g).to_owned())
                .collect();
            if !kept.iter().any(|g| g == GRANT_AUTHORIZATION_CODE) {
                return Err(OAuthError::invalid_client_metadata(
                    "grant_types must include authorization_code",
                ));
            }
            kept
        }
    };

    let response_types = match obj.get("response_types") {
        None | Some(Value::Null) => vec!["code".to_owned()],
        Some(v) => {
            let listed = string_array(v, "response_types", OAuthError::invalid_client_metadata)?;
            if listed != ["code"] {
                return Err(OAuthError::invalid_client_metadata(
                    "response_types must be [\"code\"]",
                ));
            }
            listed
        }
    };

    let scope = opt_string(obj, "scope")?
        .map(|raw| ScopeSet::parse(raw).narrow_to(offered_scopes).to_string());

    let contacts = match obj.get("contacts") {
        None | Some(Value::Null) => None,
        Some(v) => Some(string_array(
            v,
            "contacts",
            OAuthError::invalid_client_metadata,
        )?),
    };

    let client_name = opt_string(obj, "client_name")?.map(str::to_owned);
    if client_name
        .as_deref()
        .is_some_and(|n| n.chars().count() > MAX_NAME_LEN)
    {
        return Err(OAuthError::invalid_client_metadata(format!(
            "client_name is longer than {MAX_NAME_LEN} characters"
        )));
    }

    // OpenID Connect Registration's default is RS256, which authgate cannot sign with. A client
    // that names an algorithm gets the one it will receive in the answer (RFC 7591 §3.2.1: a value
    // may be replaced, and the answer says so), rather than a refusal: most clients copy the field
    // from a template and never ask for an ID token.
    let id_token_signed_response_alg =
        opt_string(obj, "id_token_signed_response_alg")?.map(|_| ID_TOKEN_ALG.to_owned());

    Ok(ClientMetadata {
        redirect_uris,
        token_endpoint_auth_method,
        grant_types,
        response_types,
        application_type,
        client_name,
        client_uri: opt_web_uri(obj, "client_uri")?,
        logo_uri: opt_web_uri(obj, "logo_uri")?,
        tos_uri: opt_web_uri(obj, "tos_uri")?,
        policy_uri: opt_web_uri(obj, "policy_uri")?,
        contacts,
        scope,
        software_id: opt_string(obj, "software_id")?.map(str::to_owned),
        software_version: opt_string(obj, "software_version")?.map(str::to_owned),
        jwks_uri,
        jwks,
        token_endpoint_auth_signing_alg,
        id_token_signed_response_alg,
    })
}

/// A registration's method: the RFC 7591 default is `client_secret_basic`; `private_key_jwt`
/// needs keys to verify with.
fn registered_auth_method(
    singular: Option<&str>,
    has_keys: bool,
) -> Result<TokenAuthMethod, OAuthError> {
    let Some(raw) = singular else {
        return Ok(TokenAuthMethod::ClientSecretBasic);
    };
    match TokenAuthMethod::parse(raw) {
        Some(TokenAuthMethod::PrivateKeyJwt) if !has_keys => {
            Err(OAuthError::invalid_client_metadata(
                "private_key_jwt needs the client's public keys: jwks or jwks_uri",
            ))
        }
        Some(m) => Ok(m),
        None => Err(OAuthError::invalid_client_metadata(format!(
            "token_endpoint_auth_method {raw:?} is not supported; use none, client_secret_post, client_secret_basic or private_key_jwt"
        ))),
    }
}

/// The methods a metadata-document client can use here: it holds no secret authgate issued, so
/// `none`, or `private_key_jwt` when the document publishes keys.
const DOCUMENT_METHODS: [TokenAuthMethod; 2] =
    [TokenAuthMethod::PrivateKeyJwt, TokenAuthMethod::None];

/// A metadata document's method, from the intersection of the methods it lists and those
/// authgate can verify for it. The list is the plural `token_endpoint_auth_methods_supported`
/// (SEP-3149; ChatGPT publishes `["none","private_key_jwt"]`) when present, else the singular
/// field, else `none`. Of the intersection, the singular field (the client's declared choice)
/// wins, then the stronger method: accepting `none` from a client that can sign would let a
/// stolen refresh token be used without its key.
pub fn document_auth_method(
    singular: Option<&str>,
    plural: Option<&[String]>,
    has_keys: bool,
) -> Result<TokenAuthMethod, OAuthError> {
    let listed: Vec<&str> = match (plural, singular) {
        (Some(all), _) => all.iter().map(String::as_str).collect(),
        (None, Some(one)) => vec![one],
        (None, None) => vec![TokenAuthMethod::None.as_str()],
    };
    let usable = |m: TokenAuthMethod| {
        listed.contains(&m.as_str()) && (m != TokenAuthMethod::PrivateKeyJwt || has_keys)
    };
    if let Some(m) = singular.and_then(TokenAuthMethod::parse)
        && DOCUMENT_METHODS.contains(&m)
        && usable(m)
    {
        return Ok(m);
    }
    if let Some(m) = DOCUMENT_METHODS.into_iter().find(|m| usable(*m)) {
        return Ok(m);
    }
    if listed.contains(&TokenAuthMethod::PrivateKeyJwt.as_str()) {
        return Err(OAuthError::invalid_client_metadata(
            "it lists private_key_jwt but publishes no keys (jwks or jwks_uri), and no other method this server supports",
        ));
    }
    let mut named = listed.join(", ");
    if named.chars().count() > 200 {
        named = named.chars().take(200).collect::<String>() + "...";
    }
    Err(OAuthError::invalid_client_metadata(format!(
        "it lists only token endpoint authentication methods this server does not support for metadata-document clients ({named}); use none or private_key_jwt"
    )))
}

/// `jwks_uri` (an https URL, fetched later under the same guard as documents) or `jwks` (the
/// keys inline), never both (RFC 7591 §2).
fn client_keys(obj: &Map<String, Value>) -> Result<(Option<String>, Option<JwkSet>), OAuthError> {
    let jwks_uri = match opt_string(obj, "jwks_uri")? {
        Some(raw) => {
            validate_jwks_uri(raw)?;
            Some(raw.to_owned())
        }
        None => None,
    };
    let jwks = match obj.get("jwks") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            parse_key_set(v)
                .map_err(|why| OAuthError::invalid_client_metadata(format!("jwks: {why}")))?,
        ),
    };
    if jwks_uri.is_some() && jwks.is_some() {
        return Err(OAuthError::invalid_client_metadata(
            "jwks and jwks_uri must not both be present",
        ));
    }
    Ok((jwks_uri, jwks))
}

/// A `jwks_uri` is fetched like a document: https, a host, no user information or fragment.
pub fn validate_jwks_uri(raw: &str) -> Result<Url, OAuthError> {
    let bad = |why: &str| OAuthError::invalid_client_metadata(format!("jwks_uri {why}"));
    if raw.contains('#') {
        return Err(bad("must not have a fragment"));
    }
    let url = Url::parse(raw).map_err(|_| bad("is not a valid URL"))?;
    if url.scheme() != "https" {
        return Err(bad("must use https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain user information"));
    }
    if url.host().is_none() {
        return Err(bad("has no host"));
    }
    Ok(url)
}

fn opt_string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, OAuthError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_STRING_LEN => Ok(Some(s.as_str())),
        Some(Value::String(_)) => Err(OAuthError::invalid_client_metadata(format!(
            "{key} is longer than {MAX_STRING_LEN} characters"
        ))),
        Some(_) => Err(OAuthError::invalid_client_metadata(format!(
            "{key} must be a string"
        ))),
    }
}

fn string_array(
    v: &Value,
    key: &str,
    err: fn(String) -> OAuthError,
) -> Result<Vec<String>, OAuthError> {
    let arr = v
        .as_array()
        .ok_or_else(|| err(format!("{key} must be an array of strings")))?;
    if arr.len() > 50 {
        return Err(err(format!("{key} has too many entries")));
    }
    arr.iter()
        .map(|item| match item {
            Value::String(s) if s.len() <= MAX_STRING_LEN => Ok(s.clone()),
            _ => Err(err(format!("{key} must be an array of strings"))),
        })
        .collect()
}

/// URIs that a consent page may show as a link must be web URLs, never `javascript:`.
fn opt_web_uri(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, OAuthError> {
    let Some(raw) = opt_string(obj, key)? else {
        return Ok(None);
    };
    match Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {
            Ok(Some(raw.to_owned()))
        }
        _ => Err(OAuthError::invalid_client_metadata(format!(
            "{key} must be an http or https URL"
        ))),
    }
}

/// Is this `client_id` a Client ID Metadata Document URL rather than a registered id? Generated
/// ids never start with `https://`, so the prefix alone decides.
pub fn is_metadata_document_id(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// Checks the shape of a CIMD `client_id` URL before anything is fetched: https, a host, a
/// non-root path, no fragment, no userinfo, no dot segments.
pub fn validate_metadata_document_url(client_id: &str) -> Result<Url, OAuthError> {
    let bad = |why: &str| {
        OAuthError::new(
            super::ErrorCode::InvalidClient,
            format!("client_id URL {why}"),
        )
    };
    if client_id.len() > MAX_STRING_LEN {
        return Err(bad("is too long"));
    }
    if client_id.contains('#') {
        return Err(bad("must not have a fragment"));
    }
    if has_dot_segments(client_id) {
        return Err(bad("must not contain dot segments"));
    }
    let url = Url::parse(client_id).map_err(|_| bad("is not a valid URL"))?;
    if url.scheme() != "https" {
        return Err(bad("must use https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain user information"));
    }
    if url.host().is_none() {
        return Err(bad("has no host"));
    }
    if url.path().is_empty() || url.path() == "/" {
        return Err(bad("must have a path"));
    }
    Ok(url)
}

/// Validates a fetched metadata document for `client_id`: its `client_id` must equal the URL byte
/// for byte, then the common metadata rules apply with the document restrictions.
pub fn parse_metadata_document(
    client_id: &str,
    doc: &Value,
    offered_scopes: &ScopeSet,
    allowlist: &RedirectAllowlist,
) -> Result<ClientMetadata, OAuthError> {
    let doc_id = doc.get("client_id").and_then(Value::as_str);
    if doc_id != Some(client_id) {
        return Err(OAuthError::new(
            super::ErrorCode::InvalidClient,
            "the metadata document's client_id does not equal its URL",
        ));
    }
    parse_client_metadata(doc, MetadataSource::Document, offered_scopes, allowlist).map_err(|e| {
        OAuthError::new(
            super::ErrorCode::InvalidClient,
            format!("invalid client metadata document: {}", e.description),
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::oauth::ErrorCode;

    fn offered() -> ScopeSet {
        ScopeSet::parse("mcp")
    }

    fn reg(body: Value) -> Result<ClientMetadata, OAuthError> {
        parse_client_metadata(
            &body,
            MetadataSource::Registration,
            &offered(),
            &RedirectAllowlist::default(),
        )
    }

    #[test]
    fn claude_dcr_body() {
        let m = reg(json!({"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"Claude"})).unwrap();
        assert_eq!(
            m.token_endpoint_auth_method,
            TokenAuthMethod::ClientSecretPost
        );
        assert_eq!(m.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(m.scope, None);
    }

    #[test]
    fn defaults_follow_rfc7591() {
        let m = reg(json!({"redirect_uris":["https://a.example/cb"]})).unwrap();
        assert_eq!(
            m.token_endpoint_auth_method,
            TokenAuthMethod::ClientSecretBasic
        );
        assert_eq!(m.grant_types, ["authorization_code"]);
        assert_eq!(m.response_types, ["code"]);
        assert_eq!(m.application_type, ApplicationType::Web);
    }

    #[test]
    fn scopes_are_narrowed_and_empty_scope_accepted() {
        let m =
            reg(json!({"redirect_uris":["https://a.example/cb"],"scope":"claudeai mcp"})).unwrap();
        assert_eq!(m.scope.as_deref(), Some("mcp"));
        let m = reg(json!({"redirect_uris":["https://a.example/cb"],"scope":""})).unwrap();
        assert_eq!(m.scope.as_deref(), Some(""));
    }

    #[test]
    fn rejections() {
        let cases = [
            (json!([]), ErrorCode::InvalidClientMetadata),
            (json!({}), ErrorCode::InvalidRedirectUri),
            (json!({"redirect_uris":[]}), ErrorCode::InvalidRedirectUri),
            (
                json!({"redirect_uris":"https://a.example/cb"}),
                ErrorCode::InvalidRedirectUri,
            ),
            (
                json!({"redirect_uris":["http://a.example/cb"]}),
                ErrorCode::InvalidRedirectUri,
            ),
            (
                json!({"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({"redirect_uris":["https://a.example/cb"],"grant_types":["implicit"]}),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({"redirect_uris":["https://a.example/cb"],"response_types":["token"]}),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({"redirect_uris":["https://a.example/cb"],"client_name":7}),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({"redirect_uris":["https://a.example/cb"],"client_uri":"javascript:alert(1)"}),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({"redirect_uris":["https://a.example/cb"],"application_type":"desktop"}),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({"redirect_uris":["https://a.example/cb"],"client_name":"x".repeat(201)}),
                ErrorCode::InvalidClientMetadata,
            ),
        ];
        for (body, code) in cases {
            assert_eq!(reg(body.clone()).unwrap_err().code, code, "{body}");
        }
    }

    #[test]
    fn allowlist_applies() {
        let list = RedirectAllowlist::new(vec!["https://claude.ai/*".into()]);
        let ok = parse_client_metadata(
            &json!({"redirect_uris":["https://claude.ai/api/mcp/auth_callback"]}),
            MetadataSource::Registration,
            &offered(),
            &list,
        );
        assert!(ok.is_ok());
        let err = parse_client_metadata(
            &json!({"redirect_uris":["https://evil.example/cb"]}),
            MetadataSource::Registration,
            &offered(),
            &list,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRedirectUri);
    }

    #[test]
    fn claude_metadata_document() {
        let id = "https://claude.ai/oauth/mcp-oauth-client-metadata";
        let doc = json!({"client_id":id,"client_name":"Claude","client_uri":"https://claude.ai","redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"grant_types":["authorization_code","refresh_token","urn:ietf:params:oauth:grant-type:jwt-bearer"],"response_types":["code"],"token_endpoint_auth_method":"none"});
        let m =
            parse_metadata_document(id, &doc, &offered(), &RedirectAllowlist::default()).unwrap();
        assert_eq!(m.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(m.token_endpoint_auth_method, TokenAuthMethod::None);
    }

    #[test]
    fn document_rules() {
        let id = "https://app.example/client.json";
        let base = json!({"client_id":id,"redirect_uris":["http://localhost/callback"]});
        let list = RedirectAllowlist::default();
        assert!(parse_metadata_document(id, &base, &offered(), &list).is_ok());
        assert!(
            parse_metadata_document("https://app.example/client.json/", &base, &offered(), &list)
                .is_err()
        );
        let mut with_secret = base.clone();
        with_secret["client_secret"] = json!("x");
        assert!(parse_metadata_document(id, &with_secret, &offered(), &list).is_err());
        let mut post = base.clone();
        post["token_endpoint_auth_method"] = json!("client_secret_post");
        assert!(parse_metadata_document(id, &post, &offered(), &list).is_err());
    }

    const CHATGPT: &str = "https://chatgpt.com/oauth/client.json";

    fn chatgpt_document() -> Value {
        json!({"client_id":CHATGPT,"client_uri":"https://chatgpt.com/","redirect_uris":["https://chatgpt.com/connector_platform_oauth_redirect"],"token_endpoint_auth_method":"private_key_jwt","token_endpoint_auth_methods_supported":["none","private_key_jwt"],"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"ChatGPT","logo_uri":"https://persistent.oaistatic.com/sonic/misc/openai-logo.png","token_endpoint_auth_signing_alg":"RS256","jwks_uri":"https://chatgpt.com/oauth/jwks.json"})
    }

    fn doc(body: Value) -> Result<ClientMetadata, OAuthError> {
        let id = body["client_id"].as_str().unwrap_or(CHATGPT).to_owned();
        parse_metadata_document(&id, &body, &offered(), &RedirectAllowlist::default())
    }

    #[test]
    fn chatgpt_document_negotiates_private_key_jwt() {
        let m = doc(chatgpt_document()).unwrap();
        assert_eq!(m.token_endpoint_auth_method, TokenAuthMethod::PrivateKeyJwt);
        assert_eq!(
            m.jwks_uri.as_deref(),
            Some("https://chatgpt.com/oauth/jwks.json")
        );
        assert_eq!(m.token_endpoint_auth_signing_alg.as_deref(), Some("RS256"));
    }

    #[test]
    fn the_plural_list_decides_with_the_singular_as_preference() {
        let m = |singular: Option<&str>, plural: Option<&[&str]>, keys: bool| {
            let plural: Option<Vec<String>> =
                plural.map(|p| p.iter().map(|s| (*s).to_owned()).collect());
            document_auth_method(singular, plural.as_deref(), keys)
        };
        use TokenAuthMethod::{None as Public, PrivateKeyJwt as Jwt};
        // The singular field alone, or nothing (a public client).
        assert_eq!(m(None, None, false), Ok(Public));
        assert_eq!(m(Some("none"), None, false), Ok(Public));
        assert_eq!(m(Some("private_key_jwt"), None, true), Ok(Jwt));
        // ChatGPT: both listed, private_key_jwt declared.
        assert_eq!(
            m(
                Some("private_key_jwt"),
                Some(&["none", "private_key_jwt"]),
                true
            ),
            Ok(Jwt)
        );
        // Declared none among both: the client's choice.
        assert_eq!(
            m(Some("none"), Some(&["none", "private_key_jwt"]), true),
            Ok(Public)
        );
        // The plural list alone: the stronger method both sides can do.
        assert_eq!(m(None, Some(&["none", "private_key_jwt"]), true), Ok(Jwt));
        // Without keys private_key_jwt is not possible; none still is.
        assert_eq!(
            m(
                Some("private_key_jwt"),
                Some(&["none", "private_key_jwt"]),
                false
            ),
            Ok(Public)
        );
        // A singular method outside the plural list does not override it.
        assert_eq!(
            m(
                Some("client_secret_basic"),
                Some(&["client_secret_basic", "none"]),
                false
            ),
            Ok(Public)
        );
        // Nothing in common: refused, saying why.
        let only_secret = m(Some("client_secret_post"), None, false).unwrap_err();
        assert!(
            only_secret.description.contains("client_secret_post"),
            "{only_secret}"
        );
        let unusable = m(
            None,
            Some(&["client_secret_basic", "tls_client_auth"]),
            true,
        )
        .unwrap_err();
        assert!(
            unusable.description.contains("tls_client_auth"),
            "{unusable}"
        );
        let keyless = m(Some("private_key_jwt"), None, false).unwrap_err();
        assert!(keyless.description.contains("no keys"), "{keyless}");
        assert!(m(None, Some(&[]), true).is_err());
    }

    #[test]
    fn documents_that_cannot_authenticate_are_refused_as_invalid_client() {
        let mut no_keys = chatgpt_document();
        no_keys.as_object_mut().unwrap().remove("jwks_uri");
        no_keys["token_endpoint_auth_methods_supported"] = json!(["private_key_jwt"]);
        let err = doc(no_keys).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidClient);
        assert!(err.description.contains("no keys"), "{err}");
        let mut tls = chatgpt_document();
        tls["token_endpoint_auth_methods_supported"] = json!(["tls_client_auth"]);
        tls["token_endpoint_auth_method"] = json!("tls_client_auth");
        assert_eq!(doc(tls).unwrap_err().code, ErrorCode::InvalidClient);
        let mut weak = chatgpt_document();
        weak["token_endpoint_auth_signing_alg"] = json!("HS256");
        assert_eq!(doc(weak).unwrap_err().code, ErrorCode::InvalidClient);
        let mut plain = chatgpt_document();
        plain["jwks_uri"] = json!("http://chatgpt.com/oauth/jwks.json");
        assert_eq!(doc(plain).unwrap_err().code, ErrorCode::InvalidClient);
    }

    #[test]
    fn a_named_id_token_algorithm_is_answered_with_the_one_used() {
        let base = json!({"redirect_uris":["https://a.example/cb"]});
        assert_eq!(
            reg(base.clone()).unwrap().id_token_signed_response_alg,
            None
        );
        for asked in ["RS256", "ES256", "none"] {
            let mut body = base.clone();
            body["id_token_signed_response_alg"] = json!(asked);
            assert_eq!(
                reg(body).unwrap().id_token_signed_response_alg.as_deref(),
                Some(ID_TOKEN_ALG),
                "{asked}"
            );
        }
        let mut bad = base;
        bad["id_token_signed_response_alg"] = json!(["RS256"]);
        assert_eq!(reg(bad).unwrap_err().code, ErrorCode::InvalidClientMetadata);
    }

    #[test]
    fn registrations_may_use_private_key_jwt_with_their_keys() {
        let key = crate::oauth::assertion::tests::ec_key("k1");
        let base = json!({"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt"});
        let mut inline = base.clone();
        inline["jwks"] = json!({ "keys": [key.jwk.clone()] });
        let m = reg(inline.clone()).unwrap();
        assert_eq!(m.token_endpoint_auth_method, TokenAuthMethod::PrivateKeyJwt);
        assert_eq!(m.jwks.as_ref().map(|k| k.keys.len()), Some(1));
        assert!(!m.token_endpoint_auth_method.uses_secret());
        let mut by_uri = base.clone();
        by_uri["jwks_uri"] = json!("https://a.example/jwks.json");
        by_uri["token_endpoint_auth_signing_alg"] = json!("ES256");
        let m = reg(by_uri.clone()).unwrap();
        assert_eq!(m.jwks_uri.as_deref(), Some("https://a.example/jwks.json"));
        assert_eq!(m.token_endpoint_auth_signing_alg.as_deref(), Some("ES256"));
        let mut both = inline.clone();
        both["jwks_uri"] = json!("https://a.example/jwks.json");
        let mut private = inline.clone();
        private["jwks"]["keys"][0]["d"] = json!("AAAA");
        let mut weak = by_uri.clone();
        weak["token_endpoint_auth_signing_alg"] = json!("none");
        for bad in [base, both, private, weak] {
            assert_eq!(
                reg(bad.clone()).unwrap_err().code,
                ErrorCode::InvalidClientMetadata,
                "{bad}"
            );
        }
    }

    #[test]
    fn document_url_shape() {
        assert!(
            validate_metadata_document_url("https://claude.ai/oauth/mcp-oauth-client-metadata")
                .is_ok()
        );
        for bad in [
            "http://claude.ai/oauth/x",
            "https://claude.ai",
            "https://claude.ai/",
            "https://claude.ai/x#frag",
            "https://user@claude.ai/x",
            "https://claude.ai/a/../b",
            "https://claude.ai/a/./b",
        ] {
            assert!(validate_metadata_document_url(bad).is_err(), "{bad}");
        }
        assert!(is_metadata_document_id("https://x.example/a"));
        assert!(!is_metadata_document_id("agc_abc"));
    }
}
