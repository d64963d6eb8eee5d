"""Signing in and out: the portal as an OpenID Connect relying party (authorization code flow with PKCE), the same
code path against the embedded provider (development) and an external one (production).

Discovery gives the endpoints; the portal sends the browser to the authorization endpoint with a fresh state, nonce
and PKCE verifier (kept in a sealed, short-lived cookie of the sign-in alone), exchanges the code it gets back at the
token endpoint, verifies the ID token against the provider's JWKS (issuer, audience, expiry, nonce), and starts a new
session holding the access token — the one every service call then carries. Signing out ends the session and, where
the provider has an end-session endpoint, goes there."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from services.portal.session import Sealer, User
from services.portal.settings import PortalSettings
from services.portal.web import PageDep, request_state, safe_next
from shared.auth import principal_from_claims
from shared.problems import Unauthorized

log = logging.getLogger(__name__)

SIGNIN_COOKIE = "onestop_signin"
SIGNIN_TTL_SECONDS = 600
ID_TOKEN_ALGORITHMS = ["EdDSA", "RS256", "ES256", "PS256"]


class SignInFailed(Exception):
    """The provider or its answer cannot be trusted for this sign-in (shown to the person as such)."""


@dataclass
class RelyingParty:
    settings: PortalSettings
    http: httpx.AsyncClient
    pending: Sealer
    _metadata: dict[str, Any] | None = None
    _keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (fetched once; its issuer must be the one configured)."""
        if self._metadata is None:
            async with self._lock:
                if self._metadata is None:
                    url = f"{self.settings.issuer_url}/.well-known/openid-configuration"
                    try:
                        response = await self.http.get(url)
                        response.raise_for_status()
                        document = response.json()
                    except (httpx.HTTPError, ValueError) as exc:
                        raise SignInFailed(f"discovery failed: {exc!r}") from exc
                    if document.get("issuer") != self.settings.issuer_url:
                        raise SignInFailed("the discovery document names another issuer")
                    self._metadata = document
        return self._metadata

    async def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        if kid is None or kid not in self._keys:
            # Unknown key: the provider may have rotated; fetch its JWKS again.
            try:
                response = await self.http.get((await self.metadata())["jwks_uri"])
                response.raise_for_status()
                keys = response.json()["keys"]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                raise SignInFailed(f"JWKS unavailable: {exc!r}") from exc
            self._keys = {str(k.get("kid")): jwt.PyJWK(k) for k in keys if k.get("use", "sig") == "sig"}
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        key = self._keys.get(str(kid))
        if key is None:
            raise SignInFailed("the ID token is signed with a key the provider does not publish")
        return key

    async def begin(self, next_path: str, language: str) -> tuple[str, str]:
        """The authorization URL, and the sealed cookie value remembering this attempt (state, nonce, verifier)."""
        metadata = await self.metadata()
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url = prepare_grant_uri(
            metadata["authorization_endpoint"],
            self.settings.oidc_client_id,
            "code",
            redirect_uri=self.settings.redirect_uri,
            scope=self.settings.oidc_scopes,
            state=state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
            ui_locales=language,
        )
        sealed = self.pending.seal({"state": state, "nonce": nonce, "verifier": verifier, "next": next_path})
        return url, sealed

    async def finish(self, sealed: str | None, code: str, state: str) -> tuple[User, str, float, str]:
        """The person, their access token, its lifetime and where to go, once the code is exchanged and the ID token
        verified."""
        pending = self.pending.open(sealed or "", max_age=SIGNIN_TTL_SECONDS)
        if pending is None or not state or pending.get("state") != state:
            raise SignInFailed("the sign-in's state does not match (expired, or not started here)")
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.redirect_uri,
            "client_id": self.settings.oidc_client_id,
            "code_verifier": pending["verifier"],
        }
        if self.settings.oidc_client_secret is not None:
            form["client_secret"] = self.settings.oidc_client_secret.get_secret_value()
        try:
            response = await self.http.post(metadata["token_endpoint"], data=form)
            tokens = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SignInFailed(f"token endpoint unreachable: {exc!r}") from exc
        if response.status_code != 200 or "id_token" not in tokens or "access_token" not in tokens:
            raise SignInFailed(f"token endpoint refused: {tokens.get('error') if isinstance(tokens, dict) else ''}")
        claims = await self.verify_id_token(str(tokens["id_token"]), pending["nonce"])
        try:
            principal = principal_from_claims(claims)
        except Unauthorized as exc:
            raise SignInFailed(f"the ID token's claims do not name a role and its scope: {exc.detail}") from exc
        user = User(
            subject=principal.subject,
            role=principal.role.value,
            name=principal.name,
            resident_id=str(principal.resident_id) if principal.resident_id else None,
            offices=tuple(sorted(principal.offices)),
        )
        expires_in = float(tokens.get("expires_in") or 3600)
        return user, str(tokens["access_token"]), expires_in, str(pending.get("next") or "/")

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
            key = await self._signing_key(header.get("kid"))
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=ID_TOKEN_ALGORITHMS,
                audience=self.settings.oidc_client_id,
                issuer=self.settings.issuer_url,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
                leeway=30,
            )
        except jwt.InvalidTokenError as exc:
            raise SignInFailed(f"the ID token is not valid: {exc}") from exc
        if claims.get("nonce") != nonce:
            raise SignInFailed("the ID token's nonce is not this sign-in's")
        return claims

    async def end_session_url(self) -> str | None:
        try:
            endpoint = (await self.metadata()).get("end_session_endpoint")
        except SignInFailed:
            return None
        if not endpoint:
            return None
        query = urllib.parse.urlencode(
            {"client_id": self.settings.oidc_client_id, "post_logout_redirect_uri": f"{self.settings.public_url}/"}
        )
        return f"{endpoint}?{query}"


