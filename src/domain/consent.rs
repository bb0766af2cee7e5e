//! What a person has allowed a client, and what a new request asks of them (incremental
//! consent): the consent page asks only for what is new, and an approval adds to what was allowed
//! before rather than replacing it.

use crate::oauth::scope::ScopeSet;

/// A request's scopes, split by what the person already allowed this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentAsk {
    /// Allowed before: shown as such, not asked again.
    pub already: ScopeSet,
    /// What the person is asked to allow now.
    pub new: ScopeSet,
}

impl ConsentAsk {
    /// `approved`: what the person allowed this client so far (`None`: nothing, or the person is
    /// not known yet because the browser has no session).
    pub fn of(requested: &ScopeSet, approved: Option<&ScopeSet>) -> Self {
        match approved {
            Some(approved) => Self {
                already: requested.narrow_to(approved),
                new: requested.without(approved),
            },
            None => Self {
                already: ScopeSet::default(),
                new: requested.clone(),
            },
        }
    }

    /// Nothing new: the request can be answered without asking.
    pub fn is_covered(&self) -> bool {
        self.new.is_empty()
    }
}

/// What the person has allowed the client once they approve `requested`: everything allowed
/// before stays allowed until they revoke the client.
pub fn after_approval(approved: Option<&ScopeSet>, requested: &ScopeSet) -> ScopeSet {
    approved.map_or_else(|| requested.clone(), |a| a.union(requested))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_new_is_asked() {
        let requested = ScopeSet::parse("mcp admin");
        let ask = ConsentAsk::of(&requested, Some(&ScopeSet::parse("mcp files")));
        assert_eq!(ask.already.to_string(), "mcp");
        assert_eq!(ask.new.to_string(), "admin");
        assert!(!ask.is_covered());
        let first = ConsentAsk::of(&requested, None);
        assert!(first.already.is_empty());
        assert_eq!(first.new, requested);
        let covered = ConsentAsk::of(&ScopeSet::parse("mcp"), Some(&ScopeSet::parse("mcp files")));
        assert!(covered.is_covered());
    }

    #[test]
    fn approvals_add_up() {
        let before = ScopeSet::parse("mcp files");
        assert_eq!(
            after_approval(Some(&before), &ScopeSet::parse("admin")).to_string(),
            "admin files mcp"
        );
        assert_eq!(
            after_approval(None, &ScopeSet::parse("admin")).to_string(),
            "admin"
        );
    }
}
