"""What is answered before a route runs, in every service as its OpenAPI document says: a body that is not JSON (or
not even UTF-8) is invalid input like any other — 422, naming the body and the reason; a 405's ``Allow`` names every
method of the path; a call without a token is a 401 that names the scheme."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.auth import TokenIssuer
from shared.problems import PROBLEM_JSON
from tests.support.nats import NatsServer
from tests.support.services import RunningService, running_service

SERVICES = ("eligibility", "intake", "routing", "notify")
WITH_BODY = ("post", "put", "patch")
METHODS = ("get", "put", "post", "delete", "patch")

UNREADABLE = {
    "not UTF-8": (b'{"name": "\xff"}', "not UTF-8 (at byte 10)"),
    "UTF-8, not JSON": (b"{name: 1}", "Expecting property name enclosed in double quotes (at character 1)"),
    "a UTF-16 byte order mark": (b"\xff\xfe", "Expecting value (at character 0)"),
}


@pytest.fixture(params=SERVICES)
async def service(
    request: pytest.FixtureRequest,
    nats_server: NatsServer,
    bus_prefix: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    tmp_path: Path,
) -> AsyncIterator[RunningService]:
    async with running_service(
        request.param,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'service.db'}",
        nats_url=nats_server.url,
        prefix=bus_prefix,
        keys_dir=keys_dir,
        issuer=issuer,
    ) as running:
        yield running


def _operations(schema: dict[str, Any], methods: tuple[str, ...]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if method in methods
    ]


def _url(path: str, operation: dict[str, Any]) -> str:
    """The path with a well-formed value for each parameter, so that nothing but the body is wrong."""
    formats = {p["name"]: p.get("schema", {}).get("format") for p in operation.get("parameters", [])}
    return re.sub(r"\{([^}]+)\}", lambda m: str(uuid.uuid4()) if formats.get(m.group(1)) == "uuid" else "code", path)


async def test_a_body_that_is_not_json_is_a_documented_422_naming_the_body(service: RunningService) -> None:
    schema = service.app.openapi()
    operations = [op for op in _operations(schema, WITH_BODY) if "requestBody" in op[2]]
    assert len(operations) >= 4, f"{service.name} has only {len(operations)} operations with a body"
    failures = []
    for method, path, operation in operations:
        if PROBLEM_JSON not in operation["responses"].get("422", {}).get("content", {}):
            failures.append(f"{method.upper()} {path}: 422 problem+json not documented")
        for case, (body, reason) in UNREADABLE.items():
            response = await service.client.request(
                method,
                _url(path, operation),
                content=body,
                headers={**service.auth("admin"), "Content-Type": "application/json"},
            )
            expected = {
                "status": 422,
                "detail": "Invalid input: body",
                "errors": [{"field": "body", "message": f"not valid JSON: {reason}", "type": "json_invalid"}],
            }
            answer = response.json()
            got = {key: answer.get(key) for key in expected}
            if response.headers["content-type"] != PROBLEM_JSON or response.status_code != 422 or got != expected:
                failures.append(f"{method.upper()} {path} with {case}: {response.status_code} {response.text}")
    assert failures == []


async def test_a_method_the_path_lacks_is_a_405_that_allows_every_method_it_has(service: RunningService) -> None:
    schema = service.app.openapi()
    failures = []
    checked = 0
    for path, operations in schema["paths"].items():
        declared = {method.upper() for method in operations}
        if len(declared) < 2:
            continue
        checked += 1
        missing = next(method for method in METHODS if method.upper() not in declared)
        operation = next(iter(operations.values()))
        response = await service.client.request(missing, _url(path, operation), headers=service.auth("admin"))
        allowed = {method.strip() for method in response.headers.get("allow", "").split(",")}
        if response.status_code != 405 or allowed != declared:
            failures.append(f"{missing.upper()} {path}: {response.status_code}, Allow {sorted(allowed)}")
        elif response.headers["content-type"] != PROBLEM_JSON:
            failures.append(f"{missing.upper()} {path}: {response.headers['content-type']}")
    # Every service has a resource with two methods in two routes (GET and PUT of an office, say).
    assert checked >= 1
    assert failures == []


async def test_a_call_without_a_token_is_a_documented_401_naming_the_scheme(service: RunningService) -> None:
    schema = service.app.openapi()
    operations = [op for op in _operations(schema, METHODS) if op[1].startswith("/v1/")]
    assert len(operations) >= 5, f"{service.name} has only {len(operations)} operations"
    failures = []
    for method, path, operation in operations:
        declared = operation["responses"].get("401", {}).get("headers", {}).get("WWW-Authenticate", {})
        if declared.get("required") is not True:
            failures.append(f"{method.upper()} {path}: WWW-Authenticate not declared")
        response = await service.client.request(method, _url(path, operation))
        if response.status_code != 401 or response.headers["content-type"] != PROBLEM_JSON:
            failures.append(f"{method.upper()} {path}: {response.status_code} {response.headers['content-type']}")
        elif response.headers.get("www-authenticate") != 'Bearer realm="onestop"':
            failures.append(f"{method.upper()} {path}: WWW-Authenticate {response.headers.get('www-authenticate')}")
    assert failures == []
