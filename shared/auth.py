"""Authentication: JWT bearer tokens from the embedded issuer (development, `make run`) or an OIDC provider's JWKS
(production), turned into a :class:`Principal` with a role and a scope, as FastAPI dependencies."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Request

from shared.problems import Forbidden, Unauthorized


class Role(StrEnum):
    RESIDENT = "resident"
    CASEWORKER = "caseworker"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    PARTNER = "partner"
    # Another OneStop service calling on its own behalf (for example notify looking up where to send a message).
    SERVICE = "service"


STAFF_ROLES = frozenset({Role.CASEWORKER, Role.SUPERVISOR, Role.ADMIN})


@dataclass(frozen=True)
class Principal:
    """Who is calling, and the scope they act in."""

    subject: str
    role: Role
    resident_id: uuid.UUID | None = None
    offices: frozenset[str] = field(default_factory=frozenset)
    partner_id: str | None = None
    service: str | None = None
    name: str | None = None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    def works_in(self, office_code: str) -> bool:
        return self.role is Role.ADMIN or office_code in self.offices

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise Forbidden(f"This action needs one of the roles: {', '.join(r.value for r in roles)}.")


# ---------------------------------------------------------------------------------------------- the embedded issuer

PRIVATE_KEY_NAME = "issuer.pem"
PUBLIC_KEY_NAME = "issuer.pub.pem"


def ensure_keypair(directory: Path) -> tuple[Path, Path]:
    """Create the embedded issuer's Ed25519 key pair on first run; later runs reuse it (so tokens stay valid)."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    if not private_path.exists():
        key = Ed25519PrivateKey.generate()
        tmp = private_path.with_suffix(".tmp")
        tmp.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        tmp.chmod(0o600)
        tmp.replace(private_path)
    if not public_path.exists():
        loaded = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        public_path.write_bytes(
            loaded.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private_path, public_path


class TokenIssuer:
    """Mints tokens for the embedded identity provider (``onestop token``). Production uses a real OIDC provider."""

    def __init__(self, private_key_pem: bytes, *, issuer: str = "onestop-embedded", audience: str = "onestop") -> None:
        self._key = serialization.load_pem_private_key(private_key_pem, password=None)
        self.issuer = issuer
        self.audience = audience
        # The key's JWK thumbprint (RFC 7638), named in each token's header so that a JWKS holding several keys
        # (the embedded OIDC provider's, during a key change) tells which one verifies it.
        self.key_id = jwt.utils.base64url_encode(
            hashlib.sha256(
                json.dumps(
                    {k: v for k, v in self.public_jwk().items() if k in ("crv", "kty", "x")},
                    separators=(",", ":"),
                    sort_keys=True,
                ).encode()
            ).digest()
        ).decode()

    @classmethod
    def from_directory(cls, directory: Path, **kwargs: Any) -> TokenIssuer:
        private_path, _ = ensure_keypair(directory)
        return cls(private_path.read_bytes(), **kwargs)

    def mint(
        self,
        role: Role | str,
        *,
        subject: str | None = None,
        resident_id: uuid.UUID | str | None = None,
        offices: Iterable[str] = (),
        partner_id: str | None = None,
        service: str | None = None,
        name: str | None = None,
        ttl_seconds: int = 8 * 3600,
    ) -> str:
        role = Role(role)
        if role is Role.RESIDENT and resident_id is None:
            raise ValueError("a resident token needs a resident id")
        if role in (Role.CASEWORKER, Role.SUPERVISOR) and not list(offices):
            raise ValueError(f"a {role.value} token needs at least one office")
        if role is Role.PARTNER and not partner_id:
            raise ValueError("a partner token needs a partner id")
        if role is Role.SERVICE and not service:
            raise ValueError("a service token needs the service's name")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now - 5,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
            "sub": subject or _default_subject(role, resident_id, offices, partner_id, service),
            "role": role.value,
        }
        if resident_id is not None:
            claims["resident_id"] = str(resident_id)
        if offices:
            claims["offices"] = sorted(set(offices))
        if partner_id:
            claims["partner_id"] = partner_id
        if service:
            claims["service"] = service
        if name:
            claims["name"] = name
        return self.sign(claims)

    def sign(self, claims: dict[str, Any]) -> str:
        """Any claims signed with the issuer's key (the embedded OIDC provider's ID tokens)."""
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.key_id})  # type: ignore[arg-type]

    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK (the embedded OIDC provider's JWKS)."""
        assert isinstance(self._key, Ed25519PrivateKey), "the embedded issuer signs with Ed25519"
        jwk: dict[str, Any] = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self._key.public_key()))
        return {**jwk, "use": "sig", "alg": "EdDSA"}


def _default_subject(
    role: Role, resident_id: uuid.UUID | str | None, offices: Iterable[str], partner_id: str | None, service: str | None
) -> str:
    if role is Role.RESIDENT:
        return f"resident:{resident_id}"
    if role is Role.PARTNER:
        return f"partner:{partner_id}"
    if role is Role.SERVICE:
        return f"service:{service}"
    return f"{role.value}:{'+'.join(sorted(offices)) or 'all'}"


