"""Residents hear every step, in their language, on their channels: the notify service against the real NATS, real
databases, a real SMTP server (STARTTLS + AUTH), a real HTTP SMS gateway and the real intake service over real HTTP."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import functools
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, update

from services.notify import resident_data
from services.notify.context import NotifyContext
from services.notify.models import (
    ApplicationProgram,
    Delivery,
    Notification,
    NotificationItem,
    ResidentErasure,
    ResidentState,
    utcnow,
)
from services.notify.notifications import ResidentMessages, finish_batch
from shared.auth import TokenIssuer
from shared.events import Decision, Outcome, ResidentErasureRequested, new_event
from tests.services.notify import support as f
from tests.services.notify.support import SHARED_STREAM, SMS_API_KEY, WIDE_WINDOW, Producer, close_bundle, start_notify
from tests.support.endpoints import Endpoint
from tests.support.events import event_log
from tests.support.intake_server import IntakeServer
from tests.support.nats import NatsServer
from tests.support.round_trips import consumer_statements, objects_added, one_batch
from tests.support.services import RunningService
from tests.support.smtp import MailServer
from tests.support.waiting import wait_until


def sms_to(gateway: Endpoint, phone: str) -> list[dict[str, Any]]:
    out = []
    for request in gateway.accepted:
        body = orjson.loads(request.body)
        if body["to"] == phone:
            out.append(body)
    return out


def body_of(message: Any) -> str:
    return str(message.get_body(preferencelist=("plain",)).get_content())


def html_of(message: Any) -> str:
    return str(message.get_body(preferencelist=("html",)).get_content())


async def inbox(notify: RunningService, resident: uuid.UUID, **params: Any) -> dict[str, Any]:
    response = await notify.client.get(
        "/v1/inbox", params=params, headers=notify.auth("resident", resident_id=resident)
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def count(notify: RunningService, model: Any, *where: Any) -> int:
    async with notify.runtime.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def settled(notify: RunningService) -> bool:
    """Nothing is left to dispatch or send (what is waiting for a retry or quiet hours excepted)."""
    unreleased = await count(notify, Notification, Notification.status.in_(["collecting", "ready"]))
    unsent = await count(
        notify,
        Delivery,
        Delivery.status.in_(["pending", "failed"]),
        Delivery.next_attempt_at <= dt.datetime.now(dt.UTC),
    )
    return unreleased == 0 and unsent == 0


# ================================================================================================ the journey


# A window no machine outruns: the three decisions below are in one message however slowly they are handled, and the
# test ends each window once the message holds what it should (close_bundle).
@pytest.mark.parametrize("bundle_window_seconds", [WIDE_WINDOW])
async def test_a_resident_hears_every_step_once_in_their_language_on_their_channels(
    notify: RunningService,
    producer: Producer,
    intake: IntakeServer,
    smtp: MailServer,
    sms_gateway: Endpoint,
    nats_server: NatsServer,
    bus_prefix: str,
) -> None:
    mail, phone = "minji.kim@example.kr", "+821012345678"
    resident = await intake.register(email=mail, phone=phone, language="en", channels=("inbox", "email", "sms"))
    application = uuid.uuid4()
    told = functools.partial(close_bundle, notify, resident)

    async with event_log(nats_server.url, bus_prefix) as log:
        # 1. Received: inbox, email (through STARTTLS and AUTH) and SMS, in English as the resident chose at intake.
        received = await producer.publish(f.submitted(resident, application, language="en"))
        await wait_until(lambda: len(smtp.to(mail)) == 1 and len(sms_to(sms_gateway, phone)) == 1)
        email = smtp.to(mail)[0]
        assert email["Subject"] == "[OneStop] We received your application"
        assert f"https://onestop.example.kr/applications/{application}" in body_of(email)
        assert "the birth of a child" in body_of(email)
        assert email["Message-ID"].endswith("@onestop.example.kr>")
        assert smtp.logins, "notify authenticated to the SMTP server"
        sms_request = next(r for r in sms_gateway.accepted if orjson.loads(r.body)["to"] == phone)
        assert sms_request.headers["authorization"] == f"Bearer {SMS_API_KEY}"
        assert sms_request.headers["idempotency-key"] == orjson.loads(sms_request.body)["id"]
        assert sms_to(sms_gateway, phone)[0]["language"] == "en"

        # 2. One eligibility round with three programs: one message bundling them, with the question to answer.
        round_1 = f.determined(
            resident,
            application,
            1,
            [
                f.program("child_allowance", "아동수당", "Child allowance", Outcome.ELIGIBLE,
                          amount=100_000, period="monthly"),
                f.program("first_meeting_voucher", "첫만남이용권", "First-meeting voucher", Outcome.ELIGIBLE,
                          amount=2_000_000, period="once"),
                f.program("parent_benefit", "부모급여", "Parent benefit", Outcome.NEEDS_INFORMATION, automatic=False,
                          ask=[("child_in_daycare", "어린이집에 다니나요?", "Does the child attend daycare?")]),
            ],
            language="en",
        )  # fmt: skip
        determination = await producer.publish(round_1)
        await told("eligibility.determined", events=1)
        await wait_until(lambda: len(smtp.to(mail)) == 2)
        results = body_of(smtp.to(mail)[1])
        assert "Child allowance: KRW 100,000 a month" in results
        assert "First-meeting voucher: KRW 2,000,000 (one payment)" in results
        assert "Does the child attend daycare?" in results
        assert "Does the child attend daycare?" in html_of(smtp.to(mail)[1])

        # 3. The same events again (redelivered beyond JetStream's de-duplication), then a later round that only
        #    answers the question, then an old round arriving late: only the change is told, once.
        await producer.republish(determination)
        await producer.republish(received)
        round_2 = f.determined(
            resident,
            application,
            2,
            [
                round_1.programs[0],
                round_1.programs[1],
                f.program("parent_benefit", "부모급여", "Parent benefit", Outcome.ELIGIBLE, automatic=False,
                          amount=1_000_000, period="monthly"),
            ],
            language="en",
        )  # fmt: skip
        await producer.publish(round_2)
        await producer.publish(f.determined(resident, application, 1, round_1.programs, language="en"))
        await told("eligibility.determined", events=1)
        await wait_until(lambda: len(smtp.to(mail)) == 3)
        update = body_of(smtp.to(mail)[2])
        assert "Parent benefit: KRW 1,000,000 a month" in update
        assert "Child allowance" not in update, "unchanged outcomes are not repeated"

        # 4. Three automatic approvals in a row: one "decided" message; an automatically closed routing: nothing;
        #    a case routed to an office: which office and by when.
        for code in ("child_allowance", "first_meeting_voucher", "parent_benefit"):
            await producer.publish(f.decided(resident, application, code, amount=100_000))
            await producer.publish(f.routed(resident, application, code, status="closed"))
        await told("case.decided", events=3)
        await wait_until(lambda: len(smtp.to(mail)) == 4)
        decision = body_of(smtp.to(mail)[3])
        assert smtp.to(mail)[3]["Subject"] == "[OneStop] A decision on your application"
        for name in ("Child allowance", "First-meeting voucher", "Parent benefit"):
            assert name in decision
        await producer.publish(f.info_requested(resident, application, "parent_benefit", "Please send a bank book."))
        await told("case.info_requested", events=1)
        await wait_until(lambda: len(smtp.to(mail)) == 5)
        assert "Please send a bank book." in body_of(smtp.to(mail)[4])
        assert "Jongno-gu Office, Welfare Policy Division" in body_of(smtp.to(mail)[4])
        await producer.publish(f.resumed(resident, application, "parent_benefit"))
        await told("case.resumed", events=1)
        await wait_until(lambda: len(smtp.to(mail)) == 6)
        assert "Parent benefit: expected by 21 March 2025" in body_of(smtp.to(mail)[5])
        await producer.publish(f.transferred(resident, application, "parent_benefit"))
        await told("case.transferred", events=1)
        await wait_until(lambda: len(smtp.to(mail)) == 7)
        assert "Mapo-gu Office, Welfare Policy Division" in body_of(smtp.to(mail)[6])
        await producer.publish(f.sla_breached(resident, application, "parent_benefit"))
        await told("case.sla_breached", events=1)
        await wait_until(lambda: len(smtp.to(mail)) == 8)
        assert "by 25 March 2025 at the latest" in body_of(smtp.to(mail)[7])

        # Each message once per channel, and intake heard of each through notification.sent.
        await wait_until(lambda: len(sms_to(sms_gateway, phone)) == 8)
        sent = await log.wait_for("notification.sent", lambda e: e.data["resident_id"] == str(resident), count=24)
        by_channel: dict[str, int] = {}
        for event in sent:
            by_channel[event.data["channel"]] = by_channel.get(event.data["channel"], 0) + 1
        assert by_channel == {"inbox": 8, "email": 8, "sms": 8}
        assert any(received.id in e.data["source_event_ids"] for e in sent)

    assert len(smtp.to(mail)) == 8
    assert await count(notify, Delivery, Delivery.resident_id == resident) == 24
    # Eight messages and no more: none left collecting (a late or repeated event that was not ignored would be).
    assert await count(notify, Notification, Notification.resident_id == resident) == 8

    # The inbox: newest first, in English, with the link; reading one lowers the unread count.
    page = await inbox(notify, resident)
    assert [m["kind"] for m in page["items"]][-2:] == ["eligibility.determined", "application.submitted"]
    assert len(page["items"]) == 8
    assert page["unread"] == 8
    assert page["items"][-1]["title"] == "[OneStop] We received your application"
    assert page["items"][-1]["link"] == f"https://onestop.example.kr/applications/{application}"
    first = page["items"][-1]["id"]
    auth = notify.auth("resident", resident_id=resident)
    read = await notify.client.post(f"/v1/inbox/{first}/read", headers=auth)
    assert read.status_code == 200
    assert read.json()["read_at"] is not None
    assert (await inbox(notify, resident))["unread"] == 7
    assert len((await inbox(notify, resident, unread="true"))["items"]) == 7

    # Choosing Korean in notify (over intake's English) changes how the inbox reads.
    put = await notify.client.put("/v1/preferences", json={"language": "ko"}, headers=auth)
    assert put.status_code == 200, put.text
    assert (await inbox(notify, resident))["items"][-1]["title"] == "[원스톱] 신청이 접수되었습니다"


# ================================================================================================ withdrawal, consent


async def test_after_a_withdrawal_nothing_more_is_sent_for_that_application(
    notify: RunningService, producer: Producer, intake: IntakeServer, smtp: MailServer
) -> None:
    mail = "jiho.park@example.kr"
    resident = await intake.register(email=mail, language="ko", channels=("email",))
    application, other = uuid.uuid4(), uuid.uuid4()

    await producer.publish(f.submitted(resident, application))
    await wait_until(lambda: len(smtp.to(mail)) == 1)
    await producer.publish(f.withdrawn(resident, application))
    await wait_until(lambda: len(smtp.to(mail)) == 2)
    assert smtp.to(mail)[1]["Subject"] == "[원스톱] 신청이 철회되었습니다"
    await producer.publish(f.withdrawn(resident, application))  # announced again: confirmed once only

    # Whatever routing and eligibility still had in flight for it is not told...
    await producer.publish(f.determined(resident, application, 1, [
        f.program("child_allowance", "아동수당", "Child allowance", Outcome.ELIGIBLE)]))  # fmt: skip
    await producer.publish(f.routed(resident, application, "child_allowance"))
    await producer.publish(f.decided(resident, application, "child_allowance", Decision.DENIED))
    # ...and a withdrawal that overtakes the submission (events out of order) silences that one from the start.
    await producer.publish(f.withdrawn(resident, other))
    await producer.publish(f.submitted(resident, other))
    # A message about something else still goes out: everything before it was handled by then.
    await producer.publish(f.opportunity(resident))  # no consent: not told either
    await producer.publish(f.submitted(resident, uuid.uuid4()))
    await wait_until(lambda: len(smtp.to(mail)) == 4)
    await wait_until(lambda: settled(notify))
    subjects = sorted(m["Subject"] for m in smtp.to(mail))
    assert subjects == 2 * ["[원스톱] 신청이 접수되었습니다"] + 2 * ["[원스톱] 신청이 철회되었습니다"]
    assert await count(notify, Notification, Notification.application_id == application) == 2


# intake on the notify test's stream: the consents residents give and withdraw at intake reach notify as intake's
# own consent.changed events.
@pytest.mark.parametrize("intake_shares_stream", [True], ids=[SHARED_STREAM])
async def test_opportunities_are_told_only_with_a_current_proactive_screening_consent(
    notify: RunningService,
    producer: Producer,
    intake: IntakeServer,
    smtp: MailServer,
    nats_server: NatsServer,
    bus_prefix: str,
) -> None:
    consenting = await intake.register(email="a@example.kr", channels=("email",))
    refusing = await intake.register(email="b@example.kr", channels=("email",))
    withdrew = await intake.register(email="c@example.kr", channels=("email",))
    never_asked = await intake.register(email="d@example.kr", channels=("email",))
    async with event_log(nats_server.url, bus_prefix) as log:
        await intake.set_consents(consenting, {"proactive_screening": True})
        await intake.set_consents(refusing, {"proactive_screening": True})
        await intake.set_consents(refusing, {"proactive_screening": False})  # changed their mind: version 2
        # Published by intake's outbox relay: on the stream before the opportunities below, so handled before them.
        told = await log.wait_for("consent.changed", count=3)
        assert {(e.data["resident_id"], e.data["version"]) for e in told} == {
            (str(consenting), 1), (str(refusing), 1), (str(refusing), 2)
        }  # fmt: skip
    # Consent withdrawn (version 2), then the older grant arrives late: the newer one stands. intake never publishes
    # out of order, so the late delivery is played by the producer.
    await producer.publish(f.consent(withdrew, 2, {"proactive_screening": False}))
    await producer.publish(f.consent(withdrew, 1, {"proactive_screening": True}))
    for resident in (refusing, withdrew, never_asked, consenting):
        await producer.publish(f.opportunity(resident))
        await producer.publish(f.question(resident))
    await wait_until(lambda: len(smtp.to("a@example.kr")) == 2)
    await wait_until(lambda: settled(notify))
    bodies = sorted(body_of(m) for m in smtp.to("a@example.kr"))
    assert any("기초연금: 매월 342,510원" in b for b in bodies)
    assert any("현재 공무원입니까?" in b for b in bodies), "the near miss's one question is told too"
    assert smtp.to("b@example.kr") == []
    assert smtp.to("c@example.kr") == []
    assert smtp.to("d@example.kr") == []


# intake on the notify test's stream: a change of language at intake reaches notify as resident.updated as well.
@pytest.mark.parametrize("intake_shares_stream", [True], ids=[SHARED_STREAM])
async def test_a_contact_changed_at_intake_is_where_the_next_message_goes(
    notify: RunningService, producer: Producer, intake: IntakeServer, smtp: MailServer
) -> None:
    old, new = "old.address@example.kr", "new.address@example.kr"
    resident = await intake.register(email=old, language="ko", channels=("email",))
    await producer.publish(f.submitted(resident, uuid.uuid4()))
    await wait_until(lambda: len(smtp.to(old)) == 1)
    assert smtp.to(old)[0]["Subject"] == "[원스톱] 신청이 접수되었습니다"

    changed = await intake.update(resident, email=new, preferred_language="en")
    assert changed["email"] == new
    await wait_until(lambda: _profile(notify, resident, ("en", 2)))  # resident.updated v2 (no contact details in it)
    await producer.publish(f.submitted(resident, uuid.uuid4()))
    await wait_until(lambda: len(smtp.to(new)) == 1)
    assert smtp.to(new)[0]["Subject"] == "[OneStop] We received your application"
    await wait_until(lambda: settled(notify))
    assert len(smtp.to(old)) == 1, "nothing more to the address the resident gave up"


async def _profile(notify: RunningService, resident: uuid.UUID, expected: tuple[str, int]) -> bool:
    async with notify.runtime.db.session() as session:
        state = await session.get(ResidentState, resident)
    return state is not None and (state.language, state.profile_version) == expected


# ================================================================================================ delivery


async def test_failing_channels_are_retried_then_dead_and_an_admin_can_retry(
    notify: RunningService,
    producer: Producer,
    intake: IntakeServer,
    smtp: MailServer,
    sms_gateway: Endpoint,
    nats_server: NatsServer,
    bus_prefix: str,
) -> None:
    mail, phone = "bounce@example.kr", "+821099998888"
    resident = await intake.register(email=mail, phone=phone, channels=("email", "sms"))
    smtp.refuse.add(mail)  # a permanent refusal (550): dead at once, no retries
    sms_gateway.fail_next = 2  # the gateway fails twice (503), then accepts

    async with event_log(nats_server.url, bus_prefix) as log:
        await producer.publish(f.submitted(resident, uuid.uuid4()))
        await wait_until(lambda: len(sms_to(sms_gateway, phone)) == 1)
        assert len([r for r in sms_gateway.requests if orjson.loads(r.body)["to"] == phone]) == 3
        ids = {orjson.loads(r.body)["id"] for r in sms_gateway.requests}
        assert len(ids) == 1, "every retry carries the same id, for the gateway to de-duplicate"

        admin = notify.auth("admin")

        async def dead() -> list[dict[str, Any]]:
            response = await notify.client.get("/v1/notification-deliveries", params={"status": "dead"}, headers=admin)
            assert response.status_code == 200
            return [d for d in response.json() if d["resident_id"] == str(resident)]

        await wait_until(lambda: _nonempty(dead()))
        [email_delivery] = await dead()
        assert email_delivery["channel"] == "email"
        assert email_delivery["attempts"] == 1
        assert "550" in email_delivery["last_error"]
        assert mail not in email_delivery["last_error"], "no contact details in delivery records"
        failed = await log.wait_for("notification.failed", lambda e: e.data["channel"] == "email")
        assert failed[0].data["dead"] is True
        sms_failed = await log.wait_for("notification.failed", lambda e: e.data["channel"] == "sms")
        assert [e.data["dead"] for e in sms_failed] == [False], "told on the first failure, not on every retry"

        # The mailbox is fixed; an administrator retries the dead delivery and it goes out.
        smtp.refuse.clear()
        retried = await notify.client.post(f"/v1/notification-deliveries/{email_delivery['id']}/retry", headers=admin)
        assert retried.status_code == 200, retried.text
        await wait_until(lambda: len(smtp.to(mail)) == 1)
        await log.wait_for("notification.sent", lambda e: e.data["channel"] == "email")
        again = await notify.client.post(f"/v1/notification-deliveries/{email_delivery['id']}/retry", headers=admin)
        assert again.status_code == 409, "a sent delivery is not sent again"
        assert again.headers["content-type"] == "application/problem+json"

    metrics = (await notify.client.get("/metrics")).text
    assert 'onestop_notify_delivery_attempts_total{channel="sms",result="failed",transport="resident"} 2.0' in metrics
    assert 'onestop_notify_delivery_attempts_total{channel="email",result="dead",transport="resident"} 1.0' in metrics


async def _nonempty(awaitable: Any) -> bool:
    return bool(await awaitable)


async def test_when_intake_is_down_the_message_waits_in_the_inbox_and_goes_out_later(
    notify: RunningService, producer: Producer, intake: IntakeServer, smtp: MailServer
) -> None:
    mail = "down@example.kr"
    resident = await intake.register(email=mail, channels=("email",))
    await intake.stop()
    await producer.publish(f.submitted(resident, uuid.uuid4()))
    # The inbox has it at once; the email waits while intake cannot say where to send it, and notify keeps asking.
    await wait_until(lambda: _inbox_size(notify, resident, 1))
    await wait_until(lambda: _contact_lookups_failed(notify, resident, 3))
    assert smtp.to(mail) == []
    await intake.start()
    await wait_until(lambda: len(smtp.to(mail)) == 1)
    async with notify.runtime.db.session() as session:
        notification = await session.scalar(select(Notification).where(Notification.resident_id == resident))
    assert notification is not None
    assert (notification.status, notification.last_error) == ("dispatched", None)


async def _contact_lookups_failed(notify: RunningService, resident: uuid.UUID, times: int) -> bool:
    """The resident's notification was retried ``times`` times because intake refused the connection."""
    async with notify.runtime.db.session() as session:
        notification = await session.scalar(select(Notification).where(Notification.resident_id == resident))
    return (
        notification is not None
        and notification.step_attempts >= times
        and (notification.last_error or "").startswith("intake unreachable")
    )


