"""The official MCP Python SDK's enterprise-managed authorization client (SEP-990,
`mcp.client.auth.extensions.identity_assertion.IdentityAssertionOAuthProvider`, mcp 2.3.0)
against an authgate-protected MCP endpoint, with no browser at all:

  POST /mcp -> 401 -> RFC 8414 metadata of the configured issuer (authgate)
  -> assertion_provider: RFC 8693 token exchange at the enterprise IdP (the person's SSO token for
     an ID-JAG with aud = authgate, resource = the MCP endpoint)
  -> POST /token grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer with the ID-JAG
  -> initialize -> tools/list -> tools/call <tool>
  -> once the access token has expired (EXPIRY_WAIT_S): a fresh ID-JAG and a new access token,
     with no refresh token, then tools/list again.

Usage: tests/e2e/clients/.venv/bin/python tests/e2e/clients/py_ema_client.py <MCP_URL> [tool [jsonArgs]]
Env:   AS_ISSUER (authgate's issuer), CLIENT_ID, CLIENT_SECRET (the client registered at authgate),
       AUTH_METHOD (client_secret_post | client_secret_basic), IDP_TOKEN_URL, IDP_CA_FILE,
       IDP_CLIENT_ID, IDP_CLIENT_SECRET (the client at the IdP), SUBJECT_TOKEN (the ID token of the
       person's SSO), EXPIRY_WAIT_S (seconds to wait for the access token to expire; 0 = skip),
       TIMEOUT_S (120).
Output: one line per HTTP request, then `RESULT {json}`; exit 0 only if all succeeded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from urllib.parse import parse_qs

import anyio
import httpx2

from mcp import ClientSession
from mcp.client.auth import TokenStorage
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

if len(sys.argv) < 2:
    print("usage: py_ema_client.py <MCP_URL> [tool [jsonArgs]]", file=sys.stderr)
    sys.exit(2)
MCP_URL = sys.argv[1]
TOOL = sys.argv[2] if len(sys.argv) > 2 else "whoami"
TOOL_ARGS = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
ENV = os.environ

result: dict = {"ok": False, "client": "py-sdk-ema", "sdk": "mcp==2.3.0", "tools": [], "call": None,
                "idJags": 0, "tokenRequests": []}


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        print(f"[token] token_type={tokens.token_type} expires_in={tokens.expires_in} scope={tokens.scope} "
              f"refresh_token={'yes' if tokens.refresh_token else 'no'}")

    async def get_client_info(self):
        return None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        pass


async def fetch_id_jag(audience: str, resource: str) -> str:
    """Leg 1 of SEP-990: the person's SSO token for an ID-JAG, by token exchange at the IdP."""
    async with httpx2.AsyncClient(verify=ENV["IDP_CA_FILE"], timeout=30) as idp:
        r = await idp.post(ENV["IDP_TOKEN_URL"], data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
            "audience": audience,
            "resource": resource,
            "subject_token": ENV["SUBJECT_TOKEN"],
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "client_id": ENV["IDP_CLIENT_ID"],
            "client_secret": ENV["IDP_CLIENT_SECRET"],
        })
    body = r.json()
    if r.status_code != 200 or body.get("issued_token_type") != "urn:ietf:params:oauth:token-type:id-jag":
        raise RuntimeError(f"token exchange at the IdP failed ({r.status_code}): {body}")
    result["idJags"] += 1
    result["audience"], result["resource"] = audience, resource
    print(f"[idp] ID-JAG #{result['idJags']} for audience={audience} resource={resource}")
    return body["access_token"]


async def on_request(request: httpx2.Request) -> None:
    if request.url.path.endswith("/token") and request.method == "POST":
        form = parse_qs(request.content.decode())
        result["tokenRequests"].append({
            "grant_type": form.get("grant_type", [None])[0],
            "resource": form.get("resource", [None])[0],
            "client_auth": "basic" if request.headers.get("authorization", "").startswith("Basic ")
            else "post" if "client_secret" in form else "none",
        })


async def on_response(response: httpx2.Response) -> None:
    print(f"[http] {response.request.method} {response.request.url.path} {response.status_code}")


def text_of(res) -> str:
    return "\n".join(c.text for c in res.content if getattr(c, "type", None) == "text")


async def run() -> None:
    storage = MemoryStorage()
    provider = IdentityAssertionOAuthProvider(
        server_url=MCP_URL,
        storage=storage,
        client_id=ENV["CLIENT_ID"],
        client_secret=ENV["CLIENT_SECRET"],
        issuer=ENV["AS_ISSUER"],
        assertion_provider=fetch_id_jag,
        token_endpoint_auth_method=ENV.get("AUTH_METHOD", "client_secret_post"),
    )
    client = httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30, read=300),
                                event_hooks={"request": [on_request], "response": [on_response]})
    async with client, streamable_http_client(MCP_URL, http_client=client) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            result["protocolVersion"] = init.protocol_version
            tools = (await session.list_tools()).tools
            result["tools"] = [t.name for t in tools]
            print(f"[mcp] tools/list -> {', '.join(result['tools'])}")
            called = await session.call_tool(TOOL, TOOL_ARGS)
            result["call"] = text_of(called)
            print(f"[mcp] tools/call {TOOL} -> {result['call']}")
            if called.is_error:
                raise RuntimeError(f"tool {TOOL} returned isError: {result['call']}")
            first = storage.tokens
            if first is None or first.refresh_token:
                raise RuntimeError("expected an access token and no refresh token")
            wait = float(ENV.get("EXPIRY_WAIT_S", "0"))
            if wait > 0:
                print(f"[expiry] waiting {wait} s for the access token to expire")
                await anyio.sleep(wait)
                again = (await session.list_tools()).tools
                after = storage.tokens
                result["renewed"] = after is not None and after.access_token != first.access_token \
                    and len(again) == len(tools) and result["idJags"] >= 2
                print(f"[expiry] ID-JAGs={result['idJags']} new access token={result['renewed']}")
                if not result["renewed"]:
                    raise RuntimeError("no new access token from a fresh ID-JAG after expiry")
    result["ok"] = True


_GROUP = getattr(__import__("builtins"), "BaseExceptionGroup", ())


def main() -> int:
    t0 = time.monotonic()
    try:
        anyio.run(_with_timeout)
    except BaseException as e:  # noqa: BLE001
        inner = e
        while isinstance(inner, _GROUP) and inner.exceptions:
            inner = inner.exceptions[0]
        result["error"] = f"{type(inner).__name__}: {inner}"
    result["ms"] = int((time.monotonic() - t0) * 1000)
    print("RESULT " + json.dumps(result))
    return 0 if result["ok"] else 1


async def _with_timeout() -> None:
    with anyio.fail_after(float(ENV.get("TIMEOUT_S", "120"))):
        await run()


if __name__ == "__main__":
    sys.exit(main())
