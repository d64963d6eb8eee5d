"""Authentication: every endpoint of every service refuses a request without a valid token (401 problem+json)."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.dependencies.models import Dependant

from onestop.registry import SERVICES
from services.intake.main import create_app
from services.intake.settings import IntakeSettings
from shared.auth import Role, TokenIssuer, TokenVerifier, current_principal, principal_from_claims
from shared.problems import Unauthorized
from shared.service import OPS_PATHS
from tests.support.nats import NatsServer
from tests.support.services import RunningService, running_service, service_settings


def _foreign_token(role: str = "admin") -> str:
    """A well-formed token with the right issuer and audience, signed by a key that is not ours."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return TokenIssuer(pem).mint(role, offices=["X"] if role in ("caseworker", "supervisor") else ())


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


def _endpoints(service: RunningService) -> list[tuple[str, str]]:
    """Every operation the service documents (its OpenAPI document is the contract), but the operational ones."""
    paths = service.app.openapi()["paths"]
    return [(m.upper(), p) for p, ops in paths.items() if p not in OPS_PATHS for m in ops]


@pytest.mark.parametrize("service_name", [s.name for s in SERVICES])
async def test_every_endpoint_refuses_a_missing_or_foreign_token(
    service_name: str, nats_server: NatsServer, bus_prefix: str, keys_dir: Path, issuer: TokenIssuer, tmp_path: Path
) -> None:
    async with running_service(
        service_name,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        nats_url=nats_server.url,
        prefix=bus_prefix,
        keys_dir=keys_dir,
        issuer=issuer,
    ) as service:
        endpoints = _endpoints(service)
        assert ("GET", "/v1/admin/dead-letters") in endpoints
        expired = issuer.mint(Role.ADMIN, ttl_seconds=-60)
        wrong_audience = TokenIssuer((keys_dir / "issuer.pem").read_bytes(), audience="someone-else").mint(Role.ADMIN)
        bad_headers: list[dict[str, str]] = [
            {},
            {"Authorization": "Bearer not-a-jwt"},
            {"Authorization": f"Basic {issuer.mint(Role.ADMIN)}"},
            {"Authorization": f"Bearer {_foreign_token()}"},
            {"Authorization": f"Bearer {expired}"},
            {"Authorization": f"Bearer {wrong_audience}"},
        ]
        for method, path in endpoints:
            for headers in bad_headers:
                response = await service.client.request(method, _concrete(path), headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                body = response.json()
                assert body["status"] == 401
                assert body["title"] == "Unauthorized"
                assert response.headers["www-authenticate"].startswith("Bearer")

        # And a valid token of a role the endpoint does not allow is refused with 403, not let through.
        response = await service.client.get("/v1/admin/dead-letters", headers=service.auth("partner", partner_id="p1"))
        assert response.status_code == 403
        response = await service.client.get("/v1/admin/dead-letters", headers=service.auth("admin"))
        assert response.status_code == 200
        assert response.json() == []


async def test_the_operational_endpoints_need_no_token(
    nats_server: NatsServer, bus_prefix: str, keys_dir: Path, issuer: TokenIssuer, tmp_path: Path
) -> None:
    async with running_service(
        "intake",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        nats_url=nats_server.url,
        prefix=bus_prefix,
        keys_dir=keys_dir,
        issuer=issuer,
    ) as service:
        assert (await service.client.get("/healthz")).json() == {"status": "ok"}
        ready = (await service.client.get("/readyz")).json()
        assert ready == {"status": "ready", "checks": {"database": "ok", "nats": "ok", "consumers": "ok"}}
        metrics = (await service.client.get("/metrics")).text
        assert 'onestop_service_info{service="intake"} 1.0' in metrics
        assert 'onestop_http_requests_total{method="GET",route="/readyz",status="200"}' in metrics


async def test_a_verified_token_becomes_a_principal_with_its_scope(issuer: TokenIssuer, keys_dir: Path) -> None:
    verifier = TokenVerifier(
        issuer="onestop-embedded",
        audience="onestop",
        algorithms=["EdDSA"],
        public_key_pem=(keys_dir / "issuer.pub.pem").read_bytes(),
    )
    resident = uuid.uuid4()
    principal = await verifier.verify(issuer.mint(Role.RESIDENT, resident_id=resident))
    assert (principal.role, principal.resident_id, principal.subject) == (
        Role.RESIDENT,
        resident,
        f"resident:{resident}",
    )
    caseworker = await verifier.verify(issuer.mint(Role.CASEWORKER, offices=["JN-WEL", "JN-CSC"], name="Kim"))
    assert caseworker.offices == frozenset({"JN-WEL", "JN-CSC"})
    assert caseworker.works_in("JN-WEL")
    assert not caseworker.works_in("MP-WEL")
    assert caseworker.is_staff
    partner = await verifier.verify(issuer.mint(Role.PARTNER, partner_id="bank-1"))
    assert (partner.partner_id, partner.is_staff) == ("bank-1", False)


class _Clock:
    """The verifier's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_cached_token_stops_verifying_once_it_has_expired(issuer: TokenIssuer, keys_dir: Path) -> None:
    clock = _Clock()
    verifier = TokenVerifier(
        issuer="onestop-embedded",
        audience="onestop",
        algorithms=["EdDSA"],
        public_key_pem=(keys_dir / "issuer.pub.pem").read_bytes(),
        clock=clock,
    )
    resident = uuid.uuid4()
    token = issuer.mint(Role.RESIDENT, resident_id=resident, ttl_seconds=60)
    first = await verifier.verify(token)
    clock.now += 60  # expired, but within the leeway verification allows for clock skew
    assert await verifier.verify(token) == first
    clock.now += TokenVerifier.LEEWAY
    with pytest.raises(Unauthorized, match="expired"):
        await verifier.verify(token)
    with pytest.raises(Unauthorized, match="expired"):
        await verifier.verify(token)  # and stays refused

    # A token that differs in one character is not the cached one: it is verified, and refused.
    other = issuer.mint(Role.RESIDENT, resident_id=resident, ttl_seconds=3600)
    clock.now = time.time()
    assert (await verifier.verify(other)).resident_id == resident
    tampered = other[:-2] + ("A" if other[-2] != "A" else "B") + other[-1]
    with pytest.raises(Unauthorized, match="not valid"):
        await verifier.verify(tampered)


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "resident"},  # a resident token that names no resident
        {"role": "resident", "resident_id": "not-a-uuid"},
        {"role": "caseworker"},  # staff without an office
        {"role": "partner"},
        {"role": "service"},
        {"role": "superuser"},
        {"role": "caseworker", "offices": "JN-WEL"},  # offices must be a list
    ],
)
def test_tokens_whose_scope_does_not_fit_the_role_are_refused(claims: dict[str, object]) -> None:
    with pytest.raises(Unauthorized):
        principal_from_claims({"sub": "x", **claims})


def test_the_issuer_refuses_to_mint_a_token_without_its_scope(issuer: TokenIssuer) -> None:
    with pytest.raises(ValueError, match="resident id"):
        issuer.mint(Role.RESIDENT)
    with pytest.raises(ValueError, match="office"):
        issuer.mint(Role.SUPERVISOR)


def test_minted_tokens_carry_issuer_audience_and_expiry(issuer: TokenIssuer) -> None:
    token = issuer.mint(Role.ADMIN, ttl_seconds=600)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "onestop-embedded"
    assert claims["aud"] == "onestop"
    assert claims["role"] == "admin"
    assert 590 <= claims["exp"] - int(time.time()) <= 600
    assert dt.datetime.fromtimestamp(claims["iat"], dt.UTC) <= dt.datetime.now(dt.UTC)


def _routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes as FastAPI serves them, each with its dependencies and those of the routers it was included with."""
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            yield from _routes(candidates())
        elif getattr(route, "dependant", None) is not None:
            yield route


def _depths(dependant: Dependant, call: Any, depth: int = 0) -> Iterator[int]:
    if dependant.call is call:
        yield depth
    for sub in dependant.dependencies:
        yield from _depths(sub, call, depth + 1)


def test_a_route_depends_on_its_caller_only_at_its_top(tmp_path: Path, keys_dir: Path) -> None:
    """The app factory makes every route depend on the caller; what needs the caller besides (a role check, the
    unit of work that honours ``Idempotency-Key``) calls for it, which the verifier answers from its cache, rather
    than depending on it: FastAPI solves a sub-dependency again wherever it appears, its value cached or not, at a
    cost per request well above the call's (a filing solved the caller three times). Intake's routes, which use
    both of the shared ones."""
    settings = service_settings(
        "intake", database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", nats_url="nats://127.0.0.1:1",
        prefix="onestop", keys_dir=keys_dir,
    )  # fmt: skip
    assert isinstance(settings, IntakeSettings)
    app = create_app(settings)
    checked = 0
    for route in _routes(app.router.routes):
        path = getattr(route.original_route, "path", "")
        if path in OPS_PATHS:
            continue
        depths = list(_depths(route.dependant, current_principal))
        assert set(depths) == {1}, (path, depths)
        checked += 1
    assert checked > 1
