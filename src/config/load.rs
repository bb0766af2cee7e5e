//! Reading settings: the environment and the `--config` file become one TOML table, which serde
//! reads into [`RawSettings`]. The struct is the only list of setting names: a variable is its
//! field name in upper case with the `AUTHGATE_` prefix (`database_url` is `DATABASE_URL`).
//!
//! Plain serde and the `toml` crate already in the build, rather than a layered loader such as
//! `figment`: the environment has one flat shape, the file one TOML table, so merging is a map
//! insert, and the error texts stay ours. `serde_path_to_error` (already compiled for axum) says
//! which key a serde error belongs to, so every failure can name its setting.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{ConfigError, err};

/// Every setting. Scalar settings are [`Setting`] text, validated by `Settings::from_raw`; tables
/// of the configuration file are typed here (a nested table is one more field). No
/// `#[serde(flatten)]`: `setting_keys` reads the field names serde passes to `deserialize_struct`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSettings {
    pub public_url: Setting,
    pub listen: Setting,
    pub database_url: Setting,
    pub scopes: Setting,
    pub allowed_redirects: Setting,
    pub allowed_redirect_schemes: Setting,
    pub register_rate_limit: Setting,
    pub token_rate_limit: Setting,
    pub authorize_rate_limit: Setting,
    pub revoke_rate_limit: Setting,
    pub account_rate_limit: Setting,
    pub callback_rate_limit: Setting,
    pub dcr_idle_ttl: Setting,
    pub cimd_test_hosts: Setting,
    pub cimd_test_ca_file: Setting,
    pub upstream_issuer: Setting,
    pub upstream_client_id: Setting,
    pub upstream_client_secret: Setting,
    pub upstream_auth_method: Setting,
    pub upstream_scopes: Setting,
    pub upstream_authorize_params: Setting,
    pub allowed_emails: Setting,
    pub allowed_domains: Setting,
    pub allow_any_user: Setting,
    pub access_token_ttl: Setting,
    pub refresh_token_idle_ttl: Setting,
    pub refresh_token_ttl: Setting,
    pub refresh_grace: Setting,
    pub session_ttl: Setting,
    pub mcp_upstream: Setting,
    pub mcp_upstream_timeout: Setting,
    pub mcp_upstream_token: Setting,
    pub mcp_session_ttl: Setting,
    pub mcp_max_body: Setting,
    pub allowed_hosts: Setting,
    pub allowed_origins: Setting,
    pub trusted_proxies: Setting,
    pub metrics_listen: Setting,
    pub log_format: Setting,
    pub shutdown_timeout: Setting,
    pub request_timeout: Setting,
    pub cimd: Setting,
    pub cimd_fallback: Setting,
    pub cors: Setting,
    pub key_encryption_key: Setting,
    pub key_publication_delay: Setting,
    pub token_exchange_clients: Setting,
    pub unlisted_tools: Setting,
    pub audit_retention: Setting,
    /// `[[resource]]` tables: protected MCP resources besides `/mcp`.
    pub resource: Vec<RawResource>,
    /// `[[tool]]` tables: the tool rules of the default `/mcp` resource.
    pub tool: Vec<RawTool>,
    /// `[[enterprise_issuer]]` tables: identity providers whose ID-JAGs authgate accepts.
    pub enterprise_issuer: Vec<RawEnterpriseIssuer>,
}

/// One `[[resource]]` table of the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [[resource]] table")]
pub struct RawResource {
    pub path: Option<String>,
    pub upstream: Option<String>,
    pub scopes: Vec<String>,
    /// `"header"`: the MCP server receives the user's upstream access token.
    pub upstream_token: Option<String>,
    /// `[[resource.tool]]` tables: this resource's tool rules.
    pub tool: Vec<RawTool>,
}

/// One `[[enterprise_issuer]]` table of the configuration file: an enterprise identity provider
/// whose Identity Assertion JWT Authorization Grants authgate accepts, and for whom.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "an [[enterprise_issuer]] table"
)]
pub struct RawEnterpriseIssuer {
    pub issuer: Option<String>,
    pub jwks_uri: Option<String>,
    pub client_ids: Vec<String>,
    pub resources: Vec<String>,
    pub same_users_as_upstream: bool,
    pub allow_public_clients: bool,
}

/// One `[[tool]]` or `[[resource.tool]]` table: a rule for the tools whose names match `name`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [[tool]] table")]
pub struct RawTool {
    pub name: Option<String>,
    pub scopes: Vec<String>,
    pub allow_users: Vec<String>,
    pub allow_domains: Vec<String>,
}

/// The text of one scalar setting. The environment only has strings; the file may also give a
/// number, a boolean or a list of strings, which is joined with commas as a variable would list
/// it. Blank text is unset, so a blank value in the file hides the variable.
#[derive(Default)]
pub(super) struct Setting(Option<String>);

impl Setting {
    fn text(s: impl Into<String>) -> Self {
        let s = s.into();
        Self((!s.trim().is_empty()).then_some(s))
    }

    pub(super) fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SettingVisitor)
    }
}

struct SettingVisitor;