async def _inbox_size(notify: RunningService, resident: uuid.UUID, size: int) -> bool:
    return len((await inbox(notify, resident))["items"]) == size


async def test_sms_waits_for_the_end_of_quiet_hours(
    notify: RunningService, producer: Producer, intake: IntakeServer, smtp: MailServer, sms_gateway: Endpoint
) -> None:
    mail, phone = "night@example.kr", "+821055556666"
    resident = await intake.register(email=mail, phone=phone, channels=("email", "sms"))
    auth = notify.auth("resident", resident_id=resident)
    seoul = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=9)))
    start, end = (seoul - dt.timedelta(hours=1)).strftime("%H:%M"), (seoul + dt.timedelta(hours=2)).strftime("%H:%M")
    put = await notify.client.put(
        "/v1/preferences", json={"quiet_hours": {"start": start, "end": end}, "timezone": "Asia/Seoul"}, headers=auth
    )
    assert put.status_code == 200, put.text
    assert put.json()["quiet_hours"] == {"start": start, "end": end}

    await producer.publish(f.submitted(resident, uuid.uuid4()))
    await wait_until(lambda: len(smtp.to(mail)) == 1)  # email is not held back

    async def sms_waiting() -> bool:
        async with notify.runtime.db.session() as session:
            delivery = await session.scalar(
                select(Delivery).where(Delivery.resident_id == resident, Delivery.channel == "sms")
            )
        return delivery is not None and delivery.next_attempt_at > dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)

    await wait_until(sms_waiting)
    assert sms_to(sms_gateway, phone) == []

    # No more quiet hours: the waiting message goes out now.
    put = await notify.client.put("/v1/preferences", json={"quiet_hours": None}, headers=auth)
    assert put.status_code == 200
    await wait_until(lambda: len(sms_to(sms_gateway, phone)) == 1)


