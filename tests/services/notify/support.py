"""Helpers of the notify tests: event data as the other services emit it (shared.events models), a producer that
publishes it as their outbox relays do, the notify service started with given settings, and a way to close a
bundling window once a message holds what it should."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select, update

from services.notify.models import Notification, NotificationItem, NotificationStatus, PartnerConsent, utcnow
from shared.auth import TokenIssuer
from shared.bus import MSG_ID_HEADER, Bus
from shared.events import (
    ApplicationSubmitted,
    ApplicationWithdrawn,
    CaseDecided,
    CaseInfoRequested,
    CaseResumed,
    CaseRouted,
    CaseSlaBreached,
    CaseTransferred,
    Channel,
    CloudEvent,
    ConsentChanged,
    CriterionResult,
    CriterionStatus,
    Decision,
    Department,
    EligibilityDetermined,
    EligibilityOpportunity,
    EventData,
    InfoQuestion,
    Language,
    Localized,
    MissingFact,
    Outcome,
    ProgramDetermination,
    ResidentContext,
    ScreeningQuestionAsked,
    new_event,
    subject_for,
)
from tests.support.services import RunningService, running_service
from tests.support.waiting import wait_until

NOW = dt.datetime(2025, 3, 4, 10, 0, tzinfo=dt.UTC)


def context(language: str = "ko") -> ResidentContext:
    return ResidentContext(district_code="11110", preferred_language=Language(language))


def submitted(resident: uuid.UUID, application: uuid.UUID, *, language: str = "ko") -> ApplicationSubmitted:
    return ApplicationSubmitted(
        application_id=application,
        resident_id=resident,
        life_event="birth",
        answers={"child_birth_date": "2025-02-20", "monthly_income": 2_100_000},
        channel=Channel.WEB,
        application_date=NOW.date(),
        submitted_at=NOW,
        resident=context(language),
    )


def program(
    code: str,
    ko: str,
    en: str,
    outcome: Outcome,
    *,
    automatic: bool = True,
    amount: int | None = None,
    period: Literal["once", "monthly", "yearly"] | None = None,
    ask: list[tuple[str, str, str]] | None = None,
    staff: list[str] | None = None,
    failed: list[tuple[str, str]] | None = None,
) -> ProgramDetermination:
    missing = [
        MissingFact(name=name, type="integer", question=Localized(ko=qko, en=qen), asked_of="resident")
        for name, qko, qen in ask or []
    ]
    missing += [
        MissingFact(name=name, type="string", question=Localized(ko=name, en=name), asked_of="staff")
        for name in staff or []
    ]
    criteria = [
        CriterionResult(id=f"c{i}", label=Localized(ko=lko, en=len_), status=CriterionStatus.FAILED)
        for i, (lko, len_) in enumerate(failed or [])
    ]
    return ProgramDetermination(
        program_code=code,
        program_name=Localized(ko=ko, en=en),
        department=Department.WELFARE,
        outcome=outcome,
        rule_version=1,
        automatic=automatic,
        amount=amount,
        amount_period=period,
        criteria=criteria,
        missing=missing,
        sla_days=14,
    )


def determined(
    resident: uuid.UUID, application: uuid.UUID, round_: int, programs: list[ProgramDetermination], language: str = "ko"
) -> EligibilityDetermined:
    return EligibilityDetermined(
        determination_id=uuid.uuid4(),
        application_id=application,
        resident_id=resident,
        round=round_,
        trigger="submitted" if round_ == 1 else "info_provided",
        application_date=NOW.date(),
        evaluated_at=NOW,
        resident=context(language),
        programs=programs,
    )


def _case(resident: uuid.UUID, application: uuid.UUID, code: str) -> dict[str, object]:
    return {
        "case_id": uuid.uuid5(application, code),
        "application_id": application,
        "resident_id": resident,
        "program_code": code,
        "department": Department.WELFARE,
        "office_code": "JN-WEL",
    }


def routed(
    resident: uuid.UUID, application: uuid.UUID, code: str, *, status: Literal["open", "closed"] = "open"
) -> CaseRouted:
    return CaseRouted(
        **_case(resident, application, code),
        office_name=Localized(ko="종로구청 복지정책과", en="Jongno-gu Office, Welfare Policy Division"),
        status=status,
        priority=1,
        automatic=status == "closed",
        due_date=dt.date(2025, 3, 18),
        reason="district 11110",
        routed_at=NOW,
    )


def info_requested(resident: uuid.UUID, application: uuid.UUID, code: str, question: str) -> CaseInfoRequested:
    return CaseInfoRequested(
        **_case(resident, application, code),
        questions=[InfoQuestion(text=question)],
        requested_at=NOW,
    )


def decided(
    resident: uuid.UUID,
    application: uuid.UUID,
    code: str,
    decision: Decision = Decision.APPROVED,
    *,
    amount: int | None = None,
    reason: tuple[str, str] | None = None,
) -> CaseDecided:
    return CaseDecided(
        **_case(resident, application, code),
        decision=decision,
        reason_code="income_over_threshold" if decision is Decision.DENIED else "granted",
        reason=Localized(ko=reason[0], en=reason[1]) if reason else None,
        amount=amount,
        automatic=decision is Decision.APPROVED,
        decided_at=NOW,
    )


def sla_breached(resident: uuid.UUID, application: uuid.UUID, code: str) -> CaseSlaBreached:
    return CaseSlaBreached(
        **_case(resident, application, code),
        due_date=dt.date(2025, 3, 18),
        breached_at=NOW,
        expected_by=dt.date(2025, 3, 25),
    )


def withdrawn(resident: uuid.UUID, application: uuid.UUID) -> ApplicationWithdrawn:
    return ApplicationWithdrawn(
        application_id=application, resident_id=resident, reason="moved abroad", withdrawn_at=NOW
    )


def consent(resident: uuid.UUID, version: int, consents: dict[str, bool]) -> ConsentChanged:
    return ConsentChanged(
        resident_id=resident,
        version=version,
        consents=consents,
        changed=list(consents),
        changed_at=NOW,
    )


def opportunity(resident: uuid.UUID, code: str = "basic_pension") -> EligibilityOpportunity:
    return EligibilityOpportunity(
        screening_id=uuid.uuid4(),
        resident_id=resident,
        program_code=code,
        program_name=Localized(ko="기초연금", en="Basic pension"),
        department=Department.WELFARE,
        amount=342_510,
        amount_period="monthly",
        found_at=NOW,
    )


def question(resident: uuid.UUID) -> ScreeningQuestionAsked:
    """A near miss's one question (eligibility's screening.question_asked)."""
    return ScreeningQuestionAsked(
        question_id=uuid.uuid4(),
        screening_id=uuid.uuid4(),
        resident_id=resident,
        program_code="tomorrow_learning_card",
        program_name=Localized(ko="국민내일배움카드", en="Tomorrow learning card"),
        department=Department.LABOUR,
        fact=MissingFact(
            name="civil_servant",
            type="boolean",
            question=Localized(ko="현재 공무원입니까?", en="Are you currently a civil servant?"),
        ),
        why=Localized(ko="이 답 하나로 판단할 수 있습니다.", en="This one answer settles it."),
        asked_at=NOW,
    )


def resumed(resident: uuid.UUID, application: uuid.UUID, code: str) -> CaseResumed:
    return CaseResumed(
        **_case(resident, application, code),
        due_date=dt.date(2025, 3, 21),
        paused_working_days=3,
        resumed_at=NOW,
    )


def transferred(resident: uuid.UUID, application: uuid.UUID, code: str) -> CaseTransferred:
    return CaseTransferred(
        **{**_case(resident, application, code), "office_code": "MP-WEL"},
        from_office_code="JN-WEL",
        office_name=Localized(ko="마포구청 복지정책과", en="Mapo-gu Office, Welfare Policy Division"),
        reason="overflow: JN-WEL over capacity",
        due_date=dt.date(2025, 3, 20),
        transferred_at=NOW,
    )


# ================================================================================================ settings

SMTP_USER = "notify"
SMTP_PASSWORD = "smtp-test-password"
SMS_API_KEY = "sms-test-key"
# A bundling window no machine outruns; the test closes it (close_bundle).
WIDE_WINDOW = 3600.0
SHARED_STREAM = "intake-on-notify-stream"


# ================================================================================================ the other services


class Producer:
    """Publishes events as the other services would (their outbox relays publish with Nats-Msg-Id = event id)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def publish(self, data: EventData, *, source: str = "/onestop/test") -> CloudEvent:
        event = new_event(data, source=source)
        await self.bus.publish_event(event)
        return event

    async def republish(self, event: CloudEvent) -> None:
        """The same event again under another message id: a redelivery JetStream cannot de-duplicate."""
        await self.bus.js.publish(
            subject_for(self.bus.prefix, event.event_type),
            event.to_json(),
            headers={MSG_ID_HEADER: f"{event.id}-again-{uuid.uuid4().hex[:6]}"},
        )


