//! Per-tool policy at the gateway, as pure rules: which tools need which scopes, and which users
//! or email domains may call them. No I/O: the MCP guard (`http::mcp::policy`) reads the request,
//! asks [`ToolPolicy::decide`], and acts on the answer.
//!
//! Rules match tool names by glob (`*` is any run of characters, case-sensitive like MCP tool
//! names). Every rule whose pattern matches applies: the caller must satisfy all of them, and
//! the scopes needed are those of all of them together. Order therefore never matters, and a
//! broad rule added later cannot loosen a narrower one. A tool no rule matches is allowed, or
//! refused when the operator chose to deny unlisted tools.

pub mod jsonrpc;
pub mod sse;

use serde_json::Value;

use self::jsonrpc::{Inbound, TOOLS_CALL, TOOLS_LIST};
use crate::oauth::redirect::glob_match;
use crate::oauth::scope::ScopeSet;

/// One `[[tool]]` (or `[[resource.tool]]`) rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRule {
    /// Glob over tool names.
    pub name: String,
    /// Scopes the access token must carry to call a matching tool.
    pub scopes: ScopeSet,
    /// Email addresses (any case) or subjects (`ag_...`) allowed to call a matching tool.
    pub allow_users: Vec<String>,
    /// Email domains allowed to call a matching tool.
    pub allow_domains: Vec<String>,
}

impl ToolRule {
    /// No user or domain list: anyone with the scopes.
    fn admits(&self, who: &Who<'_>) -> bool {
        if self.allow_users.is_empty() && self.allow_domains.is_empty() {
            return true;
        }
        if self.allow_users.iter().any(|u| u == who.sub) {
            return true;
        }
        let Some(email) = who.email else {
            return false;
        };
        let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
        self.allow_users
            .iter()
            .any(|u| u.eq_ignore_ascii_case(email))
            || self
                .allow_domains
                .iter()
                .any(|d| !domain.is_empty() && d.eq_ignore_ascii_case(domain))
    }
}

/// What happens to a tool that no rule names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unlisted {
    #[default]
    Allow,
    Deny,
}

/// The tool rules of one protected resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolPolicy {
    pub rules: Vec<ToolRule>,
    pub unlisted: Unlisted,
}

/// The caller, as the verified access token describes them.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub sub: &'a str,
    pub email: Option<&'a str>,
    pub scopes: &'a ScopeSet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolDecision {
    Allow,
    /// Allowed once the token carries these scopes too (the scopes of every matching rule).
    NeedScopes(ScopeSet),
    /// Never for this caller, whatever the scopes.
    Forbidden,
}

impl ToolPolicy {
    /// Whether requests to the resource are read at all: without rules and with unlisted tools
    /// allowed there is nothing to decide, and the gateway forwards without looking.
    pub fn is_active(&self) -> bool {
        !self.rules.is_empty() || self.unlisted == Unlisted::Deny
    }

    /// Every scope some rule asks for: the resource offers them, so that clients can step up.
    pub fn scopes(&self) -> ScopeSet {
        self.rules
            .iter()
            .fold(ScopeSet::default(), |all, r| all.union(&r.scopes))
    }

    pub fn decide(&self, tool: &str, who: &Who<'_>) -> ToolDecision {
        let mut matched = false;
        let mut needed = ScopeSet::default();
        for rule in self.rules.iter().filter(|r| glob_match(&r.name, tool)) {
            matched = true;
            if !rule.admits(who) {
                return ToolDecision::Forbidden;
            }
            needed = needed.union(&rule.scopes);
        }
        if !matched && self.unlisted == Unlisted::Deny {
            return ToolDecision::Forbidden;
        }
        if needed.is_subset_of(who.scopes) {
            ToolDecision::Allow
        } else {
            ToolDecision::NeedScopes(needed)
        }
    }

    /// Whether `tools/list` shows the tool to this caller: everything they may call, now or
    /// after stepping up (hiding those would leave the client no way to learn it can ask).
    pub fn lists(&self, tool: &str, who: &Who<'_>) -> bool {
        self.decide(tool, who) != ToolDecision::Forbidden
    }
}

/// What the policy makes of one request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Screening {
    /// Each `tools/call`: the tool, its request id and the decision.
    pub calls: Vec<Call>,
    /// Ids of the `tools/list` requests, whose answers are filtered.
    pub lists: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub tool: String,
    pub id: Option<Value>,
    pub decision: ToolDecision,
}

