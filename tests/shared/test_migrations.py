"""Each service's Alembic history builds exactly its models, on SQLite and PostgreSQL, runs twice harmlessly and walks
back to nothing and up again; the move to the platform audit log keeps every entry."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection

from onestop.registry import BY_NAME, SERVICES
from shared.db import create_engine
from shared.migrations import alembic_config, current, for_dialect, upgrade

NAMES = [s.name for s in SERVICES]


def _metadata(service: str) -> MetaData:
    module = __import__(f"services.{service}.models", fromlist=["Base"])
    metadata: MetaData = module.Base.metadata
    return metadata


def _head(service: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(BY_NAME[service].migrations, "sqlite://")).get_current_head()
    assert head is not None
    return head


async def _run(url: str, work: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


async def _diff(url: str, service: str) -> list[object]:
    return list(
        await _run(
            url,
            lambda c: compare_metadata(
                MigrationContext.configure(
                    c, opts={"compare_type": True, "include_object": for_dialect(c.dialect.name)}
                ),
                _metadata(service),
            ),
        )
    )


async def _downgrade(url: str, service: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config(BY_NAME[service].migrations, url)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    await _run(url, run)


async def _tables(url: str) -> set[str]:
    return set(await _run(url, lambda c: inspect(c).get_table_names()))


@pytest.mark.parametrize("service", NAMES)
async def test_the_migrations_build_exactly_the_models_and_walk_back(service: str, database_url: str) -> None:
    migrations = BY_NAME[service].migrations
    await upgrade(database_url, migrations)
    await upgrade(database_url, migrations)  # a second run is a no-op, not an error
    assert await current(database_url) == _head(service)
    assert await _diff(database_url, service) == [], f"{service}: models and migrations differ"

    await _downgrade(database_url, service, "base")
    assert await _tables(database_url) <= {"alembic_version"}

    await upgrade(database_url, migrations)
    assert await _diff(database_url, service) == []


# ---------------------------------------------------------------------------------------------- the audit log

AT = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
RESIDENT = uuid.uuid4()


async def _audit_entries(url: str) -> list[dict[str, Any]]:
    def read(c: Connection) -> list[dict[str, Any]]:
        rows = c.execute(
            text(
                "SELECT actor, actor_role, action, record_type, record_id, resident_id, purpose FROM audit_log "
                "ORDER BY id"
            )
        ).mappings()
        return [dict(r) for r in rows]

    return list(await _run(url, read))


async def test_intakes_access_log_moves_into_the_audit_log_with_every_entry_in_order(database_url: str) -> None:
    migrations = BY_NAME["intake"].migrations
    await upgrade(database_url, migrations, "0002")
    resident = RESIDENT.hex if database_url.startswith("sqlite") else str(RESIDENT)

    def fill(c: Connection) -> None:
        c.execute(
            text(
                "INSERT INTO residents (id, name, birth_date, district_code, address, household, preferred_language, "
                "preferred_channels, vulnerability, version, consent_version, registered_by, assisted, created_at, "
                "updated_at) VALUES (:id, 'R', '1990-01-01', '11110', 'a', '[]', 'ko', '[]', '[]', 1, 0, 'x', true, "
                ":at, :at)"
            ),
            {"id": resident, "at": AT},
        )
        for n in range(3):
            c.execute(
                text(
                    "INSERT INTO access_log (resident_id, at, actor, actor_role, actor_name, offices, action, "
                    "record_type, record_id, purpose) VALUES (:r, :at, :actor, 'caseworker', 'Lee', '[\"JONGNO\"]', "
                    "'read', 'resident', :record, 'case review')"
                ),
                {"r": resident, "at": AT + dt.timedelta(minutes=n), "actor": f"cw-{n}", "record": f"rec-{n}"},
            )

    await _run(database_url, fill)
    await upgrade(database_url, migrations)
    entries = await _audit_entries(database_url)
    assert [e["actor"] for e in entries] == ["cw-0", "cw-1", "cw-2"]
    assert {(e["actor_role"], e["action"], e["record_type"], e["purpose"]) for e in entries} == {
        ("caseworker", "read", "resident", "case review")
    }
    assert [uuid.UUID(str(e["resident_id"])) for e in entries] == [RESIDENT] * 3
    assert "access_log" not in await _tables(database_url)


@pytest.mark.parametrize("service", ["routing", "eligibility"])
async def test_a_services_own_audit_table_moves_into_the_platform_audit_log(service: str, database_url: str) -> None:
    migrations = BY_NAME[service].migrations
    await upgrade(database_url, migrations, "0002")

    def fill(c: Connection) -> None:
        for n in range(2):
            c.execute(
                text(
                    "INSERT INTO audit_log (at, actor, role, action, object_type, object_id, purpose) "
                    "VALUES (:at, :actor, 'supervisor', 'case.read', 'case', :object, 'casework')"
                ),
                {"at": AT + dt.timedelta(minutes=n), "actor": f"sv-{n}", "object": f"obj-{n}"},
            )

    await _run(database_url, fill)
    await upgrade(database_url, migrations)
    assert await _audit_entries(database_url) == [
        {
            "actor": f"sv-{n}",
            "actor_role": "supervisor",
            "action": "case.read",
            "record_type": "case",
            "record_id": f"obj-{n}",
            "resident_id": None,
            "purpose": "casework",
        }
        for n in range(2)
    ]
    await _downgrade(database_url, service, "0002")
    assert "audit_log" in await _tables(database_url), "walking back restores the service's own table"


async def test_notifys_grants_get_a_purpose_and_the_partner_consents_it_knew_are_kept(database_url: str) -> None:
    """0004: a grant made before purposes existed is for notification (no amounts); the partner consents the residents'
    consumer kept are copied for the partners' consumer, so no consented feed stops at the upgrade."""
    migrations = BY_NAME["notify"].migrations
    await upgrade(database_url, migrations, "0003")
    sqlite = database_url.startswith("sqlite")
    consenting, other = uuid.uuid4(), uuid.uuid4()

    def fill(c: Connection) -> None:
        c.execute(
            text(
                "INSERT INTO partners (id, name, created_at, updated_at, updated_by) "
                "VALUES ('bank', 'B', :at, :at, 'a')"
            ),
            {"at": AT},
        )
        c.execute(
            text(
                "INSERT INTO partner_grants (partner_id, event_type, granted_at, granted_by) "
                "VALUES ('bank', 'case.decided', :at, 'a')"
            ),
            {"at": AT},
        )
        for resident, consents in [
            (consenting, '{"partner:bank": true, "partner:ngo:case.routed": true, "partner:x": false, '
                         '"proactive_screening": true}'),
            (other, '{"proactive_screening": true}'),
        ]:  # fmt: skip
            c.execute(
                text(
                    "INSERT INTO residents (resident_id, consents, consent_version, profile_version, updated_at) "
                    "VALUES (:r, :consents, 4, 0, :at)"
                ),
                {"r": resident.hex if sqlite else str(resident), "consents": consents, "at": AT},
            )

    await _run(database_url, fill)
    await upgrade(database_url, migrations)

    def read(c: Connection) -> tuple[list[Any], list[Any]]:
        grants = [tuple(r) for r in c.execute(text("SELECT event_type, purpose FROM partner_grants"))]
        consents = [tuple(r) for r in c.execute(text("SELECT resident_id, purposes, version FROM partner_consents"))]
        return grants, consents

    grants, consents = await _run(database_url, read)
    assert grants == [("case.decided", "notification")]
    [(resident, purposes, version)] = consents
    assert uuid.UUID(str(resident)) == consenting
    assert (json.loads(purposes) if isinstance(purposes, str) else purposes) == [
        "partner:bank",
        "partner:ngo:case.routed",
    ]
    assert version == 4