# ================================================================================================ the service


@contextlib.asynccontextmanager
async def start_notify(
    *,
    database_url: str,
    nats_url: str,
    prefix: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    settings: dict[str, Any],
) -> AsyncIterator[RunningService]:
    async with running_service(
        "notify",
        database_url=database_url,
        nats_url=nats_url,
        prefix=prefix,
        keys_dir=keys_dir,
        issuer=issuer,
        **settings,
    ) as service:
        yield service


async def close_bundle(notify: RunningService, resident: uuid.UUID, kind: str, *, events: int) -> None:
    """Once the resident's message of ``kind`` that is still collecting holds ``events`` events, end its bundling
    window now, as the clock would: the worker releases it on its next pass. Fails if the events were split over
    several messages or more arrived."""

    async def collecting() -> list[tuple[uuid.UUID, int]]:
        async with notify.runtime.db.session() as session:
            rows = await session.execute(
                select(Notification.id, func.count(NotificationItem.id))
                .join(NotificationItem, NotificationItem.notification_id == Notification.id)
                .where(
                    Notification.resident_id == resident,
                    Notification.kind == kind,
                    Notification.status == NotificationStatus.COLLECTING.value,
                )
                .group_by(Notification.id)
            )
            return [(row[0], row[1]) for row in rows]

    async def complete() -> bool:
        bundles = await collecting()
        assert len(bundles) <= 1, f"{kind} split over several messages: {bundles}"
        assert not bundles or bundles[0][1] <= events, f"{kind}: more than {events} events in the message"
        return bool(bundles) and bundles[0][1] == events

    await wait_until(complete)
    [(notification_id, _)] = await collecting()
    async with notify.runtime.db.session() as session:
        await session.execute(
            update(Notification)
            .where(Notification.id == notification_id, Notification.status == NotificationStatus.COLLECTING.value)
            .values(next_step_at=utcnow())
        )


# ================================================================================================ partners


async def grant(
    notify: RunningService, partner: str, *types: str, purpose: str = "notification", **purposes: str
) -> dict[str, Any]:
    """Grant ``types`` for ``purpose``, and the types named in ``purposes`` (dots as '__') for theirs."""
    grants = [{"event_type": t, "purpose": purpose} for t in types]
    grants += [{"event_type": t.replace("__", "."), "purpose": p} for t, p in purposes.items()]
    response = await notify.client.put(
        f"/v1/partners/{partner}/grants", json={"grants": grants}, headers=notify.auth("admin")
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def consented(
    notify: RunningService, producer: Producer, resident: uuid.UUID, version: int, consents: dict[str, bool]
) -> None:
    """The resident's consent set as intake announces it, once the partners' consumer holds it."""
    await producer.publish(consent(resident, version, consents))

    async def recorded() -> bool:
        async with notify.runtime.db.session() as session:
            found = await session.get(PartnerConsent, resident)
        return found is not None and found.version == version

    await wait_until(recorded)
