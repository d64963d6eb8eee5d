"""Helpers for the routing tests: the real service (migrated and seeded), events to feed it, and what it wrote."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
from sqlalchemy import select

from services.routing.context import RoutingContext, Sweeps
from services.routing.models import Case, platform
from shared.auth import TokenIssuer
from shared.events import (
    ApplicationSubmitted,
    Channel,
    CloudEvent,
    ConsentChanged,
    Department,
    EligibilityDetermined,
    EventData,
    FeedbackGiven,
    Language,
    Localized,
    MissingFact,
    Outcome,
    ProgramDetermination,
    ResidentContext,
    Vulnerability,
)
from tests.support.services import RunningService, running_service
from tests.support.waiting import wait_until

JONGNO, JUNG, YONGSAN, MAPO = "11110", "11140", "11170", "11440"
# Long enough that the timer only runs at start-up unless a test asks for it.
QUIET_TIMER = 3600.0


@contextlib.asynccontextmanager
async def routing_service(
    *, nats_url: str, prefix: str, database_url: str, keys_dir: Path, issuer: TokenIssuer, **overrides: Any
) -> AsyncIterator[RunningService]:
    """The routing service on a migrated, seeded database, running against the real NATS, once its SLA timer made
    its start-up pass: a pass that came later, on a slow machine, would judge the test's cases by the real date."""
    values: dict[str, Any] = {"sla_check_interval_seconds": QUIET_TIMER, **overrides}
    async with running_service(
        "routing", database_url=database_url, nats_url=nats_url, prefix=prefix, keys_dir=keys_dir, issuer=issuer,
        seed=True, **values,
    ) as service:  # fmt: skip
        await wait_until(lambda: timer_passes(service) >= 1)
        yield service


def context(service: RunningService) -> RoutingContext:
    return service.context(RoutingContext)


def timer(service: RunningService) -> Sweeps:
    found = context(service).timer
    assert found is not None, "routing's SLA timer is running"
    return found


def timer_passes(service: RunningService) -> float:
    """Complete passes of the SLA timer, as the service's metrics count them."""
    return service.metric("onestop_routing_sla_sweeps_total")


# ---------------------------------------------------------------------------------------------- events in


def program(
    code: str,
    outcome: str = "needs_review",
    *,
    department: str = "welfare",
    automatic: bool = False,
    missing: Sequence[Literal["resident", "staff"]] = (),
    sla_days: int = 5,
    overflow: bool = False,
    weight: float = 1.0,
    amount: int | None = None,
) -> ProgramDetermination:
    return ProgramDetermination(
        program_code=code,
        program_name=Localized(ko=f"{code} (ko)", en=code.replace("_", " ").title()),
        department=Department(department),
        outcome=Outcome(outcome),
        rule_version=1,
        automatic=automatic,
        amount=amount,
        amount_period="monthly" if amount else None,
        missing=[
            MissingFact(
                name=f"fact_{i}",
                type="string",
                question=Localized(ko="질문", en="A question"),
                asked_of=who,
            )
            for i, who in enumerate(missing)
        ],
        sla_days=sla_days,
        overflow_allowed=overflow,
        case_weight=weight,
    )


def determined(
    application_id: uuid.UUID,
    programs: Sequence[ProgramDetermination],
    *,
    round: int = 1,
    resident_id: uuid.UUID | None = None,
    district: str = JONGNO,
    language: str = "ko",
    vulnerability: Sequence[str] = (),
    application_date: dt.date = dt.date(2025, 10, 2),
    trigger: Literal["submitted", "info_provided", "facts_reported", "consent_changed"] = "submitted",
    household_id: uuid.UUID | None = None,
) -> EligibilityDetermined:
    return EligibilityDetermined(
        determination_id=uuid.uuid4(),
        application_id=application_id,
        resident_id=resident_id or uuid.uuid5(uuid.NAMESPACE_URL, str(application_id)),
        round=round,
        trigger=trigger if round == 1 else "info_provided",
        application_date=application_date,
        evaluated_at=dt.datetime.combine(application_date, dt.time(10), dt.UTC),
        resident=ResidentContext(
            district_code=district,
            preferred_language=Language(language),
            vulnerability=[Vulnerability(v) for v in vulnerability],
            household_id=household_id,
        ),
        programs=list(programs),
    )


