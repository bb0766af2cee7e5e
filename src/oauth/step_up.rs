//! Scope challenges (MCP 2026-07-28 §Scope Challenge Handling, RFC 6750 §3.1): which scopes a
//! request to a resource needs, and which scopes its 403 `insufficient_scope` names.
//!
//! A resource needs its own scopes for every request; a tool named in its tool scopes needs those
//! as well when it is called. The tool is read from the JSON-RPC body, the text the MCP server
//! will execute, never from a header a client could set to something else.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::scope::ScopeSet;

/// The scopes some tools need beyond their resource's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolScopes(BTreeMap<String, ScopeSet>);

impl ToolScopes {
    pub fn new(tools: BTreeMap<String, ScopeSet>) -> Self {
        Self(tools)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every scope any tool needs.
    pub fn all(&self) -> ScopeSet {
        self.0
            .values()
            .fold(ScopeSet::default(), |all, s| all.union(s))
    }

    /// What `operation` needs on a resource whose requests all need `base`. A body that cannot be
    /// read with certainty might call any tool, so it needs every tool's scopes.
    pub fn needed(&self, base: &ScopeSet, operation: &Operation) -> ScopeSet {
        match operation {
            Operation::Calls(tools) => tools
                .iter()
                .filter_map(|t| self.0.get(t))
                .fold(base.clone(), |needed, s| needed.union(s)),
            Operation::Unreadable => base.union(&self.all()),
        }
    }
}

/// The scopes a 403 names: every scope the operation needs, plus those the token holds that the
/// resource still offers. A client that replaces its scopes with the challenge's (as the MCP
/// specification lets it) then loses none it had: this is the specification's recommended
/// "existing and new" choice. Scopes the resource no longer offers are left out.
pub fn challenge_scope(token: &ScopeSet, offered: &ScopeSet, needed: &ScopeSet) -> ScopeSet {
    token.narrow_to(offered).union(needed)
}

/// A tool name as the MCP specification allows it (1 to 128 of `A-Z a-z 0-9 _ - .`).
pub fn is_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// What a request does, as far as scopes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Calls these tools (none for any other method).
    Calls(Vec<String>),
    /// Not JSON-RPC, a repeated key, or a `tools/call` without a string name: what the MCP server
    /// would make of it is not certain (parsers differ on repeated keys, for one).
    Unreadable,
}

impl Operation {
    /// Reads a JSON-RPC message or batch.
    pub fn read(body: &[u8]) -> Self {
        match serde_json::from_slice::<Messages>(body) {
            Ok(Messages(messages)) => {
                let mut tools = Vec::new();
                for m in messages {
                    if m.method.as_deref() != Some("tools/call") {
                        continue;
                    }
                    match m.params.and_then(|p| p.name) {
                        Some(Name::Text(name)) => tools.push(name),
                        _ => return Self::Unreadable,
                    }
                }
                Self::Calls(tools)
            }
            Err(_) => Self::Unreadable,
        }
    }
}

/// One message, or a batch of them.
struct Messages(Vec<Message>);

/// A JSON-RPC message's method and, for a tool call, its name. Derived, so a repeated `method` or
/// `params` is an error rather than a silent choice.
#[derive(Deserialize)]
struct Message {
    method: Option<String>,
    #[serde(default)]
    params: Option<Params>,
}

/// The `name` of `params`, whatever else it holds (other methods' params may be anything).
struct Params {
    name: Option<Name>,
}

enum Name {
    Text(String),
    NotText,
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Messages;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON-RPC message or batch")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let mut all = Vec::new();
                while let Some(m) = seq.next_element::<Message>()? {
                    all.push(m);
                }
                Ok(Messages(all))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Messages, A::Error> {
                let one = Message::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Messages(vec![one]))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON-RPC params")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "name" {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    if name.is_some() {
                        return Err(de::Error::duplicate_field("name"));
                    }
                    name = Some(match map.next_value::<serde_json::Value>()? {
                        serde_json::Value::String(s) => Name::Text(s),
                        _ => Name::NotText,
                    });
                }
                Ok(Params { name })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Params { name: None })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Params, E> {
                Ok(Params { name: None })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> ToolScopes {
        ToolScopes::new(BTreeMap::from([
            ("delete".to_owned(), ScopeSet::parse("admin")),
            ("write".to_owned(), ScopeSet::parse("files write")),
        ]))
    }

    fn needed(body: &str) -> String {
        tools()
            .needed(&ScopeSet::parse("mcp"), &Operation::read(body.as_bytes()))
            .to_string()
    }

    #[test]
    fn a_tool_call_needs_its_tools_scopes_and_the_resources() {
        let call = |name: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}","arguments":{{"name":"x"}}}}}}"#
            )
        };
        assert_eq!(needed(&call("delete")), "admin mcp");
        assert_eq!(needed(&call("write")), "files mcp write");
        assert_eq!(
            needed(&call("echo")),
            "mcp",
            "a tool without scopes of its own"
        );
        assert_eq!(
            needed(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            "mcp"
        );
        assert_eq!(
            needed(r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":[1,2]}"#),
            "mcp"
        );
        let batch = format!("[{},{}]", call("delete"), call("write"));
        assert_eq!(
            needed(&batch),
            "admin files mcp write",
            "a batch needs them all"
        );
    }

    #[test]
    fn what_cannot_be_read_for_certain_needs_every_tool_scope() {
        let every = "admin files mcp write";
        for body in [
            "not json",
            "",
            r#"{"method":"tools/call","params":{"name":"echo","name":"delete"}}"#,
            r#"{"method":"tools/list","method":"tools/call","params":{"name":"delete"}}"#,
            r#"{"method":"tools/call","params":{"name":["delete"]}}"#,
            r#"{"method":"tools/call"}"#,
            r#"{"method":7}"#,
            r#"[{"method":"tools/list"}, 3]"#,
        ] {
            assert_eq!(needed(body), every, "{body}");
        }
    }

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

    #[test]
    fn tool_names() {
        assert!(is_tool_name("create_issue"));
        assert!(is_tool_name("files.read-v2"));
        assert!(!is_tool_name(""));
        assert!(!is_tool_name("a b"));
        assert!(!is_tool_name("a=b"));
        assert!(!is_tool_name(&"x".repeat(129)));
    }
}
