//! Scope challenges (MCP 2026-07-28 §Scope Challenge Handling, RFC 6750 §3.1): which scopes a
//! 403 `insufficient_scope` names.

use super::scope::ScopeSet;

/// The scopes a 403 names: every scope the operation needs, plus those the token holds that the
/// resource still offers. A client that replaces its scopes with the challenge's (as the MCP
/// specification lets it) then loses none it had: this is the specification's recommended
/// "existing and new" choice. Scopes the resource no longer offers are left out.
pub fn challenge_scope(token: &ScopeSet, offered: &ScopeSet, needed: &ScopeSet) -> ScopeSet {
    token.narrow_to(offered).union(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_keeps_what_the_token_has_for_this_resource() {
        let offered = ScopeSet::parse("mcp admin files write");
        let token = ScopeSet::parse("mcp files stale");
        let needed = ScopeSet::parse("admin mcp");
        assert_eq!(
            challenge_scope(&token, &offered, &needed).to_string(),
            "admin files mcp",
            "the operation's scopes and the token's, not the ones no longer offered"
        );
    }
}
