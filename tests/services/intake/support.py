"""Helpers of the intake tests: realistic residents and applications (in the terms of eligibility's real catalogue:
its life events, fact names and program codes; routing's real offices), and the downstream events (eligibility,
routing, notify) published on the real bus."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from shared.bus import MSG_ID_HEADER
from shared.events import (
    CloudEvent,
    CriterionResult,
    CriterionStatus,
    Department,
    EventData,
    Localized,
    MissingFact,
    Outcome,
    ProgramDetermination,
    ResidentContext,
    new_event,
    subject_for,
)
from tests.support.services import RunningService
from tests.support.waiting import wait_until

# Offices of routing's catalogue (services/routing/offices.yaml).
MAPO_CSC = "MAPO-CSC"  # Mapo-gu's community service centre: welfare and civil registry for district 11440
YONGSAN_CSC = "YONGSAN-CSC"  # Yongsan-gu's, the neighbour that takes Mapo's overflow
JONGNO_CSC = "JONGNO-CSC"
SEOUL_WEST_EMP = "SEOUL-WEST-EMP"  # the employment centre (labour) for district 11440

JSON = dict[str, Any]


def resident_body(**overrides: Any) -> JSON:
    body: JSON = {
        "name": "김지은",
        "birth_date": "1992-04-17",
        "district_code": "11440",
        "address": "서울특별시 마포구 월드컵북로 212",
        "household": [
            {"relation": "spouse", "birth_date": "1990-11-02", "monthly_income": 3_100_000},
            {"relation": "child", "birth_date": "2021-06-30"},
        ],
        "email": "jieun.kim@example.kr",
        "phone": "+82 10-2345-6789",
        "preferred_language": "ko",
        "preferred_channels": ["inbox", "email"],
        "vulnerability": ["low_income"],
    }
    body.update(overrides)
    return body


def birth_application(resident_id: uuid.UUID | str, **overrides: Any) -> JSON:
    body: JSON = {
        "resident_id": str(resident_id),
        "life_event": "birth",
        "answers": {
            "child_birth_date": (dt.date.today() - dt.timedelta(days=12)).isoformat(),
            "earned_income": 4_200_000,
            "household_size": 4,
            "employment_status": "employed",
        },
        "channel": "mobile",
    }
    body.update(overrides)
    return body


async def register_self(
    service: RunningService, resident_id: uuid.UUID | None = None, **overrides: Any
) -> tuple[uuid.UUID, dict[str, str]]:
    """A resident registers themselves; returns their id and their auth headers."""
    resident_id = resident_id or uuid.uuid4()
    headers = service.auth("resident", resident_id=resident_id)
    response = await service.client.post("/v1/residents", json=resident_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return resident_id, headers


async def file_application(service: RunningService, headers: dict[str, str], body: JSON) -> JSON:
    response = await service.client.post("/v1/applications", json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: JSON = response.json()
    return result


async def view_when(
    service: RunningService,
    headers: dict[str, str],
    application_id: str,
    predicate: Callable[[JSON], bool],
    timeout: float = 20.0,
) -> JSON:
    """Poll the status view until ``predicate`` holds; returns that view."""
    seen: JSON = {}

    async def ready() -> bool:
        nonlocal seen
        response = await service.client.get(f"/v1/applications/{application_id}", headers=headers)
        assert response.status_code == 200, response.text
        seen = response.json()
        return predicate(seen)

    try:
        await wait_until(ready, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"status view never matched; last seen: {seen}") from None
    return seen


def problem_fields(response: httpx.Response) -> set[str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return {e["field"] for e in response.json().get("errors", [])}


# ---------------------------------------------------------------------------------------------- events


class Downstream:
    """Builds downstream events for one application with increasing event times, and publishes them."""

    def __init__(self, service: RunningService, application: JSON, start: dt.datetime | None = None) -> None:
        self.service = service
        self.application_id = uuid.UUID(application["id"])
        self.resident_id = uuid.UUID(application["resident_id"])
        self.clock = start or dt.datetime.now(dt.UTC)

    def tick(self) -> dt.datetime:
        """Strictly increasing, and never before now (so intake's own entries, stamped now, interleave truly)."""
        self.clock = max(self.clock + dt.timedelta(milliseconds=1), dt.datetime.now(dt.UTC))
        return self.clock

    def event(self, data: EventData, source: str) -> CloudEvent:
        at = self.tick()
        return new_event(data, source=source).model_copy(update={"time": at})

    async def publish(self, *events: CloudEvent) -> None:
        for event in events:
            await self.service.runtime.bus.publish_event(event)

    async def redeliver(self, event: CloudEvent) -> None:
        """The same event again under another message id, so JetStream's de-duplication lets it through and only
        the consumer's inbox can catch it."""
        subject = subject_for(self.service.runtime.bus.prefix, event.event_type)
        await self.service.runtime.bus.js.publish(
            subject, event.to_json(), headers={MSG_ID_HEADER: f"{event.id}-redelivered"}
        )

    @property
    def context(self) -> ResidentContext:
        return ResidentContext(district_code="11440", vulnerability=["low_income"])

    def case_fields(
        self,
        case_id: uuid.UUID,
        program_code: str,
        office: str = MAPO_CSC,
        department: Department = Department.WELFARE,
    ) -> JSON:
        return {
            "case_id": case_id,
            "application_id": self.application_id,
            "resident_id": self.resident_id,
            "program_code": program_code,
            "department": department,
            "office_code": office,
        }


def program(
    code: str,
    ko: str,
    en: str,
    outcome: Outcome,
    *,
    department: Department = Department.WELFARE,
    automatic: bool = False,
    amount: int | None = None,
    period: str | None = None,
    missing: list[MissingFact] | None = None,
    sla_days: int = 30,
) -> ProgramDetermination:
    status = {
        Outcome.ELIGIBLE: CriterionStatus.PASSED,
        Outcome.INELIGIBLE: CriterionStatus.FAILED,
        Outcome.NEEDS_INFORMATION: CriterionStatus.UNKNOWN,
        Outcome.NEEDS_REVIEW: CriterionStatus.UNKNOWN,
    }[outcome]
    return ProgramDetermination(
        program_code=code,
        program_name=Localized(ko=ko, en=en),
        department=department,
        outcome=outcome,
        rule_version=1,
        automatic=automatic,
        amount=amount,
        amount_period=period,
        criteria=[
            CriterionResult(
                id=f"{code}.main",
                label=Localized(ko="자격 요건", en="Main requirement"),
                status=status,
                values={"household_income": 4_200_000},
                sources={"household_income": "derived:declared"},
            )
        ],
        missing=missing or [],
        sla_days=sla_days,
    )


BIRTH_ORDER = MissingFact(
    name="birth_order",
    type="integer",
    question=Localized(
        ko="이번에 태어난 아이는 몇째 자녀입니까?", en="Is the newborn your first, second, third ... child (a number)?"
    ),
    asked_of="resident",
)
INSURED_DAYS = MissingFact(  # only the employment centre's records tell
    name="insured_days_total",
    type="integer",
    question=Localized(
        ko="휴가·휴직 시작 전까지의 고용보험 피보험단위기간 합계(일)",
        en="Total days insured under employment insurance before the leave began",
    ),
    asked_of="staff",
)


async def consumer_idle(service: RunningService) -> None:
    """Wait until intake's consumer has taken and acknowledged everything on the stream."""
    runtime = service.runtime
    durable = runtime.consumers["status-view"].durable

    async def idle() -> bool:
        info = await runtime.bus.js.consumer_info(runtime.bus.stream, durable)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await wait_until(idle, timeout=20)