def _signin_cookie(value: str, settings: PortalSettings, *, max_age: int = SIGNIN_TTL_SECONDS) -> str:
    parts = [f"{SIGNIN_COOKIE}={value}", "Path=/auth", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
    if settings.cookie_secure:
        parts.append("Secure")
    return "; ".join(parts)


def home_of(user: User) -> str:
    return {
        "resident": "/my",
        "caseworker": "/work",
        "supervisor": "/supervise",
        "admin": "/admin",
    }.get(user.role, "/")


router = APIRouter(include_in_schema=False)


@router.get("/signin")
async def sign_in(page: PageDep, next: str | None = None) -> Response:
    if page.user is not None:
        return RedirectResponse(safe_next(next, home_of(page.user)), status_code=303)
    try:
        url, sealed = await page.context.relying_party.begin(safe_next(next, ""), page.language)
    except SignInFailed as exc:
        log.error("sign-in unavailable", extra={"error": str(exc)})
        return page.render(
            "error.html",
            status=503,
            title=page.t("error.signin.title"),
            detail=page.t("error.signin.unavailable"),
            status_code=503,
        )
    page.state.extra_cookies.append(_signin_cookie(sealed, page.context.settings))
    return RedirectResponse(url, status_code=303)


@router.get("/auth/callback")
async def callback(request: Request, page: PageDep) -> Response:
    params = request.query_params
    page.state.extra_cookies.append(_signin_cookie("", page.context.settings, max_age=0))
    if params.get("error"):
        return page.render(
            "error.html",
            status=400,
            title=page.t("error.signin.title"),
            detail=page.t("error.signin.cancelled"),
            status_code=400,
        )
    try:
        user, token, expires_in, next_path = await page.context.relying_party.finish(
            request.cookies.get(SIGNIN_COOKIE), params.get("code") or "", params.get("state") or ""
        )
    except SignInFailed as exc:
        log.warning("sign-in refused", extra={"error": str(exc)})
        return page.render(
            "error.html",
            status=400,
            title=page.t("error.signin.title"),
            detail=page.t("error.signin.failed"),
            status_code=400,
        )
    state = request_state(request)
    state.session = page.context.sessions.start(user, token, expires_in)
    log.info("signed in", extra={"role": user.role, "at": int(time.time())})
    return RedirectResponse(safe_next(next_path, home_of(user)), status_code=303)


@router.post("/signout")
async def sign_out(request: Request, page: PageDep) -> Response:
    await page.form()
    state = request_state(request)
    state.session = page.context.sessions.end(state.session)
    target = await page.context.relying_party.end_session_url() or "/"
    return RedirectResponse(target, status_code=303)
