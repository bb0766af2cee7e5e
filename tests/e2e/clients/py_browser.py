"""A scripted browser for OAuth authorization flows, Python standard library only.

The Python twin of browser.mjs: follows redirects by hand (Location resolved against the URL that
answered), keeps cookies in `http.cookiejar` (Domain, Path, expiry, Secure; ports ignored, as
browsers do), submits the form of each HTML page the way a consenting user would (authgate's
consent page: approve; authgate's dev login: `email`; the test IdP: `login` + `password`, then its
consent form), sends `Origin: <origin of the page>` with each form POST, and stops at the first URL
starting with `stop_prefix` (the client's redirect URI), which it returns without fetching.

    from py_browser import walk
    url = walk(authorize_url, stop_prefix="http://127.0.0.1:5555/callback", login="ann@example.test")

CLI: python py_browser.py <authorizeUrl> <stopPrefix>  (hops on stderr, the final URL on stdout)
"""

from __future__ import annotations

import html
import http.cookiejar
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

APPROVE = re.compile(r"\b(approve|allow|accept|authori[sz]e|confirm|consent|continue|yes|grant|sign ?in|log ?in|submit)\b", re.I)
REFUSE = re.compile(r"\b(deny|reject|refuse|cancel|abort|decline|no)\b", re.I)
USER_FIELDS = re.compile(r"^(login|username|user|email|user_?name|identifier)$", re.I)


class _NoRedirectsNoErrors(urllib.request.HTTPErrorProcessor):
    """Hand every response back as it is: no automatic redirects, no exceptions for 3xx/4xx/5xx."""

    def http_response(self, request, response):
        return response

    https_response = http_response


def new_jar() -> http.cookiejar.CookieJar:
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(rfc2965=False))


def _opener(jar: http.cookiejar.CookieJar) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirectsNoErrors())


