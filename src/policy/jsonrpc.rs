//! Reading the JSON-RPC messages of an MCP request for the policy, and filtering `tools/list`
//! results. Bodies are read strictly: a key given twice is refused, because authgate keeping the
//! last `method` or `name` while the MCP server keeps the first would let a call through that was
//! never checked.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

pub const TOOLS_CALL: &str = "tools/call";
pub const TOOLS_LIST: &str = "tools/list";

/// JSON-RPC 2.0 error codes authgate answers with itself.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;
/// MCP 2026-07-28 `HeaderMismatch`: the mirrored headers disagree with the body, or are malformed.
pub const HEADER_MISMATCH: i64 = -32020;

/// What the policy needs of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Present on requests (and responses); absent on notifications.
    pub id: Option<Value>,
    /// Absent on the client's responses to server requests.
    pub method: Option<String>,
    /// `params.name`, when it is a string.
    pub name: Option<String>,
    /// `params.uri`, when it is a string.
    pub uri: Option<String>,
}

impl Message {
    pub fn is(&self, method: &str) -> bool {
        self.method.as_deref() == Some(method)
    }

    /// The body value `Mcp-Name` mirrors.
    fn target(&self) -> Option<&str> {
        match self.method.as_deref() {
            Some("resources/read") => self.uri.as_deref(),
            Some(TOOLS_CALL | "prompts/get") => self.name.as_deref(),
            _ => self.name.as_deref().or(self.uri.as_deref()),
        }
    }

    fn needs_name_header(&self) -> bool {
        matches!(
            self.method.as_deref(),
            Some(TOOLS_CALL | "prompts/get" | "resources/read")
        ) && self.target().is_some()
    }
}

/// A request body: nothing, one message, or a batch (protocol versions before 2025-06-18).
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Empty,
    Single(Message),
    Batch(Vec<Message>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not JSON, or JSON with a key given twice.
    Parse,
    /// JSON, but not a JSON-RPC message or batch.
    Invalid,
}

impl Malformed {
    pub fn code(self) -> i64 {
        match self {
            Self::Parse => PARSE_ERROR,
            Self::Invalid => INVALID_REQUEST,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::Parse => "Parse error: the body is not JSON, or repeats a key",
            Self::Invalid => "Invalid Request: the body is not a JSON-RPC message or batch",
        }
    }
}

impl Inbound {
    pub fn parse(body: &[u8]) -> Result<Self, Malformed> {
        if body.is_empty() {
            return Ok(Self::Empty);
        }
        let Strict(value) = serde_json::from_slice(body).map_err(|_| Malformed::Parse)?;
        match value {
            Value::Object(m) => Ok(Self::Single(message(&m)?)),
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|v| v.as_object().ok_or(Malformed::Invalid).and_then(message))
                .collect::<Result<_, _>>()
                .map(Self::Batch),
            _ => Err(Malformed::Invalid),
        }
    }

    pub fn messages(&self) -> &[Message] {
        match self {
            Self::Empty => &[],
            Self::Single(m) => std::slice::from_ref(m),
            Self::Batch(ms) => ms,
        }
    }

    pub fn is_batch(&self) -> bool {
        matches!(self, Self::Batch(_))
    }
}

fn message(m: &Map<String, Value>) -> Result<Message, Malformed> {
    let method = match m.get("method") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Malformed::Invalid),
    };
    let id = match m.get("id") {
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(v.clone()),
        None => None,
        Some(_) => return Err(Malformed::Invalid),
    };
    let params = match m.get("params") {
        None => None,
        Some(Value::Object(p)) => Some(p),
        Some(Value::Array(_)) => None,
        Some(_) => return Err(Malformed::Invalid),
    };
    let text = |key: &str| {
        params
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(Message {
        id,
        method,
        name: text("name"),
        uri: text("uri"),
    })
}

/// A JSON value that refuses objects with a repeated key, at any depth.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON without repeated keys")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.insert(key, value).is_some() {
                return Err(de::Error::custom("a key is repeated"));
            }
        }
        Ok(Value::Object(object))
    }
}

/// One of the mirrored request headers, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header<'a> {
    Absent,
    One(&'a [u8]),
    Several,
}

/// Why `Mcp-Method`/`Mcp-Name` were refused (the text goes into the JSON-RPC error; it never
/// quotes the values, which are the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch(pub &'static str);

