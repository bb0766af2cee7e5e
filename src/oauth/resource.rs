//! RFC 8707 resource indicators, read leniently: clients differ in case, trailing slashes, and
//! some omit the parameter or send only the origin.

use url::Url;

use super::{ErrorCode, OAuthError};

/// The canonical form used for comparison: lower-case scheme and host, default port dropped, no
/// query or fragment, no trailing slash.
pub fn canonical(raw: &str) -> Option<String> {
    let url = Url::parse(raw.trim()).ok()?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return None;
    }
    let mut out = format!("{}://{}", url.scheme(), url.host_str()?);
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path().trim_end_matches('/'));
    Some(out)
}

/// Picks the protected resource a request is for. `resources` are the canonical URIs authgate
/// protects, the default first. A missing `resource` or the bare origin means the default.
pub fn select(requested: Option<&str>, resources: &[String]) -> Result<String, OAuthError> {
    let default = resources.first().ok_or_else(|| {
        OAuthError::new(ErrorCode::ServerError, "no protected resource configured")
    })?;
    let Some(raw) = requested.filter(|r| !r.is_empty()) else {
        return Ok(default.clone());
    };
    let foreign = || {
        OAuthError::new(
            ErrorCode::InvalidTarget,
            "the requested resource is not served by this authorization server",
        )
    };
    let wanted = canonical(raw).ok_or_else(foreign)?;
    if let Some(r) = resources
        .iter()
        .find(|r| canonical(r).as_deref() == Some(wanted.as_str()))
    {
        return Ok(r.clone());
    }
    let default_origin = Url::parse(default)
        .ok()
        .map(|u| u.origin().ascii_serialization());
    if default_origin.as_deref() == Some(wanted.as_str()) {
        return Ok(default.clone());
    }
    Err(foreign())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_matching() {
        let ours = vec!["https://mcp.example.com/mcp".to_owned()];
        for ok in [
            None,
            Some(""),
            Some("https://mcp.example.com/mcp"),
            Some("HTTPS://MCP.Example.com/mcp"),
            Some("https://mcp.example.com/mcp/"),
            Some("https://mcp.example.com:443/mcp"),
            Some("https://mcp.example.com/"),
            Some("https://mcp.example.com"),
            Some("https://mcp.example.com/mcp?x=1"),
        ] {
            assert_eq!(select(ok, &ours).unwrap(), ours[0], "{ok:?}");
        }
        for bad in [
            "https://other.example.com/mcp",
            "https://mcp.example.com/other",
            "http://mcp.example.com/mcp",
            "https://mcp.example.com:8443/mcp",
            "not a url",
        ] {
            assert_eq!(
                select(Some(bad), &ours).unwrap_err().code,
                ErrorCode::InvalidTarget,
                "{bad}"
            );
        }
    }
}
