"""Schemathesis against intake's OpenAPI document, over real HTTP (to it, and from it to the real eligibility
service), on both databases: no input makes a server error, and every answer is as the document declares it (status
code, content type, body, headers)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from services.intake.main import MIGRATIONS, create_app
from services.intake.settings import IntakeSettings
from shared.auth import Role, TokenIssuer
from shared.migrations import upgrade
from tests.services.intake.support import birth_application, resident_body
from tests.support.http import serve
from tests.support.nats import NatsServer
from tests.support.schemathesis import operation_count, phases_for, run_schemathesis
from tests.support.services import service_settings
from tests.support.waiting import wait_until


async def test_every_answer_is_as_documented(
    nats_server: NatsServer,
    bus_prefix: str,
    database_url: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    eligibility_url: str,
    intake_token: str,
    tmp_path: Path,
) -> None:
    settings = service_settings(
        "intake",
        database_url=database_url,
        nats_url=nats_server.url,
        prefix=bus_prefix,
        keys_dir=keys_dir,
        eligibility_url=eligibility_url,
        service_token=intake_token,
    )
    assert isinstance(settings, IntakeSettings)
    await upgrade(settings.database_url, MIGRATIONS)
    resident_id = uuid.uuid4()
    resident_token = issuer.mint(Role.RESIDENT, resident_id=resident_id)
    headers = {"Authorization": f"Bearer {resident_token}"}
    app = create_app(settings)
    async with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await wait_until(ready)
            # Something to find: the caller is registered and has an application.
            assert (await http.post("/v1/residents", json=resident_body())).status_code == 201
            filed = await http.post("/v1/applications", json=birth_application(resident_id))
            assert filed.status_code == 201
            life_events = [e["code"] for e in (await http.get("/v1/life-events")).json()]
        assert "birth" in life_events
        pin_to_real_objects(
            app.openapi(), resident_id=str(resident_id), application_id=filed.json()["id"], life_events=life_events
        )
        # Each operation called by a role it serves: the resident for their own record and applications, notify for
        # the resident's contact details, an administrator for the dead letters.
        tokens = {
            r"^/v1/residents/\{resident_id\}/contact$": issuer.mint(Role.SERVICE, service="notify"),
            r"^/v1/contact-lookups$": issuer.mint(Role.SERVICE, service="notify"),
            "^/v1/admin/": issuer.mint(Role.ADMIN),
            "^/v1/": resident_token,
        }
        result = await run_schemathesis(
            url, tokens=tokens, max_examples=10, phases=phases_for(database_url), report_dir=tmp_path / "schemathesis"
        )
    result.assert_conformant(operation_count(app.openapi()))


def pin_to_real_objects(
    schema: dict[str, Any], *, resident_id: str, application_id: str, life_events: list[str]
) -> None:
    """Make every generated request name the caller's own resident record and application (the served document is
    the app's cached one), so the fuzzed bodies reach the domain logic instead of stopping at 404."""
    ids = {"resident_id": resident_id, "application_id": application_id}
    for operations in schema["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in ids:
                    parameter["schema"] = {"type": "string", "format": "uuid", "enum": [ids[parameter["name"]]]}
    create = schema["components"]["schemas"]["ApplicationCreate"]["properties"]
    create["resident_id"] = {"type": "string", "format": "uuid", "enum": [resident_id]}
    create["life_event"] = {"type": "string", "enum": life_events}