/// The 2026-07-28 transport mirrors `method` and `params.name` (or `params.uri`) into headers
/// that intermediaries route on. authgate decides from the body, so headers it did not check
/// must not reach a component that trusts them: present ones must match the body exactly (after
/// decoding the `=?base64?...?=` form). Absent ones are fine: older clients send none.
pub fn check_headers(
    method: Header<'_>,
    name: Header<'_>,
    inbound: &Inbound,
) -> Result<(), Mismatch> {
    if method == Header::Absent && name == Header::Absent {
        return Ok(());
    }
    let Inbound::Single(msg) = inbound else {
        return Err(Mismatch(
            "Header mismatch: Mcp-Method and Mcp-Name describe one message, and the body is not one",
        ));
    };
    match method {
        Header::Absent => {}
        Header::Several => return Err(Mismatch("Header mismatch: Mcp-Method is repeated")),
        Header::One(v) => {
            if msg.method.as_deref().map(str::as_bytes) != Some(v) {
                return Err(Mismatch(
                    "Header mismatch: Mcp-Method does not match the body's method",
                ));
            }
        }
    }
    match name {
        Header::Absent if method != Header::Absent && msg.needs_name_header() => Err(Mismatch(
            "Header mismatch: Mcp-Name is required for this method",
        )),
        Header::Absent => Ok(()),
        Header::Several => Err(Mismatch("Header mismatch: Mcp-Name is repeated")),
        Header::One(v) => match (decode_header_value(v), msg.target()) {
            (None, _) => Err(Mismatch("Header mismatch: Mcp-Name is not a valid value")),
            (Some(h), Some(b)) if h == b => Ok(()),
            _ => Err(Mismatch(
                "Header mismatch: Mcp-Name does not match the body's name",
            )),
        },
    }
}

/// A mirrored header's value: plain visible ASCII, or `=?base64?<standard base64>?=` of UTF-8.
pub fn decode_header_value(raw: &[u8]) -> Option<String> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    if let Some(inner) = raw
        .strip_prefix(b"=?base64?")
        .and_then(|r| r.strip_suffix(b"?="))
    {
        return String::from_utf8(ENGINE.decode(inner).ok()?).ok();
    }
    if raw.iter().all(|b| (0x20..=0x7e).contains(b) || *b == b'\t') {
        return String::from_utf8(raw.to_vec()).ok();
    }
    None
}

/// Which responses carry a `tools/list` result to filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Lists {
    /// Answers to these request ids (a POST whose body had `tools/list` requests).
    Ids(Vec<Value>),
    /// Any response whose result has a `tools` array (a stream resumed by GET, which may replay
    /// answers to requests authgate no longer knows).
    AnyResult,
}

impl Lists {
    fn covers(&self, response: &Map<String, Value>) -> bool {
        match self {
            Self::Ids(ids) => response.get("id").is_some_and(|id| ids.contains(id)),
            Self::AnyResult => true,
        }
    }
}

/// Removes the tools `keep` refuses from the `tools/list` results in `doc` (one message or a
/// batch of them); `true` when anything was looked at and may have changed.
pub fn filter_tools_lists(
    doc: &mut Value,
    which: &Lists,
    keep: &mut dyn FnMut(&str) -> bool,
) -> bool {
    match doc {
        Value::Array(items) => {
            let mut any = false;
            for item in items {
                any |= filter_one(item, which, keep);
            }
            any
        }
        other => filter_one(other, which, keep),
    }
}