def _attrs(tag_body: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in re.finditer(r"""([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?""", tag_body):
        val = m.group(2) if m.group(2) is not None else m.group(3) if m.group(3) is not None else m.group(4) or ""
        out[m.group(1).lower()] = html.unescape(val)
    return out


@dataclass
class Form:
    action: str
    method: str
    inputs: list[dict] = field(default_factory=list)  # {name, type, value, checked}
    buttons: list[dict] = field(default_factory=list)  # {name, value, label}


_CONTROLS = re.compile(
    r"<button\b([^>]*)>(.*?)</button\s*>|<input\b([^>]*)>|<textarea\b([^>]*)>(.*?)</textarea\s*>|<select\b([^>]*)>(.*?)</select\s*>",
    re.I | re.S,
)


def parse_forms(page: str, page_url: str) -> list[Form]:
    forms = []
    for fm in re.finditer(r"<form\b([^>]*)>(.*?)</form\s*>", page, re.I | re.S):
        a = _attrs(fm.group(1))
        form = Form(
            action=urllib.parse.urljoin(page_url, a.get("action") or page_url),
            method=(a.get("method") or "get").upper(),
        )
        for m in _CONTROLS.finditer(fm.group(2)):
            if m.group(1) is not None:
                b = _attrs(m.group(1))
                if (b.get("type") or "submit").lower() == "submit":
                    label = html.unescape(re.sub(r"<[^>]*>", "", m.group(2))).strip()
                    form.buttons.append({"name": b.get("name"), "value": b.get("value", ""), "label": label})
            elif m.group(3) is not None:
                i = _attrs(m.group(3))
                typ = (i.get("type") or "text").lower()
                if typ in ("submit", "image"):
                    form.buttons.append({"name": i.get("name"), "value": i.get("value", ""), "label": i.get("value", "")})
                elif i.get("name") and typ not in ("button", "reset", "file") and "disabled" not in i:
                    form.inputs.append({"name": i["name"], "type": typ, "value": i.get("value", ""), "checked": "checked" in i})
            elif m.group(4) is not None:
                t = _attrs(m.group(4))
                if t.get("name"):
                    form.inputs.append({"name": t["name"], "type": "textarea", "value": html.unescape(m.group(5)), "checked": False})
            else:
                s = _attrs(m.group(6))
                options = []
                for o in re.finditer(r"<option\b([^>]*)>(.*?)(?=<option\b|$)", m.group(7), re.I | re.S):
                    oa = _attrs(o.group(1))
                    value = oa["value"] if "value" in oa else html.unescape(re.sub(r"<[^>]*>", "", o.group(2))).strip()
                    options.append((value, "selected" in oa))
                chosen = next((o for o in options if o[1]), options[0] if options else None)
                if s.get("name") and chosen:
                    form.inputs.append({"name": s["name"], "type": "select", "value": chosen[0], "checked": False})
        forms.append(form)
    return forms


def fill_form(form: Form, login: str, password: str) -> list[tuple[str, str]]:
    """The fields a consenting user sends: filled-in login fields, hidden values, the approve button."""
    body: list[tuple[str, str]] = []
    for i in form.inputs:
        if i["type"] in ("checkbox", "radio"):
            if i["checked"]:
                body.append((i["name"], i["value"] or "on"))
        elif i["type"] == "password":
            body.append((i["name"], password))
        elif i["type"] != "hidden" and USER_FIELDS.match(i["name"]):
            body.append((i["name"], login))
        else:
            body.append((i["name"], i["value"]))

    def text(b: dict) -> str:
        return f"{b['name'] or ''} {b['value']} {b['label']}"

    button = next((b for b in form.buttons if APPROVE.search(text(b)) and not REFUSE.search(f"{b['value']} {b['label']}")), None)
    button = button or next((b for b in form.buttons if not REFUSE.search(text(b))), None)
    if form.buttons and button is None:
        raise RuntimeError(f"form {form.action}: no approving submit button among {form.buttons}")
    if button and button["name"]:
        body.append((button["name"], button["value"]))
    return body


def _pick(forms: list[Form]) -> Form:
    return next((f for f in forms if f.method == "POST" and (f.inputs or f.buttons)), forms[0])


def _snippet(page: str) -> str:
    page = re.sub(r"<style.*?</style>", "", page, flags=re.S | re.I)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", page)).strip()[:400]


def walk(
    authorize_url: str,
    stop_prefix: str | Callable[[str], bool],
    login: str | None = None,
    password: str | None = None,
    jar: http.cookiejar.CookieJar | None = None,
    max_steps: int = 30,
    on_hop: Callable[[str], None] | None = None,
    timeout: float = 30.0,
) -> str:
    """Drive `authorize_url` to the client's redirect URI; return that URL (code/state/iss or error)."""
    login = login if login is not None else os.environ.get("LOGIN_USER", "ann@example.test")
    password = password if password is not None else os.environ.get("LOGIN_PASSWORD", "secret")
    jar = jar if jar is not None else new_jar()
    stop = stop_prefix if callable(stop_prefix) else (lambda u: u.startswith(str(stop_prefix)))
    hop = on_hop or (lambda s: None)
    opener = _opener(jar)

    method, url, body, origin = "GET", authorize_url, None, None
    for _ in range(max_steps):
        if stop(url):
            return url
        req = urllib.request.Request(url, data=body, method=method)
        req.add_header("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
        req.add_header("User-Agent", "authgate-e2e-py-browser/1 (scripted)")
        if body is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        if origin:
            req.add_header("Origin", origin)
        with opener.open(req, timeout=timeout) as res:
            status = res.status
            location = res.headers.get("Location")
            content = res.read()
        if 300 <= status < 400 and location:
            nxt = urllib.parse.urljoin(url, location)
            hop(f"{method} {url} -> {status} -> {nxt}")
            if status not in (307, 308):
                method, body, origin = "GET", None, None
            url = nxt
            continue
        page = content.decode("utf-8", "replace")
        if status != 200:
            hop(f"{method} {url} -> {status}")
            raise RuntimeError(f"{method} {url} answered {status}: {_snippet(page)}")
        forms = parse_forms(page, url)
        if not forms:
            hop(f"{method} {url} -> {status}")
            raise RuntimeError(f"{method} {url}: a page without a form and without a redirect: {_snippet(page)}")
        form = _pick(forms)
        fields = fill_form(form, login, password)
        hop(f"{method} {url} -> {status} [form {form.method} {form.action} {{{','.join(k for k, _ in fields)}}}]")
        parsed = urllib.parse.urlsplit(url)
        page_origin = f"{parsed.scheme}://{parsed.netloc}"
        encoded = urllib.parse.urlencode(fields)
        if form.method == "POST":
            method, url, body, origin = "POST", form.action, encoded.encode(), page_origin
        else:
            method, url, body, origin = "GET", urllib.parse.urlsplit(form.action)._replace(query=encoded).geturl(), None, None
    raise RuntimeError(f"walk: no redirect to the client after {max_steps} steps")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python py_browser.py <authorizeUrl> <stopPrefix>", file=sys.stderr)
        sys.exit(2)
    try:
        print(walk(sys.argv[1], sys.argv[2], on_hop=lambda s: print(f"[browser] {s}", file=sys.stderr)))
    except Exception as e:  # noqa: BLE001
        print(f"[browser] {e}", file=sys.stderr)
        sys.exit(1)
