"""Partners: grants, subscriptions, signed webhooks (verified by an implementation of the Standard Webhooks spec
written here, independent of notify's) and per-partner NATS subjects, against real NATS, databases and HTTP. What
each resident's consent lets through is in test_partner_consent.py."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import orjson
from sqlalchemy import func, select

from services.notify.models import Subscription, WebhookDelivery
from shared.auth import TokenIssuer
from shared.events import Decision, Language, Localized, Outcome, ReferralCreated, ServiceType
from tests.services.notify import support as f
from tests.services.notify.support import Producer, consented, grant, start_notify
from tests.support.endpoints import Endpoint, Received
from tests.support.nats import NatsServer
from tests.support.services import RunningService
from tests.support.waiting import wait_until

BANK = "hanbit-bank"
NGO = "saebom-ngo"

# ================================================================================================ Standard Webhooks


def standard_webhook_signature_valid(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """Verify per https://www.standardwebhooks.com: the key is the base64 part of ``whsec_...``; the signed content is
    ``{webhook-id}.{webhook-timestamp}.{body}``; the header lists ``v1,<base64 HMAC-SHA256>`` entries, any of which
    may match; the timestamp must be recent."""
    msg_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for candidate in headers["webhook-signature"].split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            return True
    return False


# ================================================================================================ helpers


async def subscribe(notify: RunningService, partner: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = await notify.client.post(
        "/v1/subscriptions", json=body, headers={**notify.auth("partner", partner_id=partner), **headers}
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def deliveries(notify: RunningService, partner: str, **params: Any) -> list[dict[str, Any]]:
    response = await notify.client.get(
        "/v1/deliveries", params=params, headers=notify.auth("partner", partner_id=partner)
    )
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def envelope(request: Received) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(request.body)
    return result


# ================================================================================================ webhooks


async def test_webhooks_are_signed_ordered_retried_and_carry_only_the_partner_view(
    notify: RunningService, producer: Producer, partner_endpoint: Endpoint
) -> None:
    granted = await grant(notify, BANK, "application.submitted", case__decided="payment")
    assert [(g["event_type"], g["purpose"]) for g in granted["grants"]] == [
        ("application.submitted", "notification"),
        ("case.decided", "payment"),
    ]
    assert granted["nats_subjects"] == f"{notify.settings.bus_prefix}.partner.{BANK}.>"

    body = {
        "transport": "webhook",
        "url": f"{partner_endpoint.url}/hooks/onestop",
        "event_types": ["application.submitted", "case.decided"],
        "description": "benefit deposits",
    }
    created = await subscribe(notify, BANK, body, **{"Idempotency-Key": "sub-1"})
    secret = created["secret"]
    assert secret.startswith("whsec_")
    replay = await notify.client.post(
        "/v1/subscriptions", json=body, headers={**notify.auth("partner", partner_id=BANK), "Idempotency-Key": "sub-1"}
    )
    assert replay.status_code == 201
    assert replay.json()["id"] == created["id"], "a retried create returns the first answer"
    shown = await notify.client.get(
        f"/v1/subscriptions/{created['id']}", headers=notify.auth("partner", partner_id=BANK)
    )
    assert "secret" not in shown.json(), "the secret is only shown when created"

    resident, application = uuid.uuid4(), uuid.uuid4()
    await consented(notify, producer, resident, 1, {f"partner:{BANK}": True})
    partner_endpoint.fail_next = 2  # the endpoint fails twice, then works
    submitted = await producer.publish(f.submitted(resident, application))
    decided = await producer.publish(
        f.decided(resident, application, "parent_benefit", amount=1_000_000, reason=("지급 대상입니다", "Eligible"))
    )
    await wait_until(lambda: len(partner_endpoint.accepted) == 2)

    # In order: the second event waited until the first got through (after two failures and retries).
    assert [envelope(r)["id"] for r in partner_endpoint.requests] == [submitted.id] * 3 + [decided.id]
    assert [r.status for r in partner_endpoint.requests] == [503, 503, 200, 200]
    assert len({r.headers["webhook-id"] for r in partner_endpoint.requests[:3]}) == 1, "same id on every retry"
    for request in partner_endpoint.requests:
        assert standard_webhook_signature_valid(secret, request.headers, request.body)
        assert request.path == "hooks/onestop"
    tampered = partner_endpoint.requests[-1]
    assert not standard_webhook_signature_valid(secret, tampered.headers, tampered.body.replace(b"}", b" }", 1))

    # Only the partner view: the pseudonymous id, the district and language (never the answers nor vulnerabilities);
    # the decision with its amount, which a payment grant needs (never the caseworker's free-text reason).
    first, second = envelope(partner_endpoint.accepted[0]), envelope(partner_endpoint.accepted[1])
    assert first["type"] == "onestop.application.submitted"
    assert set(first["data"]) == {
        "application_id", "resident_id", "life_event", "channel", "submitted_at", "district_code", "preferred_language",
    }  # fmt: skip
    assert (first["data"]["district_code"], first["data"]["preferred_language"]) == ("11110", "ko")
    assert first["data"]["resident_id"] == str(resident)
    assert set(second["data"]) == {
        "case_id", "application_id", "resident_id", "program_code", "department", "decision", "reason_code", "amount",
        "decided_at",
    }  # fmt: skip
    assert second["data"]["amount"] == 1_000_000

    async def recorded() -> bool:
        return all(d["status"] == "sent" for d in await deliveries(notify, BANK))

    await wait_until(recorded)
    listed = await deliveries(notify, BANK)
    assert [(d["event_type"], d["status"], d["attempts"]) for d in listed] == [
        ("case.decided", "sent", 1),
        ("application.submitted", "sent", 3),
    ]

    # A rotation: for the grace period both the new and the old secret sign.
    rotated = await notify.client.post(
        f"/v1/subscriptions/{created['id']}/rotate-secret", json={}, headers=notify.auth("partner", partner_id=BANK)
    )
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != secret
    await producer.publish(f.decided(resident, application, "child_allowance", amount=100_000))
    await wait_until(lambda: len(partner_endpoint.accepted) == 3)
    latest = partner_endpoint.accepted[-1]
    assert envelope(latest)["data"]["amount"] == 100_000
    assert len(latest.headers["webhook-signature"].split(" ")) == 2
    assert standard_webhook_signature_valid(new_secret, latest.headers, latest.body)
    assert standard_webhook_signature_valid(secret, latest.headers, latest.body)

    # Redelivery on request: the same message (same webhook-id) once more.
    oldest = listed[-1]
    again = await notify.client.post(
        f"/v1/deliveries/{oldest['id']}/redeliver", headers=notify.auth("partner", partner_id=BANK)
    )
    assert again.status_code == 202, again.text
    await wait_until(lambda: len(partner_endpoint.accepted) == 4)
    assert partner_endpoint.accepted[-1].headers["webhook-id"] == partner_endpoint.requests[0].headers["webhook-id"]
    assert standard_webhook_signature_valid(new_secret, partner_endpoint.accepted[-1].headers,
                                            partner_endpoint.accepted[-1].body)  # fmt: skip


async def test_a_failing_endpoint_pauses_the_subscription_until_it_is_resumed(
    database_url: str,
    nats_server: NatsServer,
    bus_prefix: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    notify_settings: dict[str, Any],
    producer: Producer,
    partner_endpoint: Endpoint,
) -> None:
    settings = {**notify_settings, "webhook_max_attempts": 2, "webhook_pause_after_failures": 3}
    async with start_notify(
        database_url=database_url, nats_url=nats_server.url, prefix=bus_prefix, keys_dir=keys_dir, issuer=issuer,
        settings=settings,
    ) as notify:  # fmt: skip
        await grant(notify, NGO, "case.routed", "case.decided")
        created = await subscribe(
            notify, NGO, {"transport": "webhook", "url": partner_endpoint.url, "event_types": ["case.routed"]}
        )
        partner = notify.auth("partner", partner_id=NGO)
        partner_endpoint.down = True
        resident, application = uuid.uuid4(), uuid.uuid4()
        await consented(notify, producer, resident, 1, {f"partner:{NGO}": True})
        events = [await producer.publish(f.routed(resident, application, code)) for code in ("a", "b", "c")]

        async def paused() -> bool:
            response = await notify.client.get(f"/v1/subscriptions/{created['id']}", headers=partner)
            return bool(response.json()["status"] == "paused")

        await wait_until(paused)
        # The first delivery gave up after 2 attempts (dead); the second's failure made 3 in a row: paused.
        assert [envelope(r)["id"] for r in partner_endpoint.requests] == [events[0].id] * 2 + [events[1].id]
        assert [d["event_id"] for d in await deliveries(notify, NGO, status="dead")] == [events[0].id]

        partner_endpoint.down = False
        resumed = await notify.client.post(f"/v1/subscriptions/{created['id']}/resume", headers=partner)
        assert resumed.status_code == 200
        assert resumed.json()["status"] == "active"
        await wait_until(lambda: len(partner_endpoint.accepted) == 2)
        assert [envelope(r)["id"] for r in partner_endpoint.accepted] == [events[1].id, events[2].id]

        # A revoked grant stops what is queued: paused, an event queues up, the grant goes, resumed: not sent.
        paused_now = await notify.client.post(f"/v1/subscriptions/{created['id']}/pause", headers=partner)
        assert paused_now.json()["status"] == "paused"
        queued = await producer.publish(f.routed(resident, application, "d"))

        async def queued_up() -> bool:
            return [d["event_id"] for d in await deliveries(notify, NGO, status="pending")] == [queued.id]

        await wait_until(queued_up)
        await grant(notify, NGO, "case.decided")
        await notify.client.post(f"/v1/subscriptions/{created['id']}/resume", headers=partner)

        async def cancelled() -> bool:
            statuses = [str(d["status"]) for d in await deliveries(notify, NGO, event_type="case.routed")]
            return statuses[0] == "cancelled"

        await wait_until(cancelled)
        assert queued.id not in [envelope(r)["id"] for r in partner_endpoint.requests]

        # A deleted subscription gets nothing more.
        await grant(notify, NGO, "case.routed", "case.decided")
        deleted = await notify.client.delete(f"/v1/subscriptions/{created['id']}", headers=partner)
        assert deleted.status_code == 204
        assert (await notify.client.get(f"/v1/subscriptions/{created['id']}", headers=partner)).status_code == 404
        before = len(partner_endpoint.requests)
        await producer.publish(f.routed(resident, application, "e"))
        marker = await subscribe(
            notify, NGO, {"transport": "webhook", "url": f"{partner_endpoint.url}/new", "event_types": ["case.decided"]}
        )
        await producer.publish(f.decided(resident, application, "e", Decision.DENIED))
        await wait_until(lambda: any(r.path == "new" for r in partner_endpoint.accepted))
        assert len(partner_endpoint.requests) == before + 1, "the deleted subscription got nothing"
        assert marker["event_types"] == ["case.decided"]


# ================================================================================================ NATS


async def test_partners_get_their_own_copy_on_their_own_nats_subject(
    notify: RunningService, producer: Producer, nats_server: NatsServer, bus_prefix: str
) -> None:
    await grant(notify, BANK, purpose="payment", eligibility__determined="payment")
    for partner in (NGO, "third-partner"):
        await grant(notify, partner, "eligibility.determined")
    for partner in (BANK, NGO):  # the third is granted but never subscribed
        created = await subscribe(notify, partner, {"transport": "nats", "event_types": ["eligibility.determined"]})
        assert created["nats_subjects"] == [f"{bus_prefix}.partner.{partner}.eligibility.determined"]
        assert created["secret"] is None

    received: list[tuple[str, dict[str, Any]]] = []
    nc = await nats.connect(nats_server.url)
    try:

        async def collect(msg: Any) -> None:
            received.append((msg.subject, orjson.loads(msg.data)))

        subscription = await nc.subscribe(f"{bus_prefix}.partner.>", cb=collect)
        await nc.flush()
        resident, application = uuid.uuid4(), uuid.uuid4()
        # The resident consents to all three partners; another resident, before, to none.
        await producer.publish(
            f.determined(
                uuid.uuid4(), uuid.uuid4(), 1, [f.program("child_allowance", "아동수당", "CA", Outcome.ELIGIBLE)]
            )
        )
        await consented(notify, producer, resident, 1, {f"partner:{p}": True for p in (BANK, NGO, "third-partner")})
        event = await producer.publish(
            f.determined(
                resident, application, 1,
                [f.program("child_allowance", "아동수당", "CA", Outcome.ELIGIBLE, amount=100_000, period="monthly")],
            )
        )  # fmt: skip
        await wait_until(lambda: len(received) >= 2)
        # Every copy notify made is published (the copies leave through its outbox), and everything the server sent
        # us before our flush has been collected: a third (wrong) copy, if any, is counted below.
        await wait_until(lambda: _relayed_all(notify))
        await nc.flush()
        await wait_until(lambda: subscription.pending_msgs == 0)
        by_subject = dict(received)
        assert sorted(by_subject) == [
            f"{bus_prefix}.partner.{BANK}.eligibility.determined",
            f"{bus_prefix}.partner.{NGO}.eligibility.determined",
        ], "one copy per subscribed partner, and nothing about the resident who did not consent"
        assert len(received) == 2
        for body in by_subject.values():
            assert body["id"] == event.id
            assert body["type"] == "onestop.eligibility.determined"
            assert body["data"]["resident_id"] == str(resident)
            assert (body["data"]["district_code"], body["data"]["preferred_language"]) == ("11110", "ko")
        # The bank's grant is for payment: the amount; the NGO's for notification: no amount at all.
        program = {"program_code": "child_allowance", "department": "welfare", "outcome": "eligible"}
        assert by_subject[f"{bus_prefix}.partner.{BANK}.eligibility.determined"]["data"]["programs"] == [
            {**program, "amount": 100_000}
        ]
        assert by_subject[f"{bus_prefix}.partner.{NGO}.eligibility.determined"]["data"]["programs"] == [program]
    finally:
        await nc.close()


async def test_a_referral_reaches_the_partner_it_names_and_no_other(
    notify: RunningService, producer: Producer, nats_server: NatsServer, partner_endpoint: Endpoint, bus_prefix: str
) -> None:
    # Both partners are granted the referral events, both subscribe, and the resident consented to both: only the
    # address keeps a referral to the NGO from reaching the bank.
    for partner in (BANK, NGO):
        await grant(notify, partner, "referral.created", "referral.accepted")
        await subscribe(notify, partner, {"transport": "nats", "event_types": ["referral.created"]})
    await subscribe(
        notify,
        BANK,
        {"transport": "webhook", "url": f"{partner_endpoint.url}/hooks", "event_types": ["referral.created"]},
    )
    resident = uuid.uuid4()
    await consented(notify, producer, resident, 1, {f"partner:{NGO}": True, f"partner:{BANK}": True})

    received: list[tuple[str, dict[str, Any]]] = []
    nc = await nats.connect(nats_server.url)
    try:

        async def collect(msg: Any) -> None:
            received.append((msg.subject, orjson.loads(msg.data)))

        subscription = await nc.subscribe(f"{bus_prefix}.partner.>", cb=collect)
        await nc.flush()
        now = dt.datetime.now(dt.UTC)
        referral = ReferralCreated(
            referral_id=uuid.uuid4(), partner_id=NGO, offering_id=uuid.uuid4(), offering_code="childcare-mapo",
            offering_name=Localized(ko="새봄 아이돌봄", en="Saebom childcare"), service_type=ServiceType.CHILDCARE,
            case_id=uuid.uuid4(), application_id=uuid.uuid4(), resident_id=resident, program_code="parent_benefit",
            office_code="MAPO-CSC", district_code="11440", language=Language.KO, referred_by="caseworker:alice",
            created_at=now,
        )  # fmt: skip
        event = await producer.publish(referral, source="/onestop/routing")
        await wait_until(lambda: len(received) >= 1)
        await wait_until(lambda: _relayed_all(notify))
        await nc.flush()
        await wait_until(lambda: subscription.pending_msgs == 0)
        assert [s for s, _ in received] == [f"{bus_prefix}.partner.{NGO}.referral.created"]
        body = received[0][1]
        assert (body["id"], body["type"]) == (event.id, "onestop.referral.created")
        # The pseudonymous id and the partner's own offering; not the district, language, case, office or caseworker.
        assert body["data"] == {
            "referral_id": str(referral.referral_id), "offering_code": "childcare-mapo", "service_type": "childcare",
            "resident_id": str(resident), "created_at": body["data"]["created_at"],
        }  # fmt: skip
        assert await notify.count(WebhookDelivery) == 0, "nothing queued for the bank's webhook"
    finally:
        await nc.close()


async def _relayed_all(notify: RunningService) -> bool:
    return await notify.runtime.relay.backlog() == 0


# ================================================================================================ bad input


BAD_SUBSCRIPTIONS: list[tuple[dict[str, Any], int, str]] = [
    ({"transport": "webhook", "url": "ftp://partner.example/hook", "event_types": ["case.decided"]}, 422, "url"),
    ({"transport": "webhook", "url": "http://10.1.2.3/hook", "event_types": ["case.decided"]}, 422, "url"),
    ({"transport": "webhook", "url": "http://169.254.169.254/latest", "event_types": ["case.decided"]}, 422, "url"),
    ({"transport": "webhook", "url": "http://[::ffff:192.168.0.1]/", "event_types": ["case.decided"]}, 422, "url"),
    ({"transport": "webhook", "url": "http://user:pw@127.0.0.1/", "event_types": ["case.decided"]}, 422, "url"),
    ({"transport": "webhook", "event_types": ["case.decided"]}, 422, "url"),
    ({"transport": "nats", "url": "http://127.0.0.1/", "event_types": ["case.decided"]}, 422, "url"),
    ({"transport": "webhook", "url": "http://127.0.0.1/", "event_types": ["case.exploded"]}, 422, "event_types[0]"),
    ({"transport": "nats", "event_types": ["case.decided", "case.assigned"]}, 422, "event_types[1]"),
    ({"transport": "nats", "event_types": []}, 422, "event_types"),
    ({"transport": "pigeon", "event_types": ["case.decided"]}, 422, "transport"),
    ({"transport": "nats", "event_types": ["case.decided"], "extra": 1}, 422, "extra"),
    ({"transport": "nats", "event_types": ["application.submitted"]}, 403, "event_types"),
]


async def test_bad_subscriptions_are_refused_with_a_problem_naming_the_field_and_nothing_is_written(
    notify: RunningService,
) -> None:
    await grant(notify, BANK, "case.decided")
    for body, status, field in BAD_SUBSCRIPTIONS:
        response = await notify.client.post(
            "/v1/subscriptions", json=body, headers=notify.auth("partner", partner_id=BANK)
        )
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]], (body, response.json())
    listed = await notify.client.get("/v1/subscriptions", headers=notify.auth("partner", partner_id=BANK))
    assert listed.json() == []
    async with notify.runtime.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Subscription)) == 0
        assert await session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


async def test_bad_grants_are_refused_and_leave_the_grants_as_they_were(notify: RunningService) -> None:
    await grant(notify, BANK, case__decided="payment")
    admin = notify.auth("admin")
    decided = {"event_type": "case.decided", "purpose": "payment"}
    for partner, body, field in [
        (BANK, {"grants": [{"event_type": "case.assigned", "purpose": "notification"}]}, "grants[0].event_type"),
        (BANK, {"grants": [decided, {"event_type": "no.such_type", "purpose": "payment"}]}, "grants[1].event_type"),
        (BANK, {"grants": [decided, {**decided, "purpose": "outreach"}]}, "grants[1].event_type"),  # twice
        (BANK, {"grants": [{"event_type": "case.decided", "purpose": "marketing"}]}, "grants[0].purpose"),
        (BANK, {"grants": [{"event_type": "case.decided"}]}, "grants[0].purpose"),
        (BANK, {"grants": [{"event_type": "case.decided", "purpose": "statistics"}]}, "grants[0].purpose"),
        (BANK, {"event_types": ["case.decided"]}, "event_types"),  # the old form: no purpose stated
        ("Bad.Partner", {"grants": [decided]}, "path.partner_id"),
    ]:
        response = await notify.client.put(f"/v1/partners/{partner}/grants", json=body, headers=admin)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]], (body, response.json())
    current = await notify.client.get(f"/v1/partners/{BANK}", headers=admin)
    assert [(g["event_type"], g["purpose"]) for g in current.json()["grants"]] == [("case.decided", "payment")]
    assert (await notify.client.get("/v1/partners", headers=admin)).json()[0]["id"] == BANK

    # A purpose may change; the grant stays, stated anew.
    changed = await grant(notify, BANK, "case.decided", "aggregate.determinations_counted", purpose="outreach")
    assert [(g["event_type"], g["purpose"]) for g in changed["grants"]] == [
        ("aggregate.determinations_counted", "outreach"),
        ("case.decided", "outreach"),
    ]
