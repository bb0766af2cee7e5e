//! A scripted browser: a cookie jar, no automatic redirects, and just enough HTML reading to
//! submit the forms of authgate's pages and of the test OpenID provider.

use std::collections::HashMap;

use reqwest::header::LOCATION;

#[derive(Clone)]
pub struct Browser {
    pub http: reqwest::Client,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .build()
                .unwrap(),
        }
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.unwrap()
    }

    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.http.post(url).form(form);
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.send().await.unwrap()
    }
}

pub fn location(resp: &reqwest::Response) -> String {
    let base = resp.url().clone();
    let loc = resp
        .headers()
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap();
    base.join(loc).unwrap().to_string()
}

/// The `action` of the first form, resolved against `base`.
pub fn form_action(html: &str, base: &str) -> String {
    let form = &html[html.find("<form").expect("a form")..];
    let action = attr(&form[..form.find('>').unwrap()], "action").unwrap_or_default();
    url::Url::parse(base)
        .unwrap()
        .join(&action)
        .unwrap()
        .to_string()
}

/// The named inputs of the first form (hidden fields and pre-filled values).
pub fn form_inputs(html: &str) -> HashMap<String, String> {
    let start = html.find("<form").expect("a form");
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    let form = &html[start..end];
    let mut out = HashMap::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let tag_end = rest[i..].find('>').unwrap() + i;
        let tag = &rest[i..tag_end];
        if let Some(name) = attr(tag, "name") {
            out.insert(name, attr(tag, "value").unwrap_or_default());
        }
        rest = &rest[tag_end..];
    }
    out
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let i = tag.find(&needle)? + needle.len();
    let j = tag[i..].find('"')? + i;
    Some(html_unescape(&tag[i..j]))
}

fn html_unescape(s: &str) -> String {
    s.replace("&#38;", "&")
        .replace("&amp;", "&")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
}
