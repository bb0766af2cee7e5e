"""The official MCP Python SDK client (`mcp`, pinned in requirements.txt) logging in to an
authgate-protected MCP endpoint with no person and no real browser:

  POST /mcp -> 401 -> RFC 9728 resource metadata -> RFC 8414 AS metadata -> RFC 7591 /register
  -> /authorize walked by py_browser.py (redirect_handler) -> code, state, iss (callback_handler)
  -> /token -> initialize -> tools/list -> tools/call <tool> [-> PROGRESS_TOOL with progress]
  -> refresh (REFRESH_MODE) -> tools/list with the refreshed token -> DELETE the session on close.

Usage: tests/e2e/clients/.venv/bin/python tests/e2e/clients/py_client.py <MCP_URL> [tool [jsonArgs]]
Env:   LOGIN_USER (ann@example.test), LOGIN_PASSWORD (secret), AUTH_METHOD (none | client_secret_post |
       client_secret_basic), REDIRECT_URI (default http://127.0.0.1:<free port>/callback),
       REFRESH_MODE (expire | wait | none), PROGRESS_TOOL (+ PROGRESS_ARGS json), EXPECT_AUTH (1; 0 =
       a plain server is fine), TIMEOUT_S (120), VERBOSE=1,
       FORBIDDEN_TOOL (a call that must fail with a JSON-RPC error),
       STEP_UP_TOOL (+ STEP_UP_ARGS json: a call that must succeed, after the SDK's own step-up).
Output: one line per HTTP request the SDK made, then `RESULT {json}`; exit 0 only if all succeeded.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.to_thread
import httpx2

from mcp import ClientSession, MCPError
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from py_browser import new_jar, walk  # noqa: E402

if len(sys.argv) < 2:
    print("usage: py_client.py <MCP_URL> [tool [jsonArgs]]", file=sys.stderr)
    sys.exit(2)
MCP_URL = sys.argv[1]
TOOL = sys.argv[2] if len(sys.argv) > 2 else "whoami"
TOOL_ARGS = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
ENV = os.environ
VERBOSE = ENV.get("VERBOSE") == "1"
REFRESH_MODE = ENV.get("REFRESH_MODE", "expire")
EXPECT_AUTH = ENV.get("EXPECT_AUTH", "1") != "0"

result: dict = {"ok": False, "client": "py-sdk", "sdk": "mcp==2.3.0", "tools": [], "call": None, "refreshed": False}
http_lines: list[str] = []
token_requests: list[dict] = []
MCP_PATH = urlsplit(MCP_URL).path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REDIRECT_URI = ENV.get("REDIRECT_URI") or f"http://127.0.0.1:{free_port()}/callback"


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        print(f"[token] token_type={tokens.token_type} expires_in={tokens.expires_in} scope={tokens.scope} refresh_token={'yes' if tokens.refresh_token else 'no'}")

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info
        print(f"[dcr] client_id={client_info.client_id} token_endpoint_auth_method={client_info.token_endpoint_auth_method} secret={'yes' if client_info.client_secret else 'no'}")


class Walker:
    """redirect_handler walks the authorization URL; callback_handler hands back code/state/iss."""

    def __init__(self) -> None:
        self.jar = new_jar()
        self.walks = 0
        self.final: str | None = None

    async def redirect(self, authorization_url: str) -> None:
        self.walks += 1
        q = parse_qs(urlsplit(authorization_url).query)
        first = lambda k: q.get(k, [None])[0]  # noqa: E731
        print(f"[authorize] {authorization_url.split('?')[0]} scope={first('scope')} resource={first('resource')} code_challenge_method={first('code_challenge_method')}")
        result["authorize"] = {"scope": first("scope"), "resource": first("resource")}

        def hop(s: str) -> None:
            print(f"[browser] {s if VERBOSE else _short(s)}")

        self.final = await anyio.to_thread.run_sync(
            lambda: walk(authorization_url, REDIRECT_URI, ENV.get("LOGIN_USER", "ann@example.test"),
                         ENV.get("LOGIN_PASSWORD", "secret"), self.jar, on_hop=hop)
        )

    async def callback(self) -> AuthorizationCodeResult:
        q = parse_qs(urlsplit(self.final or "").query)
        self.final = None
        if "error" in q:
            raise RuntimeError(f"authorization error: {q['error'][0]} {q.get('error_description', [''])[0]}")
        code, state, iss = q["code"][0], q.get("state", [None])[0], q.get("iss", [None])[0]
        result["iss"] = iss
        print(f"[callback] code received ({len(code)} chars), iss={iss}")
        return AuthorizationCodeResult(code=code, state=state, iss=iss)


def _short(line: str) -> str:
    return " ".join(w.split("?")[0] + ("?…" if "?" in w and w.startswith("http") else "") if w.startswith("http") else w for w in line.split(" "))


async def on_request(request: httpx2.Request) -> None:
    if request.url.path.endswith("/token") and request.method == "POST":
        form = parse_qs(request.content.decode())
        info = {
            "grant_type": form.get("grant_type", [None])[0],
            "resource": form.get("resource", [None])[0],
            "client_auth": "basic" if request.headers.get("authorization", "").startswith("Basic ")
            else "post" if "client_secret" in form else "none",
        }
        token_requests.append(info)
        request.extensions["authgate_note"] = f" ({info['grant_type']}, resource={info['resource'] or '-'}, auth={info['client_auth']})"
    if VERBOSE and request.url.path == MCP_PATH:
        shown = {k: (v[:16] + "…" if k.lower() == "authorization" else v) for k, v in request.headers.items()}
        print(f"[http] > {request.method} {request.url.path} {json.dumps(shown)}")


async def on_response(response: httpx2.Response) -> None:
    line = f"{response.request.method} {response.request.url.path} {response.status_code}"
    http_lines.append(line)
    print(f"[http] {line}{response.request.extensions.get('authgate_note', '')}")
    if response.status_code == 401 and response.headers.get("www-authenticate"):
        print(f"[http]   WWW-Authenticate: {response.headers['www-authenticate']}")


def text_of(res) -> str:
    return "\n".join(c.text for c in res.content if getattr(c, "type", None) == "text")


async def run() -> None:
    walker = Walker()
    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=MCP_URL,  # the MCP endpoint itself: the SDK checks it against the PRM `resource`
        client_metadata=OAuthClientMetadata.model_validate({
            "client_name": "authgate e2e py-sdk client",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": ENV.get("AUTH_METHOD", "none"),
        }),
        storage=storage,
        redirect_handler=walker.redirect,
        callback_handler=walker.callback,
    )
    client = httpx2.AsyncClient(
        auth=provider,
        timeout=httpx2.Timeout(30, read=300),
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    async with client, streamable_http_client(MCP_URL, http_client=client) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            result["auth"] = walker.walks > 0
            result["protocolVersion"] = init.protocol_version
            print(f"[mcp] initialized: protocol {init.protocol_version}, server {init.server_info.name} {init.server_info.version}")
            if EXPECT_AUTH and not result["auth"]:
                raise RuntimeError("the server did not ask for authorization (set EXPECT_AUTH=0 for a plain server)")

            tools = (await session.list_tools()).tools
            result["tools"] = [t.name for t in tools]
            print(f"[mcp] tools/list -> {', '.join(result['tools'])}")
            called = await session.call_tool(TOOL, TOOL_ARGS)
            result["call"] = text_of(called)
            result["callIsError"] = bool(called.is_error)
            print(f"[mcp] tools/call {TOOL} -> {result['call']}")
            if called.is_error:
                raise RuntimeError(f"tool {TOOL} returned isError: {result['call']}")

            if ENV.get("PROGRESS_TOOL"):
                started = time.monotonic()
                progress: list[int] = []

                async def on_progress(p: float, total: float | None, message: str | None) -> None:
                    ms = int((time.monotonic() - started) * 1000)
                    progress.append(ms)
                    print(f"[progress] +{ms} ms progress={p} total={total} message={message}")

                r = await session.call_tool(ENV["PROGRESS_TOOL"], json.loads(ENV.get("PROGRESS_ARGS") or "{}"),
                                            read_timeout_seconds=120, progress_callback=on_progress)
                result["progress"] = progress
                result["progressCall"] = text_of(r)
                result["progressTotalMs"] = int((time.monotonic() - started) * 1000)
                print(f"[mcp] tools/call {ENV['PROGRESS_TOOL']} -> {result['progressCall']} after {result['progressTotalMs']} ms, {len(progress)} progress notifications")
                if r.is_error:
                    raise RuntimeError(f"tool {ENV['PROGRESS_TOOL']} returned isError: {result['progressCall']}")

            if ENV.get("FORBIDDEN_TOOL"):
                try:
                    refused = await session.call_tool(ENV["FORBIDDEN_TOOL"], {})
                except MCPError as e:
                    result["forbidden"] = {"code": e.error.code, "message": e.error.message}
                    print(f"[mcp] tools/call {ENV['FORBIDDEN_TOOL']} -> JSON-RPC error {e.error.code}: {e.error.message}")
                else:
                    raise RuntimeError(f"tool {ENV['FORBIDDEN_TOOL']} was not refused: {text_of(refused)}")

            if ENV.get("STEP_UP_TOOL"):
                walks_before = walker.walks
                scope_before = storage.tokens.scope if storage.tokens else None
                stepped = await session.call_tool(ENV["STEP_UP_TOOL"], json.loads(ENV.get("STEP_UP_ARGS") or "{}"))
                result["stepUp"] = {
                    "call": text_of(stepped),
                    "isError": bool(stepped.is_error),
                    "newLogins": walker.walks - walks_before,
                    "scopeBefore": scope_before,
                    "scopeAfter": storage.tokens.scope if storage.tokens else None,
                    "authorizeScope": result["authorize"]["scope"],
                }
                print(f"[mcp] tools/call {ENV['STEP_UP_TOOL']} -> {text_of(stepped)} (step-up: {result['stepUp']})")
                if stepped.is_error:
                    raise RuntimeError(f"tool {ENV['STEP_UP_TOOL']} returned isError: {text_of(stepped)}")

            if result["auth"] and REFRESH_MODE != "none":
                before = storage.tokens
                if not before or not before.refresh_token:
                    raise RuntimeError("no refresh_token was issued")
                walks_before, token_calls = walker.walks, len(token_requests)
                if REFRESH_MODE == "wait":
                    # Let the access token really expire (authgate with a short AUTHGATE_ACCESS_TOKEN_TTL).
                    delay = min((before.expires_in or 0) + 1.5, 120)
                    print(f"[refresh] waiting {delay} s for the access token to expire")
                    await anyio.sleep(delay)
                else:
                    # expire: the provider's record says the token has expired; the SDK refreshes
                    # before the next request (it refreshes only on expiry, not on a 401).
                    provider.context.token_expiry_time = time.time() - 1
                again = (await session.list_tools()).tools
                after = storage.tokens
                refreshes = [t for t in token_requests[token_calls:] if t["grant_type"] == "refresh_token"]
                result["refreshed"] = bool(refreshes) and walker.walks == walks_before and after is not None \
                    and after.access_token != before.access_token and len(again) == len(tools)
                result["refreshRotated"] = after is not None and after.refresh_token != before.refresh_token
                print(f"[refresh] mode={REFRESH_MODE} refresh grants={len(refreshes)} new login={walker.walks != walks_before} "
                      f"new access token={after is not None and after.access_token != before.access_token} "
                      f"rotated refresh token={result['refreshRotated']} tools/list -> {len(again)} tools")
                if not result["refreshed"]:
                    raise RuntimeError("refresh did not produce a working access token without a new login")
    # Leaving streamable_http_client sends DELETE with the session id (terminate_on_close).
    result["sessionTerminated"] = any(l.startswith(f"DELETE {MCP_PATH} ") for l in http_lines)
    result["ok"] = True


_GROUP = getattr(__import__("builtins"), "BaseExceptionGroup", ())  # 3.11+: unwrap task-group errors to the first cause


def main() -> int:
    t0 = time.monotonic()
    try:
        anyio.run(_with_timeout)
    except BaseException as e:  # noqa: BLE001
        result["ok"] = False
        inner = e
        while isinstance(inner, _GROUP) and inner.exceptions:
            inner = inner.exceptions[0]
        result["error"] = f"{type(inner).__name__}: {inner}"
        if VERBOSE:
            traceback.print_exception(e)
    result["tokenRequests"] = token_requests
    result["http"] = http_lines
    result["ms"] = int((time.monotonic() - t0) * 1000)
    print("RESULT " + json.dumps(result))
    return 0 if result["ok"] else 1


async def _with_timeout() -> None:
    with anyio.fail_after(float(ENV.get("TIMEOUT_S", "120"))):
        await run()


if __name__ == "__main__":
    sys.exit(main())