impl<'de> Visitor<'de> for SettingVisitor {
    type Value = Setting;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number, boolean or list of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Setting, E> {
        Ok(Setting::text(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Setting, E> {
        Ok(Setting::text(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Setting, E> {
        Ok(Setting::text(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Setting, E> {
        Ok(Setting::text(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Setting, E> {
        Ok(Setting::text(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Setting, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element::<String>()? {
            entries.push(entry);
        }
        Ok(Setting::text(entries.join(",")))
    }
}

/// The raw values, from the environment (or [`RawConfig::set`]) and configuration files, before
/// validation.
#[derive(Default)]
pub struct RawConfig {
    /// By file key.
    env: BTreeMap<&'static str, String>,
    /// Names given to `set` that are no setting, refused by `Settings::from_raw`.
    unknown: Vec<String>,
    /// The files' tables, merged; checked against `RawSettings` when overlaid.
    file: toml::Table,
    resources: Vec<RawResource>,
}

impl RawConfig {
    /// Reads the settings' variables from an environment (passed in, so tests need not touch the
    /// process environment). Other variables are ignored.
    pub fn from_env<I: IntoIterator<Item = (String, String)>>(env: I) -> Self {
        let mut raw = Self::default();
        for (name, value) in env {
            if let Some(key) = key_of_variable(&name) {
                raw.env.insert(key, value);
            }
        }
        raw
    }

    /// Overlays a TOML document: its values win over the environment's. Unknown keys, at any
    /// level, are refused here, naming `origin` and the key.
    pub fn overlay_toml(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            err(origin, format!("not valid TOML: {}", e.message()))
        })?;
        let keys = setting_keys();
        if let Some(key) = table.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(err(origin, format!("unknown setting {key:?}")));
        }
        read(table.clone(), |path| match path {
            None => origin.to_owned(),
            Some(path) => format!("{origin}: {path}"),
        })?;
        for (key, value) in table {
            merge(&mut self.file, key, value);
        }
        Ok(())
    }

    pub fn add_resource(&mut self, resource: RawResource) {
        self.resources.push(resource);
    }

    /// Sets a variable by its environment name. A name that is no setting makes
    /// `Settings::from_raw` fail, naming it.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        match key_of_variable(name) {
            Some(key) => {
                self.env.insert(key, value.into());
            }
            None => self.unknown.push(name.to_owned()),
        }
    }

    /// The environment, then the files on top, read into one `RawSettings`.
    pub(super) fn settings(&self) -> Result<RawSettings, ConfigError> {
        if let Some(name) = self.unknown.first() {
            return Err(err(name, "is not an authgate setting"));
        }
        let mut table: toml::Table = self
            .env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), toml::Value::String(value.clone())))
            .collect();
        table.extend(self.file.clone());
        let mut settings = read(table, |path| match path {
            None => "settings".to_owned(),
            Some(path) => {
                let end = path.find(['.', '[']).unwrap_or(path.len());
                format!("{}{}", variable_name(&path[..end]), &path[end..])
            }
        })?;
        settings.resource.extend(self.resources.iter().cloned());
        Ok(settings)
    }
}

/// A second file's tables follow the first's, as if one document repeated `[[resource]]`;
/// anything else in it replaces the earlier value.
fn merge(file: &mut toml::Table, key: String, value: toml::Value) {
    let all_tables = |items: &[toml::Value]| items.iter().all(toml::Value::is_table);
    match (file.get_mut(&key), value) {
        (Some(toml::Value::Array(old)), toml::Value::Array(new))
            if all_tables(old) && all_tables(&new) =>
        {
            old.extend(new);
        }
        (_, value) => {
            file.insert(key, value);
        }
    }
}

/// Deserializes a table into `RawSettings`; an error names the setting it belongs to (`name` turns
/// the key path, such as `listen` or `resource[1].scopes`, into a name; `None` is the whole table).
fn read(
    table: toml::Table,
    name: impl Fn(Option<&str>) -> String,
) -> Result<RawSettings, ConfigError> {
    serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        let path = (path != ".").then_some(path.as_str());
        err(&name(path), without_value(e.inner().message()))
    })
}

/// serde's own messages quote the offending value (`invalid type: string "hunter2", expected a
/// sequence`), and a value may be a secret: only what was expected is kept.
fn without_value(message: &str) -> String {
    const QUOTING: [&str; 3] = ["invalid type:", "invalid value:", "unknown variant"];
    if !QUOTING.iter().any(|p| message.starts_with(p)) {
        return message.to_owned();
    }
    match message.rsplit_once(", expected ") {
        Some((_, expected)) => format!("must be {expected}"),
        None => "has a value of the wrong type".to_owned(),
    }
}

/// The variable of a file key.
pub(super) fn variable_name(key: &str) -> String {
    match key {
        // The usual name, shared with sqlx and other tools.
        "database_url" => "DATABASE_URL".to_owned(),
        _ => format!("AUTHGATE_{}", key.to_ascii_uppercase()),
    }
}

fn key_of_variable(name: &str) -> Option<&'static str> {
    setting_keys()
        .iter()
        .copied()
        .find(|key| variable_name(key) == name)
}

/// The field names of `RawSettings`, as serde derived them.
pub(super) fn setting_keys() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    // The probe always fails, after it has seen the names.
    let _ = RawSettings::deserialize(FieldNames(&mut keys));
    keys
}

/// A deserializer that only collects a struct's field names: serde's derived code passes them to
/// `deserialize_struct` before reading anything.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only a struct has field names"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names collected"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}
