"""Schemathesis against notify over real HTTP, on both databases: no input makes a server error, and every answer is
as the OpenAPI document declares it (status code, content type, body, headers)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from onestop.registry import BY_NAME
from services.notify.main import create_app
from shared.auth import Role, TokenIssuer
from shared.migrations import upgrade
from tests.support.http import serve
from tests.support.nats import NatsServer
from tests.support.schemathesis import operation_count, phases_for, run_schemathesis
from tests.support.services import service_settings


async def test_every_answer_is_as_documented(
    database_url: str,
    nats_server: NatsServer,
    bus_prefix: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    notify_settings: dict[str, Any],
    tmp_path: Path,
) -> None:
    settings = service_settings(
        "notify", database_url=database_url, nats_url=nats_server.url, prefix=bus_prefix, keys_dir=keys_dir,
        **notify_settings,
    )  # fmt: skip
    await upgrade(settings.database_url, BY_NAME["notify"].migrations)
    app = create_app(settings)  # type: ignore[arg-type]
    # Each operation called by the role it is meant for (elsewhere it only meets 403s, which the authorization matrix
    # in test_api.py covers).
    tokens = {
        "^/v1/(partners|notification-deliveries|letters|admin)": issuer.mint(Role.ADMIN),
        "^/v1/(subscriptions|deliveries)": issuer.mint(Role.PARTNER, partner_id="schema-partner"),
        "^/v1/(inbox|preferences|access-log)": issuer.mint(Role.RESIDENT, resident_id=uuid.uuid4()),
    }
    async with serve(app) as url:
        result = await run_schemathesis(
            url, tokens=tokens, max_examples=5, phases=phases_for(database_url), report_dir=tmp_path / "schemathesis"
        )
    result.assert_conformant(operation_count(app.openapi()))