# ---------------------------------------------------------------------------------------------- verification


class TokenVerifier:
    """Verifies bearer tokens against one public key (embedded issuer) or a JWKS URL (OIDC).

    A verified token's principal is kept until the token expires (``exp``, with the same leeway as verification), so
    a client that sends the same token with every request costs one signature check, not one a request. A cached
    token is refused once expired exactly as a fresh one would be. With a JWKS the cached entry lives at most as long
    as the fetched keys (``KEYS_LIFESPAN``), so a key the provider withdrew stops being trusted as soon as it would
    without the cache."""

    LEEWAY = 10
    KEYS_LIFESPAN = 300
    CACHE_SIZE = 4096

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        public_key_pem: bytes | None = None,
        jwks_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (public_key_pem is None) == (jwks_url is None):
            raise ValueError("give exactly one of a public key or a JWKS URL")
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self._public_key = serialization.load_pem_public_key(public_key_pem) if public_key_pem else None
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=self.KEYS_LIFESPAN) if jwks_url else None
        self._clock = clock
        # token -> (its principal, until when it may be taken from here); oldest first.
        self._verified: dict[str, tuple[Principal, float]] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> TokenVerifier:
        common = {
            "issuer": settings.jwt_issuer,
            "audience": settings.jwt_audience,
            "algorithms": settings.jwt_algorithms,
        }
        if settings.oidc_jwks_url:
            return cls(jwks_url=settings.oidc_jwks_url, **common)
        path = Path(settings.jwt_public_key_file)
        if not path.exists():
            # First start of the embedded issuer: make the key pair beside the configured public key.
            ensure_keypair(path.parent)
        return cls(public_key_pem=path.read_bytes(), **common)

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, until = cached
            if self._clock() < until:
                return principal
            del self._verified[token]
        try:
            if self._jwks is not None:
                # PyJWKClient fetches over blocking urllib; keep it off the event loop.
                signing_key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
            else:
                signing_key = self._public_key
            claims = jwt.decode(
                token,
                signing_key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=self.LEEWAY,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.") from None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise Unauthorized(f"The token is not valid: {exc}.") from None
        principal = principal_from_claims(claims)
        until = float(claims["exp"]) + self.LEEWAY
        if self._jwks is not None:
            until = min(until, self._clock() + self.KEYS_LIFESPAN)
        if self._clock() >= until:
            # Valid by the library's clock but not by ours (they differ only in tests): ours decides.
            raise Unauthorized("The token has expired.")
        if len(self._verified) >= self.CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, until)
        return principal


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    try:
        role = Role(claims.get("role", ""))
    except ValueError:
        raise Unauthorized("The token carries no known role.") from None
    resident_id = None
    if claims.get("resident_id") is not None:
        try:
            resident_id = uuid.UUID(str(claims["resident_id"]))
        except ValueError:
            raise Unauthorized("The token's resident id is not a UUID.") from None
    offices = claims.get("offices") or []
    if not isinstance(offices, list) or not all(isinstance(o, str) for o in offices):
        raise Unauthorized("The token's offices claim must be a list of office codes.")
    principal = Principal(
        subject=str(claims["sub"]),
        role=role,
        resident_id=resident_id,
        offices=frozenset(offices),
        partner_id=claims.get("partner_id"),
        service=claims.get("service"),
        name=claims.get("name"),
    )
    # A token whose scope does not fit its role is refused outright rather than half-trusted.
    if role is Role.RESIDENT and principal.resident_id is None:
        raise Unauthorized("A resident token must name the resident.")
    if role in (Role.CASEWORKER, Role.SUPERVISOR) and not principal.offices:
        raise Unauthorized("A staff token must name at least one office.")
    if role is Role.PARTNER and not principal.partner_id:
        raise Unauthorized("A partner token must name the partner.")
    if role is Role.SERVICE and not principal.service:
        raise Unauthorized("A service token must name the service.")
    return principal


# ---------------------------------------------------------------------------------------------- dependencies


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("A bearer token is required.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.")
    return token.strip()


async def current_principal(request: Request) -> Principal:
    """The authenticated caller. Every route depends on this (the app factory adds it to every router). A dependency
    that needs the caller too calls it rather than depending on it: the verifier keeps a verified token's principal
    (one dictionary lookup), while FastAPI solves a sub-dependency's own tree again at every use even when its value
    is cached (tens of microseconds a request each). Nothing is kept on ``request.state``: some servers share that
    object between requests."""
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify(bearer_token(request))


def require_roles(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates and then refuses (403) any role not listed."""

    async def dependency(request: Request) -> Principal:
        principal = await current_principal(request)
        principal.require(*roles)
        return principal

    dependency.__name__ = f"require_{'_or_'.join(r.value for r in roles)}"
    return dependency
