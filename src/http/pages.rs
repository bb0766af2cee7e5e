//! Server-rendered pages (consent, errors, development login, account) and the headers every
//! page and browser redirect carries.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// No scripts, no framing, no referrer. Deliberately no `form-action`: browsers apply it to the
/// whole redirect chain after the consent form, which would block the redirect to the client.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'";

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage {
    pub client_name: String,
    pub unverified_name: bool,
    pub server_name: String,
    pub client_host: Option<String>,
    pub redirect_host: String,
    pub loopback_only: bool,
    pub signed_in_as: Option<String>,
    /// What the person is asked to allow now.
    pub scopes: Vec<String>,
    /// What they allowed this client before (incremental consent): shown, not asked.
    pub already_allowed: Vec<String>,
    /// Confirming a login that came back in a browser without authgate's cookie.
    pub confirming: bool,
    /// The form's hidden field: `request` or `confirm`, and its value.
    pub field: &'static str,
    pub value: String,
    pub action: String,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub title: String,
    pub message: String,
    pub detail: Option<String>,
}

#[derive(Template)]
#[template(path = "dev_login.html")]
pub struct DevLoginPage {
    pub state: String,
    pub action: String,
}

/// `Referrer-Policy: same-origin`, not `no-referrer`: with no referrer at all, browsers send
/// `Origin: null` on our own form posts. Nothing goes to other sites either way.
pub fn secure_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
}

pub fn render(status: StatusCode, page: &impl Template) -> Response {
    let mut resp = match page.render() {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    };
    secure_headers(&mut resp);
    resp
}

/// A page with a title and a sentence (errors, and the signed-out notice).
pub fn message(status: StatusCode, title: &str, message: impl Into<String>) -> Response {
    render(
        status,
        &ErrorPage {
            title: title.to_owned(),
            message: message.into(),
            detail: None,
        },
    )
}

/// A browser redirect. 303 after a form POST (OAuth 2.1 §7.5.3), 302 after a GET.
pub fn redirect(status: StatusCode, location: &str) -> Response {
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(&mut resp);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_render_and_escape() {
        let page = ConsentPage {
            client_name: "<script>alert(1)</script>".into(),
            unverified_name: true,
            server_name: "mcp.example.com".into(),
            client_host: Some("claude.ai".into()),
            redirect_host: "claude.ai".into(),
            loopback_only: false,
            signed_in_as: None,
            scopes: vec!["Use the MCP server's tools".into()],
            already_allowed: vec!["Read <files>".into()],
            confirming: false,
            field: "request",
            value: "req\"id".into(),
            action: "/authorize/consent".into(),
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&#60;script&#62;"));
        assert!(html.contains("claude.ai"));
        assert!(!html.contains("req\"id"));
        assert!(html.contains("Already allowed") && html.contains("Read &#60;files&#62;"));
        let err = ErrorPage {
            title: "t".into(),
            message: "<b>".into(),
            detail: None,
        }
        .render()
        .unwrap();
        assert!(err.contains("&#60;b&#62;"));
        let dev = DevLoginPage {
            state: "s".into(),
            action: "/dev/login".into(),
        }
        .render()
        .unwrap();
        assert!(dev.contains("name=\"email\""));
    }
}
