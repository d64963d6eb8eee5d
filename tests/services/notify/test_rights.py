"""A resident's data in notify: their part of an export (messages, preferences, what went to which partner about them,
when), their erasure over the real bus in both consumers (messages gone; consents to partners gone, what is queued for
a partner withdrawn, what was delivered emptied of the resident), one answer, nothing more stored or sent to a partner
afterwards, the result told in their inbox, and that notice destroyed after its 30 days."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import orjson
from sqlalchemy import select

from services.notify import resident_data
from services.notify.context import NotifyContext
from services.notify.models import Notification, ResidentErasure, WebhookDelivery
from shared.events import (
    KeptRecords,
    Localized,
    ResidentErasureCompleted,
    ResidentErasureRequested,
    ServiceKeptRecords,
)
from tests.services.notify import support as f
from tests.services.notify.support import Producer, consented, grant
from tests.support.endpoints import Endpoint
from tests.support.events import event_log
from tests.support.intake_server import IntakeServer
from tests.support.nats import NatsServer
from tests.support.services import RunningService
from tests.support.waiting import wait_until

NGO = "saebom-ngo"


async def _inbox(notify: RunningService, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await notify.client.get("/v1/inbox", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _part(notify: RunningService, resident: uuid.UUID, headers: dict[str, str]) -> dict[str, Any]:
    response = await notify.client.get(f"/v1/residents/{resident}/data", headers=headers)
    assert response.status_code == 200, response.text
    part: dict[str, Any] = response.json()
    return part


async def test_a_resident_s_part_their_erasure_and_nothing_more_for_any_partner(
    notify: RunningService, producer: Producer, intake: IntakeServer, partner_endpoint: Endpoint,
    nats_server: NatsServer, bus_prefix: str,
) -> None:  # fmt: skip
    resident = await intake.register(channels=("inbox",))
    own = notify.auth("resident", resident_id=resident)
    partner = notify.auth("partner", partner_id=NGO)
    await grant(notify, NGO, "case.decided")
    created = await notify.client.post(
        "/v1/subscriptions", headers=partner,
        json={"transport": "webhook", "url": partner_endpoint.url, "event_types": ["case.decided"]},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    await consented(notify, producer, resident, 1, {f"partner:{NGO}": True})
    assert (await notify.client.put("/v1/preferences", headers=own, json={"language": "en"})).status_code == 200
    application = uuid.uuid4()
    await producer.publish(f.submitted(resident, application))
    await producer.publish(f.decided(resident, application, "child_allowance"))
    await wait_until(lambda: len(partner_endpoint.accepted) == 1)

    async def told(count: int) -> bool:
        return len(await _inbox(notify, own)) == count

    await wait_until(lambda: told(2))
    # The partner's endpoint pauses: the next decision waits for it, queued.
    subscription = created.json()["id"]
    assert (await notify.client.post(f"/v1/subscriptions/{subscription}/pause", headers=partner)).status_code == 200
    queued = await producer.publish(f.decided(resident, application, "parent_benefit"))

    async def pending() -> bool:
        async with notify.runtime.db.session() as session:
            row = (await session.scalars(select(WebhookDelivery).where(WebhookDelivery.event_id == queued.id))).first()
        return row is not None

    await wait_until(pending)
    # The resident's own message about it comes from another consumer: wait for it too.
    await wait_until(lambda: told(3))

    # The part: the messages, the preferences, and which partner got what, when.
    part = await _part(notify, resident, own)
    records = part["records"]
    assert {n["kind"] for n in records["notifications"]} >= {"application.submitted", "case.decided"}
    assert records["preferences"][0]["language"] == "en"
    assert records["partner_consents"][0]["purposes"] == [f"partner:{NGO}"]
    sent = [(d["partner_id"], d["event_type"], d["status"]) for d in records["partner_deliveries"]]
    assert sent == [(NGO, "case.decided", "sent"), (NGO, "case.decided", "pending")]
    assert records["partner_deliveries"][0]["sent"]["resident_id"] == str(resident), "what the partner got"
    assert records["partner_deliveries"][0]["delivered_at"] is not None

    # The erasure, asked twice: both consumers erase their half; one answer.
    request = ResidentErasureRequested(erasure_id=uuid.uuid4(), resident_id=resident,
                                       requested_at=dt.datetime.now(dt.UTC))  # fmt: skip
    async with event_log(nats_server.url, bus_prefix) as events:
        await producer.publish(request)
        await producer.publish(request)
        answer = (await events.wait_for("resident.erased"))[0].data
        await wait_until(notify.settled)
        assert len(events.of_type("resident.erased")) == 1
    assert answer["service"] == "notify"
    assert answer["erased"]["messages"] == 3
    assert answer["erased"]["partner_deliveries"] == 2
    assert answer["erased"]["partner_consents"] == 1
    assert {k["record_type"] for k in answer["kept"]} <= {"access_log", "erasure_record"}

    assert await _inbox(notify, own) == []
    after = (await _part(notify, resident, own))["records"]
    for record_type in ("notifications", "preferences", "resident", "partner_consents", "partner_deliveries",
                        "applications"):  # fmt: skip
        assert after[record_type] == [], record_type
    async with notify.runtime.db.session() as session:
        rows = (await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.seq))).all()
    assert [(r.status, r.resident_id, r.payload) for r in rows] == [("sent", None, ""), ("withdrawn", None, "")]
    listed = (await notify.client.get("/v1/deliveries", headers=partner)).json()
    assert str(resident) not in orjson.dumps(listed).decode(), "the partner's list keeps the type and time only"

    # Nothing more: the endpoint resumes, another decision about the resident comes late; the partner gets nothing,
    # the resident no message.
    assert (await notify.client.post(f"/v1/subscriptions/{subscription}/resume", headers=partner)).status_code == 200
    late = await producer.publish(f.decided(resident, application, "first_meeting_voucher"))
    other = uuid.uuid4()
    await consented(notify, producer, other, 1, {f"partner:{NGO}": True})
    marker = await producer.publish(f.decided(other, uuid.uuid4(), "child_allowance"))
    await wait_until(lambda: any(orjson.loads(r.body)["id"] == marker.id for r in partner_endpoint.accepted))
    assert [orjson.loads(r.body)["id"] for r in partner_endpoint.accepted][1:] == [marker.id]
    assert late.id not in {orjson.loads(r.body)["id"] for r in partner_endpoint.requests}
    assert await _inbox(notify, own) == []

    # The result, told in their inbox (in the language intake has for them).
    kept = KeptRecords(record_type="decision_files", count=1, reason=Localized(ko="행정 결정의 기록", en="Decisions"),
                       legal_basis="공공기록물 관리에 관한 법률 시행령 제26조 (2025-01-01)",
                       destroy_on=dt.date(2031, 1, 1))  # fmt: skip
    completed = ResidentErasureCompleted(
        erasure_id=request.erasure_id, resident_id=resident, completed_at=dt.datetime.now(dt.UTC),
        kept=[ServiceKeptRecords(service="intake", **kept.model_dump())],
    )  # fmt: skip
    await producer.publish(completed)
    await wait_until(lambda: told(1))
    [notice] = await _inbox(notify, own)
    assert notice["kind"] == "resident.erasure_completed"
    assert "개인정보를 삭제했습니다" in notice["title"]
    assert "행정 결정의 기록 (1건): 2031년 1월 1일까지" in notice["body"]

    # The notice goes after its 30 days; the erasure's record after its three years.
    ctx = notify.context(NotifyContext)
    now = dt.datetime.now(dt.UTC)
    purged = await resident_data.purge(notify.runtime.db, ctx.clock, now + dt.timedelta(days=29))
    assert purged["erasure_notices"] == 0
    purged = await resident_data.purge(notify.runtime.db, ctx.clock, now + dt.timedelta(days=31))
    assert purged["erasure_notices"] == 1
    assert await notify.count(Notification, Notification.resident_id == resident) == 0
    purged = await resident_data.purge(notify.runtime.db, ctx.clock, now + dt.timedelta(days=3 * 366))
    assert purged["erasure_records"] == 1
    assert await notify.count(ResidentErasure) == 0


async def test_both_consumers_making_an_erasures_row_at_once_agree_without_failing(notify: RunningService) -> None:
    """The residents' and the partners' consumer each begin a resident's erasure from the same request, at the same
    time on PostgreSQL: the second waits for the first's row and carries on from it, its transaction intact (it used
    to fail on the row's key, and its whole batch with it)."""
    ctx = notify.context(NotifyContext)
    erasure = resident_data.Erasure(ctx.outbox, ctx.settings, ctx.clock)
    request = ResidentErasureRequested(
        erasure_id=uuid.uuid4(), resident_id=uuid.uuid4(), requested_at=dt.datetime.now(dt.UTC)
    )
    first_made = asyncio.Event()
    first_may_commit = asyncio.Event()

    async def first() -> uuid.UUID:
        async with notify.runtime.db.session() as session:
            row = await erasure._ledger(session, request)
            first_made.set()
            await first_may_commit.wait()
            return row.erasure_id

    async def second() -> uuid.UUID:
        await first_made.wait()
        async with notify.runtime.db.session() as session:
            row = await erasure._ledger(session, request)
            row.erased = {"messages": 0}  # the second half's own write, committed with it
            return row.erasure_id

    made = asyncio.create_task(first())
    joined = asyncio.create_task(second())
    await first_made.wait()
    await asyncio.sleep(0.3)  # the second is waiting for the first's row (PostgreSQL) or for the writer (SQLite)
    assert not joined.done()
    first_may_commit.set()
    assert await made == await joined == request.erasure_id
    async with notify.runtime.db.session() as session:
        rows = (await session.scalars(select(ResidentErasure))).all()
    assert [(r.resident_id, r.erased) for r in rows] == [(request.resident_id, {"messages": 0})]
