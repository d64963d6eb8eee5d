"""The embedded identity provider: the embedded issuer (``shared.auth.TokenIssuer``, keys under ``var/keys``) grown
into the minimum of an OpenID Connect provider — discovery, authorization (a sign-in page listing the demonstration
city's people), token (authorization code with PKCE S256 only) and JWKS — so that the portal signs people in through
the same code path in development as against a production provider. It is mounted only while no external provider
is configured (``ONESTOP_PORTAL_OIDC_ISSUER_URL``).

It signs two tokens with the issuer's key: the ID token, for the portal (issuer: this provider's URL, audience: the
portal's client id), and the access token the services verify as they verify any token of the embedded issuer
(issuer ``onestop-embedded``, audience ``onestop``, the person's role and scope). Codes are sealed, live two minutes
and are accepted once."""

from __future__ import annotations

import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from services.portal.people import DemoPeople, DemoPerson
from services.portal.session import Sealer
from services.portal.settings import PortalSettings
from services.portal.web import Page, PageDep
from shared.auth import Role, TokenIssuer

CODE_TTL_SECONDS = 120
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class UsedCodes:
    """Codes already exchanged (a code is good once), kept until they would have expired anyway."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def use(self, code_id: str) -> bool:
        """Marks the code used; False when it already was."""
        with self._lock:
            now = time.time()
            self._until = {c: t for c, t in self._until.items() if t > now}
            if code_id in self._until:
                return False
            self._until[code_id] = now + CODE_TTL_SECONDS
            return True


@dataclass
class EmbeddedProvider:
    settings: PortalSettings
    issuer: TokenIssuer
    people: DemoPeople
    codes: Sealer
    used: UsedCodes

    @property
    def issuer_url(self) -> str:
        return self.settings.issuer_url

    def metadata(self) -> dict[str, Any]:
        base = self.issuer_url
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "end_session_endpoint": f"{base}/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile"],
            "claims_supported": ["sub", "name", "role", "resident_id", "offices", "nonce", "auth_time"],
            "ui_locales_supported": ["ko", "en"],
        }

    def tokens(self, person: DemoPerson, *, nonce: str | None, client_id: str) -> dict[str, Any]:
        ttl = self.settings.token_ttl_seconds
        access_token = self.issuer.mint(
            person.role,
            subject=person.subject,
            resident_id=person.resident_id,
            offices=person.offices,
            name=person.name,
            ttl_seconds=ttl,
        )
        now = int(time.time())
        id_claims: dict[str, Any] = {
            "iss": self.issuer_url,
            "sub": person.subject,
            "aud": client_id,
            "iat": now,
            "exp": now + ttl,
            "auth_time": now,
            **person.claims(),
        }
        if nonce:
            id_claims["nonce"] = nonce
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": "openid profile",
            "id_token": self.issuer.sign(id_claims),
        }


def _error_redirect(redirect_uri: str, error: str, description: str, state: str | None) -> RedirectResponse:
    params = {"error": error, "error_description": description}
    if state:
        params["state"] = state
    return RedirectResponse(f"{redirect_uri}?{urllib.parse.urlencode(params)}", status_code=303)


def _token_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=NO_STORE)


AUTHORIZE_PARAMS = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge",
                    "code_challenge_method", "ui_locales")  # fmt: skip


def provider_router(provider: EmbeddedProvider) -> APIRouter:
    router = APIRouter(prefix="/idp", include_in_schema=False)
    settings = provider.settings

    def check(params: dict[str, str], page: Page) -> Response | None:
        """An authorization request's problems: an unknown client or redirect URI is shown here (never redirected
        to); anything else goes back to the client as an OAuth error."""
        if params.get("client_id") != settings.oidc_client_id or params.get("redirect_uri") != settings.redirect_uri:
            return page.render(
                "error.html",
                status=400,
                title=page.t("idp.bad_request.title"),
                detail=page.t("idp.bad_request.detail"),
                status_code=400,
            )
        redirect_uri, state = params["redirect_uri"], params.get("state")
        if params.get("response_type") != "code":
            return _error_redirect(redirect_uri, "unsupported_response_type", "only the code flow", state)
        if "openid" not in (params.get("scope") or "").split():
            return _error_redirect(redirect_uri, "invalid_scope", "the openid scope is required", state)
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return _error_redirect(redirect_uri, "invalid_request", "PKCE with S256 is required", state)
        return None

    @router.get("/.well-known/openid-configuration")
    async def discovery() -> JSONResponse:
        return JSONResponse(provider.metadata())

    @router.get("/jwks")
    async def jwks() -> JSONResponse:
        return JSONResponse({"keys": [{**provider.issuer.public_jwk(), "kid": provider.issuer.key_id}]})

    @router.get("/authorize")
    async def authorize(request: Request, page: PageDep) -> Response:
        params = {k: v for k, v in request.query_params.items() if k in AUTHORIZE_PARAMS}
        refused = check(params, page)
        if refused is not None:
            return refused
        groups = [
            ("idp.group.residents", provider.people.of_role(Role.RESIDENT)),
            ("idp.group.caseworkers", provider.people.of_role(Role.CASEWORKER)),
            ("idp.group.supervisors", provider.people.of_role(Role.SUPERVISOR)),
            ("idp.group.administrators", provider.people.of_role(Role.ADMIN)),
        ]
        return page.render("idp_signin.html", params=params, groups=groups)

    @router.post("/authorize")
    async def sign_in_as(page: PageDep) -> Response:
        form = await page.form()
        params = {k: str(form.get(k) or "") for k in AUTHORIZE_PARAMS if form.get(k)}
        refused = check(params, page)
        if refused is not None:
            return refused
        person = provider.people.get(str(form.get("person") or ""))
        if person is None:
            return _error_redirect(params["redirect_uri"], "access_denied", "no such person", params.get("state"))
        code = provider.codes.seal(
            {
                "id": secrets.token_urlsafe(16),
                "person": person.key,
                "client_id": params["client_id"],
                "redirect_uri": params["redirect_uri"],
                "challenge": params["code_challenge"],
                "nonce": params.get("nonce"),
            }
        )
        query = {"code": code}
        if params.get("state"):
            query["state"] = params["state"]
        return RedirectResponse(f"{params['redirect_uri']}?{urllib.parse.urlencode(query)}", status_code=303)

    @router.post("/token")
    async def token(request: Request) -> JSONResponse:
        form = await request.form()
        if form.get("grant_type") != "authorization_code":
            return _token_error("unsupported_grant_type", "only authorization_code")
        client_id = str(form.get("client_id") or "")
        if client_id != settings.oidc_client_id:
            return _token_error("invalid_client", "unknown client", 401)
        if settings.oidc_client_secret is not None and not secrets.compare_digest(
            str(form.get("client_secret") or ""), settings.oidc_client_secret.get_secret_value()
        ):
            return _token_error("invalid_client", "wrong client secret", 401)
        grant = provider.codes.open(str(form.get("code") or ""), max_age=CODE_TTL_SECONDS)
        if grant is None or grant.get("client_id") != client_id:
            return _token_error("invalid_grant", "the code is unknown or expired")
        if grant.get("redirect_uri") != form.get("redirect_uri"):
            return _token_error("invalid_grant", "the redirect URI differs from the authorization request's")
        verifier = str(form.get("code_verifier") or "")
        if not 43 <= len(verifier) <= 128 or not secrets.compare_digest(
            create_s256_code_challenge(verifier), str(grant.get("challenge"))
        ):
            return _token_error("invalid_grant", "the code verifier does not match the code challenge")
        if not provider.used.use(str(grant["id"])):
            return _token_error("invalid_grant", "the code was already used")
        person = provider.people.get(str(grant["person"]))
        if person is None:
            return _token_error("invalid_grant", "the person is no longer known")
        return JSONResponse(provider.tokens(person, nonce=grant.get("nonce"), client_id=client_id), headers=NO_STORE)

    @router.get("/logout")
    async def logout(request: Request) -> RedirectResponse:
        # The provider keeps no session of its own (its sign-in page is shown every time): only the way back.
        back = request.query_params.get("post_logout_redirect_uri")
        target = back if back == f"{settings.public_url}/" else "/"
        return RedirectResponse(target, status_code=303)

    return router


def embedded_provider(settings: PortalSettings, secret: bytes) -> EmbeddedProvider:
    return EmbeddedProvider(
        settings=settings,
        issuer=TokenIssuer.from_directory(settings.keys_dir),
        people=DemoPeople.load(settings.demo_people_file),
        codes=Sealer(secret, "onestop-idp-code"),
        used=UsedCodes(),
    )
