//! Scope strings (RFC 6749 §3.3): a space-delimited set, narrowed to what authgate offers rather
//! than refused, because real clients send scopes they invented (`claudeai`) or none at all.

use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet(BTreeSet<String>);

impl ScopeSet {
    pub fn parse(raw: &str) -> Self {
        Self(
            raw.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    pub fn from_list<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Self {
        Self(items.into_iter().map(Into::into).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The scopes of `self` that `allowed` also has.
    pub fn narrow_to(&self, allowed: &ScopeSet) -> ScopeSet {
        Self(self.0.intersection(&allowed.0).cloned().collect())
    }

    pub fn is_subset_of(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.union(&other.0).cloned().collect())
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_narrow() {
        let offered = ScopeSet::parse("mcp admin");
        assert_eq!(
            ScopeSet::parse("  mcp  claudeai ")
                .narrow_to(&offered)
                .to_string(),
            "mcp"
        );
        assert!(ScopeSet::parse("").is_empty());
        assert_eq!(ScopeSet::parse("b a a").to_string(), "a b");
        assert!(ScopeSet::parse("mcp").is_subset_of(&offered));
        assert!(!ScopeSet::parse("mcp x").is_subset_of(&offered));
    }
}
