"""The SLA timer: a breach is recorded, escalated to the office's supervisors and published exactly once, across
restarts of the service on the same database; a case waiting on the resident does not breach."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from services.routing.models import SlaBreach
from shared.auth import TokenIssuer
from tests.services.routing.support import cases_of, determined, emitted, feed, program, routing_service, timer_passes
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.services import RunningService
from tests.support.waiting import wait_until

MONDAY = dt.date(2025, 9, 29)


async def passes(service: RunningService, n: int) -> None:
    """Wait for ``n`` more complete passes of the timer."""
    target = timer_passes(service) + n
    await wait_until(lambda: _reached(service, target), timeout=20)


async def _reached(service: RunningService, target: float) -> bool:
    return timer_passes(service) >= target


async def test_a_breach_fires_once_across_restarts_and_a_paused_case_never_breaches(
    nats_server: NatsServer, bus_prefix: str, database_url: str, keys_dir: Path, issuer: TokenIssuer
) -> None:
    common: dict[str, Any] = {
        "nats_url": nats_server.url,
        "prefix": bus_prefix,
        "database_url": database_url,
        "keys_dir": keys_dir,
        "issuer": issuer,
        "sla_check_interval_seconds": 0.05,
    }
    app = uuid.uuid4()
    async with contextlib.AsyncExitStack() as stack:
        # Monday 29 Sep: three cases; "late" is due Wednesday 1 Oct, the others on Tuesday 14 Oct (after Chuseok).
        async with routing_service(**common, today=MONDAY) as routing:
            # Watches the stream (which the first start created) across all the restarts.
            log = await stack.enter_async_context(event_log(nats_server.url, bus_prefix))
            await feed(
                routing,
                determined(
                    app,
                    [program("late", sla_days=2), program("later", sla_days=6), program("paused", sla_days=6)],
                    application_date=MONDAY,
                ),
            )
            cases = await cases_of(routing, app)
            assert {c: cases[c].due_date for c in cases} == {
                "late": dt.date(2025, 10, 1),
                "later": dt.date(2025, 10, 14),
                "paused": dt.date(2025, 10, 14),
            }
            paused_id = cases["paused"].id
            alice = routing.auth("caseworker", subject="caseworker:alice", offices=["JONGNO-CSC"])
            await routing.client.post(f"/v1/cases/{paused_id}/claim", headers=alice)
            response = await routing.client.post(
                f"/v1/cases/{paused_id}/request-info", headers=alice, json={"questions": [{"text": "Your lease?"}]}
            )
            assert response.status_code == 200, response.text
            await passes(routing, 2)
            assert await routing.count(SlaBreach) == 0  # nothing is late yet

        # Thursday 2 Oct, after a restart: "late" is breached, once, however many passes run.
        thursday = dt.date(2025, 10, 2)
        async with routing_service(**common, today=thursday) as routing:
            await log.wait_for("case.sla_breached")
            await passes(routing, 3)
            breached = await emitted(routing, "case.sla_breached")
            # The new promise: five working days (the default) from the breach, skipping the Foundation Day,
            # Chuseok and Hangul Day holidays of 3 and 6-9 October: Friday 10 to Thursday 16 October.
            assert [(e["program_code"], e["due_date"], e["expected_by"]) for e in breached] == [
                ("late", "2025-10-01", "2025-10-16")
            ]
            escalated = await emitted(routing, "case.escalated")
            assert [(e["program_code"], e["escalated_by"], e["reason"]) for e in escalated] == [
                ("late", "system:sla-timer", "sla_breached")
            ]
            late = (await cases_of(routing, app))["late"]
            assert (late.breached_on, late.escalated, late.priority) == (thursday, True, 4)
            detail = (await routing.client.get(f"/v1/cases/{late.id}", headers=routing.auth("admin"))).json()
            assert [h["action"] for h in detail["history"]][-2:] == ["sla_breached", "escalated"]
            assert detail["history"][-2]["details"]["expected_by"] == "2025-10-16"
            assert detail["history"][-1]["details"]["to"] == ["staff:jongno-csc-lead"]
            assert detail["sla"]["working_days_left"] == -1
            metrics = (await routing.client.get("/metrics")).text
            assert 'onestop_routing_sla_breaches_total{office="JONGNO-CSC"} 1.0' in metrics
            assert 'onestop_routing_open_cases{office="JONGNO-CSC"} 3.0' in metrics

        # Restarted again on the same day: the breach is in the database, so nothing fires a second time.
        async with routing_service(**common, today=thursday) as routing:
            await passes(routing, 3)
            assert len(await emitted(routing, "case.sla_breached")) == 1
            assert await routing.count(SlaBreach) == 1

        # Wednesday 15 Oct: "later" is now overdue too, "paused" (waiting on the resident) is not.
        async with routing_service(**common, today=dt.date(2025, 10, 15)) as routing:
            await log.wait_for("case.sla_breached", count=2)
            await passes(routing, 3)
            breached = await emitted(routing, "case.sla_breached")
            assert sorted(e["program_code"] for e in breached) == ["late", "later"]
            async with routing.runtime.db.session() as session:
                rows = (await session.execute(select(SlaBreach.case_id, SlaBreach.due_date))).all()
            assert len(rows) == 2
            assert paused_id not in {r.case_id for r in rows}

        assert len(log.of_type("case.sla_breached")) == 2
