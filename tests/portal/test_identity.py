"""Sign-in is OpenID Connect, authorization code with PKCE, against the embedded provider (the same code path as an
external one); sessions are sealed HttpOnly SameSite cookies that sign-out ends; every form needs its CSRF token; every
page carries the security headers. Over HTTP against the portal the platform runs."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager

from onestop.runner import Platform
from services.portal.main import create_app
from services.portal.settings import PortalSettings
from tests.e2e.support import Api
from tests.portal.support import BIRTH_RESIDENT, BIRTH_RESIDENT_ID, portal_url

pytestmark = pytest.mark.e2e

CLIENT_ID = "onestop-portal"


@pytest.fixture
def client(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=portal_url(platform), follow_redirects=False, timeout=20) as client:
        yield client


def _hidden(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _authorize(client: httpx.Client, verifier: str | None, person: str = BIRTH_RESIDENT) -> httpx.Response:
    """The browser's part: the authorization request, the sign-in page, a person chosen."""
    redirect_uri = str(client.base_url).rstrip("/") + "/auth/callback"
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": redirect_uri, "scope": "openid profile",
              "state": "s1", "nonce": "n1"}  # fmt: skip
    if verifier is not None:
        params |= {"code_challenge": _challenge(verifier), "code_challenge_method": "S256"}
    page = client.get("/idp/authorize", params=params)
    if page.status_code != 200:
        return page
    form = _hidden(page.text)
    return client.post("/idp/authorize", data={**form, "person": person})


def _sign_in(client: httpx.Client) -> None:
    """Through the portal's own sign-in, following each redirect by hand."""
    response = client.get("/signin", params={"next": "/my"})
    while response.status_code in (302, 303):
        response = client.get(response.headers["location"])
        if response.status_code == 200 and "/idp/authorize" in str(response.url):
            response = client.post("/idp/authorize", data={**_hidden(response.text), "person": BIRTH_RESIDENT})
    assert response.status_code == 200, response.text[:300]


def test_discovery_and_jwks_describe_the_embedded_provider(client: httpx.Client) -> None:
    discovery = client.get("/idp/.well-known/openid-configuration").json()
    assert discovery["issuer"] == str(client.base_url).rstrip("/") + "/idp"
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert discovery["response_types_supported"] == ["code"]
    keys = client.get("/idp/jwks").json()["keys"]
    assert [k["kty"] for k in keys] == ["OKP"]
    assert "d" not in keys[0]  # the public half only


def test_the_code_flow_needs_pkce_and_a_code_is_good_once(client: httpx.Client, api: Api) -> None:
    refused = _authorize(client, verifier=None)
    assert refused.status_code == 303
    assert "error=invalid_request" in refused.headers["location"]

    verifier = secrets.token_urlsafe(48)
    granted = _authorize(client, verifier)
    assert granted.status_code == 303
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(granted.headers["location"]).query)
    assert query["state"] == ["s1"]
    code = query["code"][0]
    redirect_uri = granted.headers["location"].split("?")[0]
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": CLIENT_ID}

    wrong = client.post("/idp/token", data={**exchange, "code_verifier": secrets.token_urlsafe(48)})
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"

    tokens = client.post("/idp/token", data={**exchange, "code_verifier": verifier})
    assert tokens.status_code == 200
    body = tokens.json()
    assert tokens.headers["cache-control"] == "no-store"
    key = jwt.PyJWK(client.get("/idp/jwks").json()["keys"][0])
    claims = jwt.decode(body["id_token"], key, algorithms=["EdDSA"], audience=CLIENT_ID)
    assert claims["nonce"] == "n1"
    assert claims["resident_id"] == BIRTH_RESIDENT_ID
    # The access token is one the services accept as the person.
    me = api.request(
        "intake", "GET", f"/v1/residents/{BIRTH_RESIDENT_ID}", {"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200

    again = client.post("/idp/token", data={**exchange, "code_verifier": verifier})
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_an_unregistered_redirect_uri_is_never_redirected_to(client: httpx.Client) -> None:
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": "https://evil.example/cb",
              "scope": "openid", "code_challenge": _challenge("x" * 43), "code_challenge_method": "S256"}  # fmt: skip
    response = client.get("/idp/authorize", params=params)
    assert response.status_code == 400
    assert "evil.example" not in response.headers.get("location", "")


def test_pages_carry_the_security_headers_and_a_sealed_cookie(client: httpx.Client) -> None:
    response = client.get("/")
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    # Sealed: nothing of the session (its CSRF token, say) is readable in the cookie.
    token = _hidden(client.get("/").text).get("csrf_token")
    assert token is None or token not in cookie


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(client: httpx.Client, api: Api) -> None:
    _sign_in(client)
    auth = api.token("resident", resident_id=BIRTH_RESIDENT_ID)
    before = api.ok("intake", "GET", f"/v1/residents/{BIRTH_RESIDENT_ID}/consents", auth)
    refused = client.post("/consents", data={"purpose": "department_data:housing"})
    assert refused.status_code == 403
    forged = client.post("/consents", data={"purpose": "department_data:housing", "csrf_token": "forged"})
    assert forged.status_code == 403
    assert api.ok("intake", "GET", f"/v1/residents/{BIRTH_RESIDENT_ID}/consents", auth) == before


def test_sign_out_ends_the_session(client: httpx.Client) -> None:
    _sign_in(client)
    assert client.get("/my").status_code == 200
    copied = dict(client.cookies)
    token = _hidden(client.get("/my").text)["csrf_token"]
    signed_out = client.post("/signout", data={"csrf_token": token})
    assert signed_out.status_code == 303
    assert client.get("/my").status_code == 303  # to sign in again
    # A copy of the old cookie is refused too.
    with httpx.Client(base_url=client.base_url, cookies=copied, follow_redirects=False) as other:
        response = other.get("/my")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/signin")


async def test_an_external_provider_switches_the_embedded_one_off(tmp_path: Path) -> None:
    discovery = "/idp/.well-known/openid-configuration"
    for settings, status in (
        (PortalSettings(oidc_issuer_url="https://id.example.kr/realms/onestop", keys_dir=tmp_path), 404),
        (PortalSettings(keys_dir=tmp_path), 200),
    ):
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://portal") as client:
                assert (await client.get(discovery)).status_code == status