async def test_without_smtp_or_an_sms_gateway_messages_land_in_readable_local_sinks(
    database_url: str,
    nats_server: NatsServer,
    bus_prefix: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    notify_settings: dict[str, Any],
    producer: Producer,
    intake: IntakeServer,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "embedded"
    settings = {**notify_settings, "smtp_host": None, "sms_gateway_url": None, "data_dir": data_dir}
    async with start_notify(
        database_url=database_url, nats_url=nats_server.url, prefix=bus_prefix, keys_dir=keys_dir, issuer=issuer,
        settings=settings,
    ):  # fmt: skip
        resident = await intake.register(email="local@example.kr", phone="+821011112222", channels=("email", "sms"))
        application = uuid.uuid4()
        await producer.publish(f.submitted(resident, application))
        maildir, sms_log = data_dir / "mail" / "new", data_dir / "sms.jsonl"
        # The text file exists from the moment it is opened for appending: wait for the whole line.
        await wait_until(lambda: maildir.exists() and any(maildir.iterdir()) and _ends_a_line(sms_log))
        [eml] = list(maildir.iterdir())
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert message["To"] == "local@example.kr"
        assert message["Subject"] == "[원스톱] 신청이 접수되었습니다"
        assert f"/applications/{application}" in body_of(message)
        assert not any((data_dir / "mail" / "tmp").iterdir()), "only whole messages are in new/"
        [line] = sms_log.read_text().splitlines()
        text = orjson.loads(line)
        assert text["to"] == "+821011112222"
        assert text["text"].startswith("[원스톱] 출산 관련 신청이 접수되었습니다.")


def _ends_a_line(path: Path) -> bool:
    return path.exists() and path.read_bytes()[-1:] == b"\n"


@pytest.mark.parametrize("bundle_window_seconds", [WIDE_WINDOW])
async def test_a_batch_of_an_applications_events_writes_its_messages_together(
    notify: RunningService, intake: IntakeServer
) -> None:
    """The residents' consumer applies a batch of an application's events in one transaction: the messages and their
    items are written together at its end (the next event finds the bundle it joins among the new rows, not by
    flushing and asking the database again); three routings are one message, two decisions another, as before."""

    resident = await intake.register(email="jiwoo.park@example.kr", language="ko", channels=("inbox",))
    application = uuid.uuid4()
    codes = ["child_allowance", "parent_benefit", "first_meeting_voucher"]
    lead = f.determined(resident, application, 1, [f.program(c, c, c, Outcome.ELIGIBLE) for c in codes])
    batch = [
        *(f.routed(resident, application, c) for c in codes),
        *(f.decided(resident, application, c) for c in codes[:2]),
    ]
    work = await one_batch(notify, "residents", [lead, *batch])
    statements, commits, count = work.statements, work.commits, work.count

    assert count("INSERT INTO notification_items ") <= commits < 1 + len(batch), "\n".join(s[:110] for s in statements)
    assert count("INSERT INTO notifications ") <= commits, statements
    # What the events look up is loaded at the start of each transaction (Subscription.load), a query per kind.
    for applied in work.transactions():
        # (A bundle loaded brings its items with it: notification_items once more.)
        for table, most in (("notifications", 1), ("notification_items", 2), ("applications", 1),
                            ("application_programs", 1)):  # fmt: skip
            reads = [s for s in applied if s.startswith(f"SELECT {table}.")]
            assert len(reads) <= most, (table, reads)
    await close_bundle(notify, resident, "case.routed", events=3)
    await close_bundle(notify, resident, "case.decided", events=2)


@pytest.mark.parametrize("bundle_window_seconds", [WIDE_WINDOW])
async def test_a_batch_about_many_residents_reads_their_rows_once_and_an_erasure_in_it_still_stops_what_follows(
    notify: RunningService, intake: IntakeServer
) -> None:
    """A batch about several residents reads their rows, preferences and erasures in a query each at the start of
    its transaction, not once per event, and writes a resident's new row once, as it ends (not inserted, then
    updated with the language the application told). Each message is still in its resident's language, and an
    erasure in the middle of the batch erases what came before it and stops what comes after."""
    residents = [await intake.register(channels=("inbox",)) for _ in range(4)]
    english, erased = residents[0], residents[-1]
    own = notify.auth("resident", resident_id=english)
    assert (await notify.client.put("/v1/preferences", headers=own, json={"language": "en"})).status_code == 200
    applications = {r: uuid.uuid4() for r in residents}
    program = f.program("child_allowance", "아동수당", "CA", Outcome.ELIGIBLE)
    batch: list[Any] = []
    for resident, application in applications.items():
        batch += [f.submitted(resident, application), f.determined(resident, application, 1, [program])]
    erasure = ResidentErasureRequested(
        erasure_id=uuid.uuid4(), resident_id=erased, requested_at=dt.datetime.now(dt.UTC)
    )
    batch += [erasure, f.decided(erased, applications[erased], "child_allowance")]
    work = await one_batch(notify, "residents", batch)
    statements, commits, count = work.statements, work.commits, work.count

    reads = "\n".join(s[:100] for s in statements)
    assert count("SELECT residents.") <= commits, reads
    assert count("SELECT preferences.") <= commits, reads
    # And the erasure's own record, locked, and read again when notify's partners' consumer (not stopped) made it
    # first (Erasure._ledger).
    assert count("SELECT resident_erasures.") <= commits + 2, reads
    assert count("INSERT INTO residents ") <= commits, reads
    assert count("UPDATE residents ") == 0, reads

    async with notify.runtime.db.session() as session:
        told = (await session.execute(select(Notification.resident_id, Notification.kind, Notification.language))).all()
        states = set((await session.scalars(select(ResidentState.resident_id))).all())
        erasure_row = await session.get(ResidentErasure, erased)
    assert {(r, k) for r, k, _ in told} == {
        (r, k) for r in residents[:-1] for k in ("application.submitted", "eligibility.determined")
    }
    assert {(r, lang) for r, _, lang in told} == {(english, "en"), *((r, "ko") for r in residents[1:-1])}
    assert states == set(residents[:-1]), "nothing kept about the erased resident"
    assert erasure_row is not None
    assert erasure_row.residents_erased_at is not None


async def test_the_delivery_worker_records_what_it_sent_without_reading_the_rows_back(
    notify: RunningService, producer: Producer, intake: IntakeServer, smtp: MailServer, nats_server: NatsServer,
    bus_prefix: str,
) -> None:  # fmt: skip
    """Once its messages are out, the delivery worker records them in one UPDATE of the rows it still holds, not by
    reading the deliveries (and their notifications and items) back first; each ``notification.sent`` still tells
    which events the message was about, and each delivery is sent once, released."""
    mails = [f"record{i}@example.kr" for i in range(3)]
    residents = [await intake.register(email=m, channels=("email",)) for m in mails]
    async with event_log(nats_server.url, bus_prefix) as log:
        with consumer_statements(notify.runtime.db, "notify-resident") as work:  # notify-resident-delivery
            told = [await producer.publish(f.submitted(r, uuid.uuid4())) for r in residents]
            await wait_until(lambda: all(len(smtp.to(m)) == 1 for m in mails))
            sent = await log.wait_for("notification.sent", lambda e: e.data["channel"] == "email", count=3)
    assert sorted(e.data["source_event_ids"] for e in sent) == sorted([e.id] for e in told)
    assert {uuid.UUID(e.data["resident_id"]) for e in sent} == set(residents)

    recorded = [t for t in work.transactions() if any(s.startswith("UPDATE deliveries SET status=") for s in t)]
    assert recorded, work.statements
    for transaction in recorded:
        assert not [s for s in transaction if s.startswith("SELECT deliveries.")], transaction
        assert any(s.startswith("INSERT INTO outbox") for s in transaction), transaction
    async with notify.runtime.db.session() as session:
        rows = (await session.scalars(select(Delivery).where(Delivery.channel == "email"))).all()
    assert sorted((d.resident_id, d.status, d.attempts, d.claim_token, d.claimed_until) for d in rows) == sorted(
        (r, "sent", 1, None, None) for r in residents
    )
    assert all(d.sent_at is not None for d in rows)


@pytest.mark.parametrize("bundle_window_seconds", [WIDE_WINDOW])
async def test_the_delivery_worker_writes_a_batchs_deliveries_and_events_in_a_statement_each(
    notify: RunningService, producer: Producer, intake: IntakeServer, smtp: MailServer, nats_server: NatsServer,
    bus_prefix: str,
) -> None:  # fmt: skip
    """Messages released together are dispatched in one transaction that writes all their deliveries (inbox and
    email) in one INSERT and their ``notification.sent`` events in another, made from their values: no object of
    the ORM's per row, for deliveries or events, neither there nor when the emails are recorded as sent. Each
    delivery is what it was, each event names its message's events."""
    mails = [f"dispatch{i}@example.kr" for i in range(3)]
    residents = [await intake.register(email=m, channels=("inbox", "email")) for m in mails]
    granted = [f.program("child_allowance", "아동수당", "Child allowance", Outcome.ELIGIBLE)]
    told = [await producer.publish(f.determined(r, uuid.uuid4(), 1, granted)) for r in residents]
    await wait_until(functools.partial(_items, notify, residents, 3))
    async with event_log(nats_server.url, bus_prefix) as log:
        with (
            consumer_statements(notify.runtime.db, "notify-resident") as work,  # notify-resident-delivery
            objects_added("notify-resident") as added,
        ):
            async with notify.runtime.db.session() as session:  # the three windows end at once, as the clock would
                await session.execute(
                    update(Notification).where(Notification.resident_id.in_(residents)).values(next_step_at=utcnow())
                )
            await wait_until(lambda: all(len(smtp.to(m)) == 1 for m in mails))
            sent = await log.wait_for("notification.sent", count=6)
    assert not [a for a in added if a in ("Delivery", "OutboxRow")], added
    dispatched = [t for t in work.transactions() if any(s.startswith("INSERT INTO deliveries") for s in t)]
    assert len(dispatched) == 1, "the three released together"
    [transaction] = dispatched
    assert sum(s.startswith("INSERT INTO deliveries") for s in transaction) == 1, transaction
    assert sum(s.startswith("INSERT INTO outbox") for s in transaction) == 1, transaction
    by_event = {e.id: r for e, r in zip(told, residents, strict=True)}
    assert sorted((uuid.UUID(e.data["resident_id"]), e.data["channel"]) for e in sent) == sorted(
        (r, c) for r in residents for c in ("inbox", "email")
    )
    assert all([by_event[i] for i in e.data["source_event_ids"]] == [uuid.UUID(e.data["resident_id"])] for e in sent)
    async with notify.runtime.db.session() as session:
        rows = (await session.scalars(select(Delivery).where(Delivery.resident_id.in_(residents)))).all()
    assert sorted((d.resident_id, d.channel, d.status, d.attempts, d.claim_token) for d in rows) == sorted(
        (r, c, "sent", 1, None) for r in residents for c in ("inbox", "email")
    )
    assert all(d.sent_at is not None and d.created_at is not None for d in rows)


async def test_a_batchs_eligibility_results_write_their_programs_at_its_end_and_later_events_still_find_them(
    notify: RunningService, intake: IntakeServer
) -> None:
    """The programs an eligibility result tells for the first time are written at the end of the batch's
    transaction from their values, without an ORM object each; a case event later in the batch still finds its
    program (named in its message, given its office), and an erasure later in the batch still deletes them."""
    kept, erased = [await intake.register(channels=("inbox",)) for _ in range(2)]
    applications = {kept: uuid.uuid4(), erased: uuid.uuid4()}
    codes = ["child_allowance", "parent_benefit", "first_meeting_voucher"]
    programs = [f.program(c, f"{c} ko", f"{c} en", Outcome.ELIGIBLE, automatic=False) for c in codes]
    erasure = ResidentErasureRequested(
        erasure_id=uuid.uuid4(), resident_id=erased, requested_at=dt.datetime.now(dt.UTC)
    )
    batch = [
        f.consent(kept, 1, {}),  # taken alone (one_batch)
        *(f.determined(r, a, 1, programs) for r, a in applications.items()),
        f.routed(kept, applications[kept], "parent_benefit"),
        erasure,
    ]
    with objects_added(notify.runtime.consumers["residents"].durable) as added:
        await one_batch(notify, "residents", batch)
    assert added.count("ApplicationProgram") <= 1, added  # the routed one, when in the results' transaction

    async with notify.runtime.db.session() as session:
        rows = (await session.scalars(select(ApplicationProgram))).all()
        routed = await session.scalar(select(NotificationItem).where(NotificationItem.event_type == "case.routed"))
    assert sorted((p.application_id, p.program_code, p.outcome, p.round) for p in rows) == sorted(
        (applications[kept], c, "eligible", 1) for c in codes
    ), "the erased resident's programs are gone"
    assert all(p.signature and p.program_name == {"ko": f"{p.program_code} ko", "en": f"{p.program_code} en"}
               for p in rows)  # fmt: skip
    assert {p.program_code: p.office_code for p in rows} == {
        "child_allowance": None, "parent_benefit": "JN-WEL", "first_meeting_voucher": None
    }  # fmt: skip
    assert routed is not None
    assert routed.data["program_name"] == {"ko": "parent_benefit ko", "en": "parent_benefit en"}


@pytest.mark.parametrize("bundle_window_seconds", [WIDE_WINDOW])
async def test_messages_released_together_ask_intake_for_their_residents_contacts_in_one_request(
    notify: RunningService, producer: Producer, intake: IntakeServer, smtp: MailServer
) -> None:
    """The residents of messages dispatched together, and of the emails then sent together, are asked of intake at
    once, in one request each time, not one each; each message still goes to its own resident's address (a resident
    intake does not know gets the inbox copy)."""
    mails = [f"together{i}@example.kr" for i in range(3)]
    residents = [await intake.register(email=m, channels=("inbox", "email")) for m in mails]
    unknown = uuid.uuid4()
    granted = [f.program("child_allowance", "아동수당", "Child allowance", Outcome.ELIGIBLE)]
    for r in [*residents, unknown]:
        await producer.publish(f.determined(r, uuid.uuid4(), 1, granted))
    await wait_until(functools.partial(_items, notify, [*residents, unknown], 4))
    asked: list[tuple[str, str]] = []

    async def record(request: httpx.Request) -> None:
        asked.append((request.method, request.url.path))

    client = notify.context(NotifyContext).contacts.client
    client.event_hooks["request"].append(record)
    try:
        async with notify.runtime.db.session() as session:  # the four windows end at once, as the clock would
            await session.execute(
                update(Notification)
                .where(Notification.resident_id.in_([*residents, unknown]))
                .values(next_step_at=utcnow())
            )
        await wait_until(lambda: all(len(smtp.to(m)) == 1 for m in mails))
    finally:
        client.event_hooks["request"].remove(record)
    # One for the dispatch of the four, one for the sending of the three emails (the tests' notify keeps no cache).
    assert asked == [("POST", "/v1/contact-lookups")] * 2
    async with notify.runtime.db.session() as session:
        rows = (await session.scalars(select(Delivery).where(Delivery.resident_id == unknown))).all()
    assert [(d.channel, d.status) for d in rows] == [("inbox", "sent")]


async def test_a_batchs_messages_write_their_items_at_its_end_and_an_erasure_later_in_it_still_deletes_them(
    notify: RunningService, intake: IntakeServer
) -> None:
    """The items a batch's events add to messages are written at the end of its transaction from their values,
    without an ORM object each, and an erasure later in the batch still deletes the erased resident's (in its
    transaction or not: test_an_erasure_deletes_the_items_its_transaction_kept_aside)."""
    kept, erased = [await intake.register(channels=("inbox",)) for _ in range(2)]
    applications = {kept: uuid.uuid4(), erased: uuid.uuid4()}
    programs = [f.program("child_allowance", "ca ko", "ca en", Outcome.ELIGIBLE, automatic=False)]
    determined = {r: f.determined(r, a, 1, programs) for r, a in applications.items()}
    routed = f.routed(kept, applications[kept], "child_allowance")
    erasure = ResidentErasureRequested(
        erasure_id=uuid.uuid4(), resident_id=erased, requested_at=dt.datetime.now(dt.UTC)
    )
    batch = [f.consent(kept, 1, {}), f.submitted(kept, applications[kept]), *determined.values(), routed, erasure]
    with objects_added(notify.runtime.consumers["residents"].durable) as added:
        work = await one_batch(notify, "residents", batch)
    assert "NotificationItem" not in added, added
    assert work.commits < len(batch) - 1, "the events after the first in one transaction"

    async with notify.runtime.db.session() as session:
        items = (await session.scalars(select(NotificationItem).order_by(NotificationItem.id))).all()
        notifications = {n.id: n for n in (await session.scalars(select(Notification))).all()}
    assert [(i.resident_id, i.event_type) for i in items] == [
        (kept, "application.submitted"), (kept, "eligibility.determined"), (kept, "case.routed")
    ]  # fmt: skip
    assert all(notifications[i.notification_id].kind == i.event_type for i in items)
    assert items[2].data["program_name"] == {"ko": "ca ko", "en": "ca en"}
    assert not [n for n in notifications.values() if n.resident_id == erased]


@pytest.mark.parametrize("bundle_window_seconds", [WIDE_WINDOW])
async def test_a_batchs_messages_are_written_at_its_end_and_a_withdrawal_in_it_still_suppresses_them(
    notify: RunningService, intake: IntakeServer
) -> None:
    """The messages a batch's events open are written at the end of its transaction from their values, without an
    ORM object each. A withdrawal later in the batch still suppresses the application's message opened before it
    (written first, then suppressed), and an event after the withdrawal still joins the message it bundles with."""
    kept, withdrawing = [await intake.register(channels=("inbox",)) for _ in range(2)]
    applications = {kept: uuid.uuid4(), withdrawing: uuid.uuid4()}
    programs = [f.program(c, c, c, Outcome.ELIGIBLE, automatic=False) for c in ("child_allowance", "parent_benefit")]
    batch = [
        f.consent(kept, 1, {}),  # taken alone (one_batch)
        *(f.determined(r, a, 1, programs) for r, a in applications.items()),
        f.routed(kept, applications[kept], "child_allowance"),
        f.withdrawn(withdrawing, applications[withdrawing]),
        f.routed(kept, applications[kept], "parent_benefit"),
    ]
    with objects_added(notify.runtime.consumers["residents"].durable) as added:
        work = await one_batch(notify, "residents", batch)
    assert "Notification" not in added, added
    assert work.commits < len(batch) - 1, "the events after the first in one transaction"

    async with notify.runtime.db.session() as session:
        told = (await session.scalars(select(Notification))).all()
        items = (await session.scalars(select(NotificationItem))).all()
    # (The withdrawal's own message, due at once, may be dispatched by now.)
    assert sorted((n.resident_id, n.kind, n.status) for n in told if n.kind != "application.withdrawn") == sorted([
        (kept, "eligibility.determined", "collecting"), (kept, "case.routed", "collecting"),
        (withdrawing, "eligibility.determined", "suppressed"),
    ])  # fmt: skip
    assert [n.resident_id for n in told if n.kind == "application.withdrawn"] == [withdrawing]
    routed = {n.id for n in told if n.kind == "case.routed"}
    assert sorted(i.data["program_code"] for i in items if i.notification_id in routed) == [
        "child_allowance", "parent_benefit"
    ], "the second routing joins the first's message"  # fmt: skip


async def test_an_erasure_deletes_the_items_its_transaction_kept_aside(
    notify: RunningService, intake: IntakeServer
) -> None:
    """A message told earlier in the erasure's own transaction (a batch's), its item not written yet, is deleted with
    the resident's others: its item is written before the erasure's deletes, not after them at the batch's end."""
    ctx = notify.context(NotifyContext)
    erased = await intake.register(channels=("inbox",))
    submitted = f.submitted(erased, uuid.uuid4())
    request = ResidentErasureRequested(
        erasure_id=uuid.uuid4(), resident_id=erased, requested_at=dt.datetime.now(dt.UTC)
    )
    async with notify.runtime.db.session() as session:  # as the residents' consumer runs a batch
        await ResidentMessages(ctx.settings).application_submitted(
            session, new_event(submitted, source="/test"), submitted
        )
        erasure = resident_data.Erasure(ctx.outbox, ctx.settings, ctx.clock)
        await erasure.residents_part(session, new_event(request, source="/test"), request)
        await finish_batch(session)
    assert await count(notify, NotificationItem, NotificationItem.resident_id == erased) == 0
    assert await count(notify, Notification, Notification.resident_id == erased) == 0


@pytest.mark.parametrize("bundle_window_seconds", [WIDE_WINDOW])
async def test_a_batch_adding_to_messages_still_collecting_does_not_read_their_items(
    notify: RunningService, intake: IntakeServer
) -> None:
    """The bundles a batch's events may add to are loaded at its start without their items, which the consumer
    never reads; what it adds still joins them."""
    residents = [await intake.register(channels=("inbox",)) for _ in range(2)]
    applications = {r: uuid.uuid4() for r in residents}

    def results(round_: int, outcome: Outcome) -> list[Any]:
        programs = [f.program("child_allowance", "ca", "ca", outcome)]
        return [f.determined(r, a, round_, programs) for r, a in applications.items()]

    lead = f.consent(residents[0], 1, {})
    await one_batch(notify, "residents", [lead, *results(1, Outcome.ELIGIBLE)])
    work = await one_batch(notify, "residents", [lead, *results(2, Outcome.INELIGIBLE)])
    read = [s for s in work.statements if "FROM notification_items" in s]
    assert all(s.startswith("SELECT notification_items.source_event_id, ") for s in read), read

    async with notify.runtime.db.session() as session:
        items = await session.scalars(select(NotificationItem).where(NotificationItem.resident_id.in_(residents)))
        by_notification = sorted((i.notification_id, i.resident_id, i.data["round"]) for i in items.all())
    assert len({n for n, _, _ in by_notification}) == 2, "one message each, the second round added to the first"
    assert sorted((r, k) for _, r, k in by_notification) == sorted((r, k) for r in residents for k in (1, 2))


async def _items(notify: RunningService, residents: list[uuid.UUID], expected: int) -> bool:
    return await count(notify, NotificationItem, NotificationItem.resident_id.in_(residents)) == expected


@pytest.mark.parametrize("bundle_window_seconds", [WIDE_WINDOW])
async def test_a_batch_of_eligibility_results_asks_for_its_applications_programs_once(
    notify: RunningService, intake: IntakeServer
) -> None:
    """The programs an eligibility result names are read with the rest of the batch's rows at the start of its
    transaction, not once per result; a later round still tells a resident only what changed since."""
    residents = [await intake.register(channels=("inbox",)) for _ in range(3)]
    applications = {r: uuid.uuid4() for r in residents}
    codes = ["child_allowance", "parent_benefit", "first_meeting_voucher"]

    def results(round_: int, changed: str | None) -> list[Any]:
        programs = [f.program(c, c, c, Outcome.INELIGIBLE if c == changed else Outcome.ELIGIBLE) for c in codes]
        return [f.determined(r, a, round_, programs) for r, a in applications.items()]

    # Taken alone, the batch follows. A change of consents leaves the delivery worker nothing to write, which would
    # have the batch's transaction give way to it after its budget (on a busy machine, before its last result).
    lead = f.consent(residents[0], 1, {})
    for batch in ([lead, *results(1, None)], [lead, *results(2, "parent_benefit")]):
        work = await one_batch(notify, "residents", batch)
        assert work.commits < len(batch), "two results at least in one transaction"
        for applied in work.transactions():
            reads = [s for s in applied if s.startswith("SELECT application_programs.")]
            assert len(reads) <= 1, reads

    async with notify.runtime.db.session() as session:
        results_told = select(NotificationItem).where(NotificationItem.event_type == "eligibility.determined")
        items = (await session.scalars(results_told)).all()
    told = sorted((i.resident_id, i.data["round"], [p["code"] for p in i.data["programs"]]) for i in items)
    assert told == sorted([(r, 1, codes) for r in residents] + [(r, 2, ["parent_benefit"]) for r in residents])


@pytest.mark.parametrize("bundle_window_seconds", [WIDE_WINDOW])
async def test_an_intake_without_batched_contact_lookups_is_asked_one_resident_at_a_time_until_it_has_them(
    notify: RunningService, producer: Producer, intake: IntakeServer, smtp: MailServer
) -> None:
    """During a rolling deploy that updates notify before intake, intake answers ``POST /v1/contact-lookups`` 404, as
    its earlier release does: the residents' contacts are asked one at a time and every message still goes out. Once
    intake has the route and the pause has passed, they are asked in one request again."""
    contacts = notify.context(NotifyContext).contacts
    await intake.stop()
    intake.left_out = ("/v1/contact-lookups",)
    await intake.start()
    asked: list[tuple[str, str]] = []

    async def record(request: httpx.Request) -> None:
        asked.append((request.method, request.url.path))

    async def release(residents: list[uuid.UUID], mails: list[str]) -> None:
        granted = [f.program("child_allowance", "아동수당", "Child allowance", Outcome.ELIGIBLE)]
        for r in residents:
            await producer.publish(f.determined(r, uuid.uuid4(), 1, granted))
        await wait_until(functools.partial(_items, notify, residents, len(residents)))
        asked.clear()
        async with notify.runtime.db.session() as session:  # the windows end at once, as the clock would
            await session.execute(
                update(Notification).where(Notification.resident_id.in_(residents)).values(next_step_at=utcnow())
            )
        await wait_until(lambda: all(len(smtp.to(m)) == 1 for m in mails))

    contacts.client.event_hooks["request"].append(record)
    try:
        old = [f"old-intake{i}@example.kr" for i in range(2)]
        residents = [await intake.register(email=m, channels=("inbox", "email")) for m in old]
        await release(residents, old)
        lookups = [a for a in asked if a[0] == "POST"]
        singles = {path for method, path in asked if method == "GET"}
        assert lookups == [("POST", "/v1/contact-lookups")], "asked once, then not again within the pause"
        assert singles == {f"/v1/residents/{r}/contact" for r in residents}, asked

        await intake.stop()
        intake.left_out = ()
        await intake.start()
        contacts.one_by_one_seconds = 0.0  # the pause has passed
        new = [f"new-intake{i}@example.kr" for i in range(2)]
        await release([await intake.register(email=m, channels=("inbox", "email")) for m in new], new)
        assert asked == [("POST", "/v1/contact-lookups")] * 2, "batched again once intake has the route"
    finally:
        contacts.client.event_hooks["request"].remove(record)