fn filter_one(msg: &mut Value, which: &Lists, keep: &mut dyn FnMut(&str) -> bool) -> bool {
    let Value::Object(m) = msg else {
        return false;
    };
    if m.contains_key("method") || !which.covers(m) {
        return false;
    }
    let Some(Value::Array(tools)) = m.get_mut("result").and_then(|r| r.get_mut("tools")) else {
        return false;
    };
    // A tool without a name cannot be judged, so it is not shown.
    tools.retain(|t| {
        t.get("name")
            .and_then(Value::as_str)
            .is_some_and(&mut *keep)
    });
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn single(body: &str) -> Message {
        match Inbound::parse(body.as_bytes()).unwrap() {
            Inbound::Single(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_and_batches() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"name":"x"}}}"#,
        );
        assert_eq!(m.id, Some(json!(7)));
        assert!(m.is(TOOLS_CALL));
        assert_eq!(m.name.as_deref(), Some("echo"));
        let n = single(r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":5}}"#);
        assert_eq!((n.id, n.name), (None, None));
        let r = single(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#);
        assert_eq!(r.method, None);
        let batch = Inbound::parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/x"}]"#,
        )
        .unwrap();
        assert!(batch.is_batch());
        assert_eq!(batch.messages().len(), 2);
        assert_eq!(Inbound::parse(b"").unwrap(), Inbound::Empty);
    }

    #[test]
    fn malformed_bodies() {
        for (body, why) in [
            ("{", Malformed::Parse),
            ("  ", Malformed::Parse),
            ("\u{feff}{}", Malformed::Parse),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"x"}}"#,
                Malformed::Parse,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"drop"}}"#,
                Malformed::Parse,
            ),
            (
                r#"{"id":1,"method":"tools/call","params":{"name":"a","arguments":{"k":1,"k":2}}}"#,
                Malformed::Parse,
            ),
            ("[]", Malformed::Invalid),
            ("[1]", Malformed::Invalid),
            ("\"tools/call\"", Malformed::Invalid),
            (r#"{"id":1,"method":["tools/call"]}"#, Malformed::Invalid),
            (r#"{"id":{},"method":"tools/list"}"#, Malformed::Invalid),
            (
                r#"{"id":1,"method":"tools/call","params":"echo"}"#,
                Malformed::Invalid,
            ),
        ] {
            assert_eq!(Inbound::parse(body.as_bytes()), Err(why), "{body}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(Inbound::parse(deep.as_bytes()), Err(Malformed::Parse));
    }

    #[test]
    fn mirrored_headers_must_match() {
        let call = Inbound::Single(single(
            r#"{"id":1,"method":"tools/call","params":{"name":"get_weather"}}"#,
        ));
        let one = |v: &'static str| Header::One(v.as_bytes());
        assert_eq!(check_headers(Header::Absent, Header::Absent, &call), Ok(()));
        assert_eq!(
            check_headers(one("tools/call"), one("get_weather"), &call),
            Ok(())
        );
        assert_eq!(
            check_headers(one("tools/call"), one("=?base64?Z2V0X3dlYXRoZXI=?="), &call),
            Ok(()),
            "base64 form"
        );
        assert_eq!(
            check_headers(Header::Absent, one("get_weather"), &call),
            Ok(())
        );
        for (method, name) in [
            (one("tools/list"), one("get_weather")),
            (one("Tools/call"), one("get_weather")),
            (one("tools/call"), one("delete_all")),
            (one("tools/call"), one("Get_weather")),
            (one("tools/call"), one("=?base64?ZGVsZXRlX2FsbA==?=")),
            (one("tools/call"), one("=?base64?!!!?=")),
            (one("tools/call"), Header::Absent),
            (Header::Several, one("get_weather")),
            (one("tools/call"), Header::Several),
        ] {
            assert!(
                check_headers(method, name, &call).is_err(),
                "{method:?} {name:?}"
            );
        }
        let non_ascii = Header::One("caf\u{e9}".as_bytes());
        assert!(check_headers(Header::Absent, non_ascii, &call).is_err());
        let list = Inbound::Single(single(r#"{"id":1,"method":"tools/list"}"#));
        assert_eq!(
            check_headers(one("tools/list"), Header::Absent, &list),
            Ok(())
        );
        assert!(check_headers(one("tools/list"), one("x"), &list).is_err());
        let read = Inbound::Single(single(
            r#"{"id":1,"method":"resources/read","params":{"uri":"file:///a","name":"b"}}"#,
        ));
        assert_eq!(
            check_headers(one("resources/read"), one("file:///a"), &read),
            Ok(())
        );
        assert!(check_headers(one("resources/read"), one("b"), &read).is_err());
        let batch = Inbound::parse(br#"[{"id":1,"method":"tools/list"}]"#).unwrap();
        assert!(check_headers(one("tools/list"), Header::Absent, &batch).is_err());
        assert_eq!(
            check_headers(Header::Absent, Header::Absent, &batch),
            Ok(())
        );
    }

    #[test]
    fn header_values_decode() {
        assert_eq!(decode_header_value(b"echo").as_deref(), Some("echo"));
        assert_eq!(
            decode_header_value(b"=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, \u{4e16}\u{754c}")
        );
        assert_eq!(
            decode_header_value(b"=?base64?SGVsbG8sIOS4lueVjA?=").as_deref(),
            Some("Hello, \u{4e16}\u{754c}"),
            "padding optional"
        );
        assert_eq!(decode_header_value(b"=?base64?/w==?="), None, "not UTF-8");
        assert_eq!(decode_header_value(&[0x63, 0xe9]), None);
    }

    #[test]
    fn tools_lists_are_filtered_by_request_id_or_shape() {
        let mut doc = json!({"jsonrpc":"2.0","id":3,"result":{"tools":[
            {"name":"echo"},{"name":"payroll","inputSchema":{}},{"title":"no name"},{"name":7}
        ],"nextCursor":"c"}});
        let mut keep = |n: &str| n != "payroll";
        assert!(filter_tools_lists(
            &mut doc,
            &Lists::Ids(vec![json!(3)]),
            &mut keep
        ));
        assert_eq!(
            doc,
            json!({"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"}],"nextCursor":"c"}})
        );
        let untouched = json!({"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"payroll"}]}});
        let mut other = untouched.clone();
        assert!(!filter_tools_lists(
            &mut other,
            &Lists::Ids(vec![json!(3), json!("4")]),
            &mut keep
        ));
        assert_eq!(other, untouched, "another id (4 is not \"4\")");
        assert!(filter_tools_lists(&mut other, &Lists::AnyResult, &mut keep));
        assert_eq!(other["result"]["tools"], json!([]));
        let mut batch = json!([
            {"jsonrpc":"2.0","id":1,"result":{"content":[]}},
            {"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"payroll"},{"name":"echo"}]}}
        ]);
        assert!(filter_tools_lists(
            &mut batch,
            &Lists::Ids(vec![json!(2)]),
            &mut keep
        ));
        assert_eq!(batch[1]["result"]["tools"], json!([{"name":"echo"}]));
        assert_eq!(
            batch[0],
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[]}})
        );
        let mut request =
            json!({"jsonrpc":"2.0","id":2,"method":"x","result":{"tools":[{"name":"payroll"}]}});
        assert!(!filter_tools_lists(
            &mut request,
            &Lists::AnyResult,
            &mut keep
        ));
    }
}
