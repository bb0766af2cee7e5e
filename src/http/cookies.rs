//! authgate's two cookies: a browser-binding value (ties a pending request to the browser that
//! started it) and the login session. Both hold random values whose hashes are stored.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use cookie::{Cookie, SameSite};

use crate::config::Settings;
use crate::oauth::secrets::{Hashed, kind};
use crate::random::Random;

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

/// Our values are 43 characters; anything far longer is not one of ours.
const MAX_VALUE_LEN: usize = 128;

/// The value of cookie `name`, if the browser sent one.
pub fn read(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= MAX_VALUE_LEN)
}

/// Sets cookie `name` (`HttpOnly`, `SameSite=Lax` so that it comes back from the upstream
/// login's top-level redirect, `Secure` on https); a `max_age` of 0 deletes it.
pub fn set(resp: &mut Response, names: &CookieNames, name: &str, value: &str, max_age: i64) {
    let cookie = Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age))
        .secure(names.secure)
        .build();
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The session cookie's value, if any.
pub fn session(settings: &Settings, headers: &HeaderMap) -> Option<String> {
    read(headers, names(settings).session)
}

/// Sets a new login session's cookie.
pub fn set_session(settings: &Settings, resp: &mut Response, value: &str) {
    let names = names(settings);
    set(resp, &names, names.session, value, settings.session_ttl);
}

/// The browser-binding cookie's value, hashed, if the browser has one.
pub fn browser(settings: &Settings, headers: &HeaderMap) -> Option<Hashed<kind::Browser>> {
    read(headers, names(settings).browser).map(|v| Hashed::of(&v))
}

/// The browser-binding value of this browser: its cookie, or a new value that `set_on` sets.
pub struct BrowserBinding {
    value: String,
    new: bool,
}

impl BrowserBinding {
    pub fn of(settings: &Settings, headers: &HeaderMap, random: &dyn Random) -> Self {
        match read(headers, names(settings).browser) {
            Some(value) => Self { value, new: false },
            None => Self {
                value: random.token(),
                new: true,
            },
        }
    }

    pub fn hash(&self) -> Hashed<kind::Browser> {
        Hashed::of(&self.value)
    }

    /// Sets the cookie on `resp` if the browser did not have one yet.
    pub fn set_on(&self, settings: &Settings, resp: &mut Response) {
        if self.new {
            let names = names(settings);
            set(resp, &names, names.browser, &self.value, 400 * 86_400);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_cookie_among_several_headers() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; authgate-session=xyz"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(read(&h, "authgate-session").as_deref(), Some("xyz"));
        assert_eq!(read(&h, "b").as_deref(), Some("2"));
        assert_eq!(read(&h, "c"), None);
        let mut long = HeaderMap::new();
        let value = format!("s={}", "x".repeat(200));
        long.insert(header::COOKIE, HeaderValue::from_str(&value).unwrap());
        assert_eq!(read(&long, "s"), None, "not one of ours");
    }
}