/// What becomes of the request as a whole.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Forward,
    /// Some call needs more scope (and none is forbidden): every scope of every call, together.
    StepUp(ScopeSet),
    /// Some call is forbidden: nothing of the request goes on.
    Forbidden,
    /// A `tools/call` without a tool name: nothing can be decided, nothing goes on.
    NoToolName,
}

pub fn screen(policy: &ToolPolicy, who: &Who<'_>, inbound: &Inbound) -> (Screening, Verdict) {
    let mut screening = Screening {
        calls: Vec::new(),
        lists: Vec::new(),
    };
    let mut unnamed = false;
    for msg in inbound.messages() {
        if msg.is(TOOLS_LIST) {
            screening.lists.extend(msg.id.clone());
        } else if msg.is(TOOLS_CALL) {
            match &msg.name {
                Some(tool) => screening.calls.push(Call {
                    decision: policy.decide(tool, who),
                    tool: tool.clone(),
                    id: msg.id.clone(),
                }),
                None => unnamed = true,
            }
        }
    }
    let verdict = if unnamed {
        Verdict::NoToolName
    } else if screening
        .calls
        .iter()
        .any(|c| c.decision == ToolDecision::Forbidden)
    {
        Verdict::Forbidden
    } else {
        let needed = screening
            .calls
            .iter()
            .fold(ScopeSet::default(), |all, c| match &c.decision {
                ToolDecision::NeedScopes(s) => all.union(s),
                _ => all,
            });
        if needed.is_empty() {
            Verdict::Forward
        } else {
            Verdict::StepUp(needed)
        }
    };
    (screening, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, scopes: &str, users: &[&str], domains: &[&str]) -> ToolRule {
        ToolRule {
            name: name.into(),
            scopes: ScopeSet::parse(scopes),
            allow_users: users.iter().map(|s| (*s).to_owned()).collect(),
            allow_domains: domains.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn who<'a>(sub: &'a str, email: Option<&'a str>, scopes: &'a ScopeSet) -> Who<'a> {
        Who { sub, email, scopes }
    }

    #[test]
    fn scopes_step_up_and_users_forbid() {
        let policy = ToolPolicy {
            rules: vec![
                rule("delete_*", "admin", &[], &[]),
                rule(
                    "payroll",
                    "",
                    &["Ann@Example.com", "ag_boss"],
                    &["hr.example"],
                ),
            ],
            unlisted: Unlisted::Allow,
        };
        let mcp = ScopeSet::parse("mcp");
        let admin = ScopeSet::parse("mcp admin");
        let ann = who("ag_ann", Some("ann@example.com"), &mcp);
        assert_eq!(policy.decide("echo", &ann), ToolDecision::Allow, "unlisted");
        assert_eq!(
            policy.decide("delete_user", &ann),
            ToolDecision::NeedScopes(ScopeSet::parse("admin"))
        );
        assert_eq!(
            policy.decide("delete_user", &who("ag_ann", None, &admin)),
            ToolDecision::Allow
        );
        assert_eq!(
            policy.decide("payroll", &ann),
            ToolDecision::Allow,
            "email any case"
        );
        for (sub, email) in [
            ("ag_bob", Some("bob@example.com")),
            ("ag_bob", Some("bob@hr.example.evil")),
            ("ag_bob", Some("bob@evilhr.example")),
            ("ag_bob", Some("hr.example")),
            ("ag_bob", None),
            ("ag_boss2", None),
        ] {
            assert_eq!(
                policy.decide("payroll", &who(sub, email, &admin)),
                ToolDecision::Forbidden,
                "{sub} {email:?}"
            );
        }
        assert_eq!(
            policy.decide("payroll", &who("ag_x", Some("eve@HR.example"), &mcp)),
            ToolDecision::Allow
        );
        assert_eq!(
            policy.decide("payroll", &who("ag_boss", None, &mcp)),
            ToolDecision::Allow,
            "by subject"
        );
        assert_eq!(
            policy.decide("Delete_user", &ann),
            ToolDecision::Allow,
            "names are case-sensitive"
        );
    }

    #[test]
    fn every_matching_rule_applies() {
        let policy = ToolPolicy {
            rules: vec![
                rule("*", "mcp", &[], &[]),
                rule("db_*", "db", &[], &["corp.example"]),
                rule("db_drop", "admin", &[], &[]),
            ],
            unlisted: Unlisted::Allow,
        };
        let some = ScopeSet::parse("mcp db");
        let corp = who("ag_a", Some("a@corp.example"), &some);
        assert_eq!(policy.decide("db_read", &corp), ToolDecision::Allow);
        assert_eq!(
            policy.decide("db_drop", &corp),
            ToolDecision::NeedScopes(ScopeSet::parse("admin db mcp")),
            "the scopes of all matching rules"
        );
        assert_eq!(
            policy.decide("db_drop", &who("ag_b", Some("b@other.example"), &some)),
            ToolDecision::Forbidden,
            "a later, broader rule does not loosen an earlier one"
        );
        let reordered = ToolPolicy {
            rules: policy.rules.iter().rev().cloned().collect(),
            unlisted: Unlisted::Allow,
        };
        for tool in ["db_drop", "db_read", "echo"] {
            assert_eq!(reordered.decide(tool, &corp), policy.decide(tool, &corp));
        }
        let none = ScopeSet::default();
        assert_eq!(
            policy.decide("echo", &who("ag_a", None, &none)),
            ToolDecision::NeedScopes(ScopeSet::parse("mcp"))
        );
    }

    #[test]
    fn unlisted_tools_follow_the_default() {
        let mcp = ScopeSet::parse("mcp");
        let ann = who("ag_ann", Some("ann@example.com"), &mcp);
        let deny = ToolPolicy {
            rules: vec![rule("echo", "", &[], &[])],
            unlisted: Unlisted::Deny,
        };
        assert_eq!(deny.decide("echo", &ann), ToolDecision::Allow);
        assert_eq!(deny.decide("echo2", &ann), ToolDecision::Forbidden);
        assert!(!deny.lists("echo2", &ann));
        assert!(deny.is_active());
        assert!(
            ToolPolicy {
                rules: vec![],
                unlisted: Unlisted::Deny
            }
            .is_active()
        );
        assert!(!ToolPolicy::default().is_active());
    }

    #[test]
    fn listing_hides_only_what_can_never_be_called() {
        let policy = ToolPolicy {
            rules: vec![
                rule("admin_*", "admin", &[], &[]),
                rule("hr_*", "", &[], &["hr.example"]),
            ],
            unlisted: Unlisted::Allow,
        };
        let mcp = ScopeSet::parse("mcp");
        let ann = who("ag_ann", Some("ann@example.com"), &mcp);
        assert!(policy.lists("admin_reset", &ann), "step-up is possible");
        assert!(!policy.lists("hr_report", &ann));
        assert!(policy.lists("echo", &ann));
        assert_eq!(policy.scopes(), ScopeSet::parse("admin"));
    }

    #[test]
    fn a_request_is_screened_as_a_whole() {
        let policy = ToolPolicy {
            rules: vec![
                rule("delete_*", "admin", &[], &[]),
                rule("db_*", "db", &[], &[]),
                rule("payroll", "", &[], &["hr.example"]),
            ],
            unlisted: Unlisted::Allow,
        };
        let mcp = ScopeSet::parse("mcp");
        let ann = who("ag_ann", Some("ann@example.com"), &mcp);
        let run = |body: &str| screen(&policy, &ann, &Inbound::parse(body.as_bytes()).unwrap());
        let (s, v) = run(r#"{"id":1,"method":"tools/list"}"#);
        assert_eq!(
            (s.lists, s.calls.len(), v),
            (vec![serde_json::json!(1)], 0, Verdict::Forward)
        );
        let (s, v) = run(r#"{"id":"c","method":"tools/call","params":{"name":"echo"}}"#);
        assert_eq!(v, Verdict::Forward);
        assert_eq!(s.calls[0].tool, "echo");
        assert_eq!(s.calls[0].id, Some(serde_json::json!("c")));
        let (_, v) = run(
            r#"[{"id":1,"method":"tools/call","params":{"name":"delete_x"}},{"id":2,"method":"tools/call","params":{"name":"db_x"}}]"#,
        );
        assert_eq!(v, Verdict::StepUp(ScopeSet::parse("admin db")));
        let (s, v) = run(
            r#"[{"id":1,"method":"tools/call","params":{"name":"delete_x"}},{"id":2,"method":"tools/call","params":{"name":"payroll"}}]"#,
        );
        assert_eq!(v, Verdict::Forbidden, "forbidden wins over step-up");
        assert_eq!(s.calls[1].decision, ToolDecision::Forbidden);
        let (_, v) = run(r#"{"method":"tools/call","params":{"name":"payroll"}}"#);
        assert_eq!(
            v,
            Verdict::Forbidden,
            "a call sent as a notification is judged too"
        );
        let (_, v) = run(r#"{"id":1,"method":"tools/call","params":{"arguments":{}}}"#);
        assert_eq!(v, Verdict::NoToolName);
        let (_, v) = run(r#"{"id":1,"method":"tools/call","params":[]}"#);
        assert_eq!(v, Verdict::NoToolName);
    }
}
