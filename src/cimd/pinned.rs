//! Pinned copies of the well-known hosts' public client metadata documents, used only when the
//! live fetch of one of these exact `client_id` URLs fails (no connection, or an answer other
//! than 200: claude.ai's edge answers some datacenter addresses with 403). They pass the same
//! rules as a fetched document, at start-up and at every use.
//!
//! Where each text comes from:
//! - `claude-ai.json`: the Claude connector document exactly as quoted in public test fixtures
//!   (Oct 2026), the text authgate's tests already replay.
//! - `claude-code.json`: the Claude Code document as the tests already replay it: its documented
//!   fields (`none`, the port-less loopback redirects), as published in Sep 2026.
//! - `chatgpt.json`: ChatGPT's stable document as quoted in public fixtures (Sep-Oct 2026):
//!   `private_key_jwt` declared, `["none","private_key_jwt"]` listed, keys at
//!   `https://chatgpt.com/oauth/jwks.json`. The keys are not pinned (they rotate): with this copy
//!   the key set is still fetched live.
//! - `codex.json`: written from the documented fields (no verbatim copy was found): the stable
//!   Codex id, a public native client, the port-less loopback `/callback` redirects.
//! - `vscode.json`: VS Code's document as quoted in public fixtures (Sep 2026): a public native
//!   client with `http://127.0.0.1:33418/` and `https://vscode.dev/redirect`.

use serde_json::Value;

use crate::oauth::OAuthError;
use crate::oauth::client::{ClientMetadata, parse_metadata_document};
use crate::oauth::redirect::RedirectAllowlist;
use crate::oauth::scope::ScopeSet;

/// `(client_id, document)`.
const PINNED: &[(&str, &str)] = &[
    (
        "https://claude.ai/oauth/mcp-oauth-client-metadata",
        include_str!("pinned/claude-ai.json"),
    ),
    (
        "https://claude.ai/oauth/claude-code-client-metadata",
        include_str!("pinned/claude-code.json"),
    ),
    (
        "https://chatgpt.com/oauth/client.json",
        include_str!("pinned/chatgpt.json"),
    ),
    (
        "https://chatgpt.com/oauth/codex/client.json",
        include_str!("pinned/codex.json"),
    ),
    (
        "https://vscode.dev/oauth/client-metadata.json",
        include_str!("pinned/vscode.json"),
    ),
];

/// The client ids that have a pinned copy.
pub fn client_ids() -> impl Iterator<Item = &'static str> {
    PINNED.iter().map(|(id, _)| *id)
}

/// The pinned document of exactly this `client_id`, validated by the rules of a fetched one.
pub fn resolve(
    client_id: &str,
    offered_scopes: &ScopeSet,
    allowlist: &RedirectAllowlist,
) -> Option<Result<ClientMetadata, OAuthError>> {
    let (_, text) = PINNED.iter().find(|(id, _)| *id == client_id)?;
    Some(
        serde_json::from_str::<Value>(text)
            .map_err(|_| OAuthError::invalid_client_metadata("the pinned document is not JSON"))
            .and_then(|doc| parse_metadata_document(client_id, &doc, offered_scopes, allowlist)),
    )
}

/// Every pinned document must pass the document rules; checked at start-up (and by the tests),
/// so a bad copy stops authgate instead of failing one connection later.
pub fn check_all(offered_scopes: &ScopeSet) -> Result<(), String> {
    for id in client_ids() {
        match resolve(id, offered_scopes, &RedirectAllowlist::default()) {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("the pinned document of {id} is invalid: {e}")),
            None => return Err(format!("the pinned document of {id} is missing")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::client::TokenAuthMethod;
    use crate::oauth::redirect::find_matching;

    #[test]
    fn every_pinned_document_passes_the_document_rules() {
        assert_eq!(check_all(&ScopeSet::parse("mcp")), Ok(()));
        assert_eq!(client_ids().count(), 5);
        for id in client_ids() {
            let m = resolve(id, &ScopeSet::parse("mcp"), &RedirectAllowlist::default())
                .unwrap()
                .unwrap();
            assert!(!m.redirect_uris.is_empty(), "{id}");
            assert!(m.client_name.is_some(), "{id}");
        }
    }

    #[test]
    fn pinned_documents_say_what_each_host_does() {
        let get = |id: &str| {
            resolve(id, &ScopeSet::parse("mcp"), &RedirectAllowlist::default())
                .unwrap()
                .unwrap()
        };
        let chatgpt = get("https://chatgpt.com/oauth/client.json");
        assert_eq!(
            chatgpt.token_endpoint_auth_method,
            TokenAuthMethod::PrivateKeyJwt
        );
        assert_eq!(
            chatgpt.redirect_uris,
            ["https://chatgpt.com/connector_platform_oauth_redirect"]
        );
        let codex = get("https://chatgpt.com/oauth/codex/client.json");
        assert_eq!(codex.token_endpoint_auth_method, TokenAuthMethod::None);
        assert!(find_matching(&codex.redirect_uris, "http://127.0.0.1:61234/callback").is_some());
        let code = get("https://claude.ai/oauth/claude-code-client-metadata");
        assert!(find_matching(&code.redirect_uris, "http://localhost:50000/callback").is_some());
        let vscode = get("https://vscode.dev/oauth/client-metadata.json");
        assert!(find_matching(&vscode.redirect_uris, "http://127.0.0.1:40000/").is_some());
        let claude = get("https://claude.ai/oauth/mcp-oauth-client-metadata");
        assert_eq!(claude.grant_types, ["authorization_code", "refresh_token"]);
        // Only these exact ids: a look-alike gets nothing.
        assert!(
            resolve(
                "https://claude.ai/oauth/mcp-oauth-client-metadata/",
                &ScopeSet::parse("mcp"),
                &RedirectAllowlist::default()
            )
            .is_none()
        );
    }
}
