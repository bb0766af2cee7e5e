//! The syntaxes settings share: lists, booleans, rates, sizes and durations. Each error names the
//! variable and shows the expected form, never the value.

use super::load::Setting;
use super::{ConfigError, RateLimit, err};

/// Entries separated by commas, spaces or line breaks.
pub(super) fn split_list(raw: &str) -> Vec<String> {
    raw.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn parse_bool(var: &str, raw: &Setting, default: bool) -> Result<bool, ConfigError> {
    match raw.get().map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(_) => Err(err(var, "must be true or false")),
    }
}

/// `N/sec`, `N/min` or `N/hour`: N events per period, also the burst.
pub(super) fn parse_rate(var: &str, raw: &str) -> Result<RateLimit, ConfigError> {
    let bad = || err(var, "must look like 300/min (periods: sec, min, hour)");
    let (n, period) = raw.trim().split_once('/').ok_or_else(bad)?;
    let burst: u32 = n.trim().parse().map_err(|_| bad())?;
    let per_seconds = match period.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        _ => return Err(bad()),
    };
    if burst == 0 {
        return Err(err(var, "must allow at least one request"));
    }
    Ok(RateLimit { burst, per_seconds })
}

/// A size setting, or its default (written in the same syntax).
pub(super) fn size(var: &str, raw: &Setting, default: &str) -> Result<usize, ConfigError> {
    parse_size(var, raw.get().unwrap_or(default))
}

/// A size in bytes: `4194304`, `16KiB`, `4MiB` (also `k`/`kb`, `m`/`mb`, binary units).
fn parse_size(var: &str, raw: &str) -> Result<usize, ConfigError> {
    let raw = raw.trim();
    let bad = || {
        err(
            var,
            "must be a size such as 16KiB, 4MiB or a number of bytes",
        )
    };
    let (digits, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, ""),
    };
    let n: usize = digits.parse().map_err(|_| bad())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(bad)
}

/// A duration in seconds: `90`, `90s`, `15m`, `24h` or `7d`.
pub fn parse_duration(var: &str, raw: &str) -> Result<i64, ConfigError> {
    let raw = raw.trim();
    let bad = || err(var, "must be a duration such as 3600, 90s, 15m, 24h or 7d");
    let (digits, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(bad)
}

/// A duration setting, or its default (written in the same syntax).
pub(super) fn duration(var: &str, raw: &Setting, default: &str) -> Result<i64, ConfigError> {
    parse_duration(var, raw.get().unwrap_or(default))
}