# The revision before each service's step that adds on whose behalf and under which authority to the audit log.
BEFORE_AUTHORITY = {"intake": "0003", "notify": "0004", "routing": "0003", "eligibility": "0004"}


@pytest.mark.parametrize("service", NAMES)
async def test_the_audit_logs_authority_columns_keep_every_earlier_entry(service: str, database_url: str) -> None:
    migrations = BY_NAME[service].migrations
    await upgrade(database_url, migrations, BEFORE_AUTHORITY[service])
    resident = RESIDENT.hex if database_url.startswith("sqlite") else str(RESIDENT)

    def fill(c: Connection) -> None:
        c.execute(
            text(
                "INSERT INTO audit_log (at, actor, actor_role, offices, action, record_type, record_id, resident_id, "
                "purpose) VALUES (:at, 'cw-1', 'caseworker', '[]', 'read', 'resident', 'rec-1', :r, 'case review')"
            ),
            {"at": AT, "r": resident},
        )

    await _run(database_url, fill)
    await upgrade(database_url, migrations)

    def read(c: Connection) -> list[dict[str, Any]]:
        query = "SELECT actor, resident_id, on_behalf_of, authority_kind, authority_id FROM audit_log"
        return [dict(r) for r in c.execute(text(query)).mappings()]

    [entry] = await _run(database_url, read)
    assert entry["actor"] == "cw-1"
    assert uuid.UUID(str(entry["resident_id"])) == RESIDENT
    assert (entry["on_behalf_of"], entry["authority_kind"], entry["authority_id"]) == (None, None, None)

    await _downgrade(database_url, service, BEFORE_AUTHORITY[service])
    assert [e["actor"] for e in await _audit_entries(database_url)] == ["cw-1"], "walking back keeps the entry"
