//! authgate's two cookies: a browser-binding value (ties an authorization request to the browser
//! that started it) and the login session. Both hold random values whose hashes are stored.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::config::Settings;
use crate::oauth::secrets::{SecretHash, SecretKind};
use crate::state::AppState;
use crate::store::SessionRecord;

pub struct CookieNames {
    pub browser: &'static str,
    pub session: &'static str,
    secure: bool,
}

/// `__Host-` names need `Secure`, which only an https public URL can honour.
pub fn names(settings: &Settings) -> CookieNames {
    if settings.public_url.scheme() == "https" {
        CookieNames {
            browser: "__Host-authgate-browser",
            session: "__Host-authgate-session",
            secure: true,
        }
    } else {
        CookieNames {
            browser: "authgate-browser",
            session: "authgate-session",
            secure: false,
        }
    }
}

pub fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

pub fn set(resp: &mut Response, names: &CookieNames, name: &str, value: &str, max_age: i64) {
    let secure = if names.secure { "; Secure" } else { "" };
    let cookie =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The logged-in session of this browser, if any and still valid.
pub async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<SessionRecord>, crate::store::StoreError> {
    let names = names(&state.settings);
    let Some(raw) = read(headers, names.session) else {
        return Ok(None);
    };
    let hash = SecretHash::of(SecretKind::Session, raw);
    let session = state.store.get_session(hash.as_str()).await?;
    Ok(session.filter(|s| s.expires_at > state.clock.now()))
}

pub fn browser_hash(value: &str) -> String {
    SecretHash::of(
        SecretKind::PendingAuthorization,
        &format!("browser:{value}"),
    )
    .as_str()
    .to_owned()
}

/// The browser-binding value of this browser: its cookie, or a new value that `set_on` sets.
pub struct BrowserBinding {
    value: String,
    new: bool,
}

impl BrowserBinding {
    pub fn of(state: &AppState, headers: &HeaderMap) -> Self {
        let names = names(&state.settings);
        match read(headers, names.browser) {
            Some(v) => Self {
                value: v.to_owned(),
                new: false,
            },
            None => Self {
                value: state.random.token(),
                new: true,
            },
        }
    }

    pub fn hash(&self) -> String {
        browser_hash(&self.value)
    }

    /// Sets the cookie on `resp` if the browser did not have one yet.
    pub fn set_on(&self, state: &AppState, resp: &mut Response) {
        if self.new {
            let names = names(&state.settings);
            set(resp, &names, names.browser, &self.value, 400 * 86_400);
        }
    }
}

/// Sets a new login session's cookie.
pub fn set_session(state: &AppState, resp: &mut Response, value: &str) {
    let names = names(&state.settings);
    set(
        resp,
        &names,
        names.session,
        value,
        state.settings.session_ttl,
    );
}