def consents(resident_id: uuid.UUID, version: int, **partners: bool) -> ConsentChanged:
    """Intake's consent.changed: the resident's full consent set, here ``partner:<id>`` for each partner named
    (``saebom_ngo=True`` is ``partner:saebom-ngo``)."""
    given = {f"partner:{name.replace('_', '-')}": granted for name, granted in partners.items()}
    return ConsentChanged(
        resident_id=resident_id,
        version=version,
        consents={"proactive_screening": False, **given},
        changed=sorted(given),
        changed_at=dt.datetime.now(dt.UTC),
    )


def submitted(application_id: uuid.UUID, channel: str = "web", district: str = JONGNO) -> ApplicationSubmitted:
    """Intake's application.submitted (routing takes the channel from it), for the resident of :func:`determined`."""
    return ApplicationSubmitted(
        application_id=application_id,
        resident_id=uuid.uuid5(uuid.NAMESPACE_URL, str(application_id)),
        life_event="birth",
        answers={},
        channel=Channel(channel),
        application_date=dt.date(2025, 10, 2),
        submitted_at=dt.datetime.now(dt.UTC),
        resident=ResidentContext(district_code=district),
    )


def rated(application_id: uuid.UUID, score: int, channel: str = "web", district: str = JONGNO) -> FeedbackGiven:
    """Intake's feedback.given for an application."""
    return FeedbackGiven(
        application_id=application_id,
        resident_id=uuid.uuid5(uuid.NAMESPACE_URL, str(application_id)),
        life_event="birth",
        channel=Channel(channel),
        district_code=district,
        score=score,
        given_at=dt.datetime.now(dt.UTC),
    )


def offering_body(
    *,
    service_type: str = "childcare",
    districts: Sequence[str] = (JONGNO,),
    languages: Sequence[str] = ("ko",),
    capacity: int = 2,
) -> dict[str, Any]:
    """An offering as ``PUT /v1/partners/{partner_id}/offerings/{code}`` takes it."""
    return {
        "name": {"ko": "새봄 가족지원센터 아이돌봄", "en": "Saebom Family Support Center: childcare"},
        "service_type": service_type,
        "districts": list(districts),
        "languages": list(languages),
        "capacity": capacity,
        "conditions": {"ko": "만 6세 미만 자녀를 둔 가정", "en": "Families with children under 6"},
    }


async def put_offering(service: RunningService, partner_id: str, code: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await service.client.put(
        f"/v1/partners/{partner_id}/offerings/{code}", json=body, headers=service.auth("partner", partner_id=partner_id)
    )
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def feed(service: RunningService, *events: EventData | CloudEvent) -> None:
    for event in events:
        await service.publish(event)
    await wait_until(service.settled)


# ---------------------------------------------------------------------------------------------- what it wrote


async def cases_of(service: RunningService, application_id: uuid.UUID) -> dict[str, Case]:
    async with service.runtime.db.session() as session:
        rows = (await session.execute(select(Case).where(Case.application_id == application_id))).scalars().all()
    return {c.program_code: c for c in rows}


async def emitted(service: RunningService, event_type: str | None = None) -> list[dict[str, Any]]:
    """The data of every event the service wrote to its outbox (in order), optionally of one type. Dead letters, which
    go out through the outbox too, are not events and are left out."""
    table = platform.outbox
    async with service.runtime.db.session() as session:
        payloads = (await session.execute(select(table.c.payload).order_by(table.c.id))).scalars().all()
    events = [e for e in (orjson.loads(p) for p in payloads) if "type" in e]
    return [
        {**e["data"], "_type": e["type"].removeprefix("onestop.")}
        for e in events
        if event_type is None or e["type"] == f"onestop.{event_type}"
    ]


async def office_body(service: RunningService, code: str) -> dict[str, Any]:
    """An office as ``PUT /v1/offices/{code}`` takes it, read back from the API."""
    response = await service.client.get(f"/v1/offices/{code}", headers=service.auth("admin"))
    assert response.status_code == 200, response.text
    body = response.json()
    return {k: body[k] for k in ("name", "kind", "departments", "districts", "languages", "capacity", "neighbours",
                                 "supervisors", "fallback")}  # fmt: skip


def problem(response: Any, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 answer with this status; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body
