"""Partner feeds follow each resident's consent, over webhooks (a real HTTP endpoint) and NATS (a real subscriber on
the partner's subjects): nothing about a resident who did not consent, only the types a resident chose, amounts only
under a grant whose purpose needs them, and a withdrawal that drops what is queued and records the drop."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import nats
import orjson
from sqlalchemy import func, select

from services.notify.models import AggregateCount, WebhookDelivery, platform
from services.notify.partner_consent import WITHDRAWN_NOTE
from shared.auth import TokenIssuer
from shared.events import Outcome, ResidentContext, ResidentErasureRequested
from tests.services.notify import support as f
from tests.services.notify.support import Producer, consented, grant, start_notify
from tests.support.endpoints import Endpoint, Received
from tests.support.nats import NatsServer
from tests.support.round_trips import consumer_statements
from tests.support.services import RunningService
from tests.support.waiting import wait_until

BANK = "hanbit-bank"
NGO = "saebom-ngo"
ROUTED, DECIDED = "onestop.case.routed", "onestop.case.decided"


async def subscribe(notify: RunningService, partner: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await notify.client.post(
        "/v1/subscriptions", json=body, headers=notify.auth("partner", partner_id=partner)
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


def body(request: Received) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(request.body)
    return result


def seen(bodies: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(resident id, event type) of each envelope, in the order received."""
    return [(b["data"]["resident_id"], b["type"]) for b in bodies]


def all_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in all_keys(v)}
    return set()


@contextlib.asynccontextmanager
async def nats_partner(nats_server: NatsServer, subjects: str) -> AsyncIterator[list[dict[str, Any]]]:
    """What a partner's NATS subscriber receives on ``subjects``, in order."""
    received: list[dict[str, Any]] = []
    nc = await nats.connect(nats_server.url)

    async def collect(msg: Any) -> None:
        received.append(orjson.loads(msg.data))

    try:
        await nc.subscribe(subjects, cb=collect)
        await nc.flush()
        yield received
    finally:
        await nc.close()


async def queued_copies(notify: RunningService) -> int:
    """Partner copies waiting in notify's outbox."""
    outbox = platform.outbox
    async with notify.runtime.db.session() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(outbox)
            .where(
                outbox.c.published_at.is_(None),
                outbox.c.subject.startswith(f"{notify.settings.bus_prefix}.partner."),
            )
        )
    return int(count or 0)


# ================================================================================================ who gets what


async def test_a_partner_gets_only_what_each_resident_consented_to_over_webhooks_and_nats(
    notify: RunningService, producer: Producer, partner_endpoint: Endpoint, nats_server: NatsServer, bus_prefix: str
) -> None:
    await grant(notify, NGO, "case.routed", "case.decided")
    await grant(notify, BANK, case__decided="payment")
    types = ["case.routed", "case.decided"]
    await subscribe(notify, NGO, {"transport": "webhook", "url": partner_endpoint.url, "event_types": types})
    await subscribe(notify, NGO, {"transport": "nats", "event_types": types})

    everything, routed_only, other_partner, nobody = (uuid.uuid4() for _ in range(4))
    await consented(notify, producer, everything, 1, {f"partner:{NGO}": True})
    await consented(notify, producer, routed_only, 1, {f"partner:{NGO}:case.routed": True, "proactive_screening": True})
    await consented(notify, producer, other_partner, 1, {f"partner:{BANK}": True, f"partner:{NGO}": False})
    # ``nobody`` never consented to anything.

    async with nats_partner(nats_server, f"{bus_prefix}.partner.{NGO}.>") as received:
        for resident in (nobody, other_partner, routed_only, everything):
            application = uuid.uuid4()
            await producer.publish(f.routed(resident, application, "child_allowance"))
            await producer.publish(f.decided(resident, application, "child_allowance"))
        marker = await producer.publish(f.routed(everything, uuid.uuid4(), "parent_benefit"))
        # The consumer fans out in stream order and both transports keep that order: once the last event arrived,
        # everything before it that was going to arrive has.
        await wait_until(lambda: any(body(r)["id"] == marker.id for r in partner_endpoint.accepted))
        await wait_until(lambda: any(b["id"] == marker.id for b in received))
        over_nats = list(received)

    expected = [
        (str(routed_only), ROUTED),
        (str(everything), ROUTED),
        (str(everything), DECIDED),
        (str(everything), ROUTED),
    ]
    assert seen([body(r) for r in partner_endpoint.accepted]) == expected
    assert seen(over_nats) == expected
    # Not even a trace of the others: no delivery the partner could list, nothing queued.
    async with notify.runtime.db.session() as session:
        about = set(await session.scalars(select(WebhookDelivery.resident_id).distinct()))
    assert about == {everything, routed_only}
    listed = await deliveries(notify, NGO)
    assert len(listed) == len(expected)
    assert await queued_copies(notify) == 0


async def test_amounts_go_only_to_a_grant_whose_purpose_needs_them(
    notify: RunningService, producer: Producer, partner_endpoint: Endpoint
) -> None:
    await grant(notify, BANK, case__decided="payment", eligibility__determined="payment")
    await grant(notify, NGO, "case.decided", "eligibility.determined", purpose="outreach")
    types = ["eligibility.determined", "case.decided"]
    bank = await subscribe(
        notify, BANK, {"transport": "webhook", "url": f"{partner_endpoint.url}/bank", "event_types": types}
    )
    await subscribe(notify, NGO, {"transport": "webhook", "url": f"{partner_endpoint.url}/ngo", "event_types": types})
    resident, application = uuid.uuid4(), uuid.uuid4()
    await consented(notify, producer, resident, 1, {f"partner:{BANK}": True, f"partner:{NGO}": True})

    programs = [
        f.program("child_allowance", "아동수당", "Child allowance", Outcome.ELIGIBLE, amount=100_000, period="monthly"),
        f.program("housing_benefit", "주거급여", "Housing benefit", Outcome.NEEDS_INFORMATION),
    ]
    await producer.publish(f.determined(resident, application, 1, programs))
    await producer.publish(f.decided(resident, application, "child_allowance", amount=1_200_000))
    await wait_until(lambda: len(partner_endpoint.accepted) == 4)

    to_bank = {body(r)["type"]: body(r)["data"] for r in partner_endpoint.accepted if r.path == "bank"}
    to_ngo = {body(r)["type"]: body(r)["data"] for r in partner_endpoint.accepted if r.path == "ngo"}
    assert [p["amount"] for p in to_bank["onestop.eligibility.determined"]["programs"]] == [100_000, None]
    assert to_bank[DECIDED]["amount"] == 1_200_000
    for data in to_ngo.values():
        assert "amount" not in all_keys(data), "outreach needs no amounts: the key is absent, not null"
    assert [p["outcome"] for p in to_ngo["onestop.eligibility.determined"]["programs"]] == [
        "eligible",
        "needs_information",
    ]

    # The purpose changes while a delivery waits: it goes out as the new purpose allows.
    partner = notify.auth("partner", partner_id=BANK)
    assert (await notify.client.post(f"/v1/subscriptions/{bank['id']}/pause", headers=partner)).status_code == 200
    waiting = await producer.publish(f.decided(resident, application, "housing_benefit", amount=300_000))

    async def queued() -> bool:
        return [d["event_id"] for d in await deliveries(notify, BANK, status="pending")] == [waiting.id]

    await wait_until(queued)
    await grant(notify, BANK, "case.decided", eligibility__determined="payment")  # case.decided: notification now
    assert (await notify.client.post(f"/v1/subscriptions/{bank['id']}/resume", headers=partner)).status_code == 200

    def to_bank_now() -> list[dict[str, Any]]:
        return [body(r) for r in partner_endpoint.accepted if r.path == "bank" and body(r)["id"] == waiting.id]

    await wait_until(lambda: len(to_bank_now()) == 1)
    assert "amount" not in to_bank_now()[0]["data"]


# ================================================================================================ withdrawal


async def test_a_withdrawal_drops_the_queued_webhook_deliveries_at_once_and_records_the_drop(
    notify: RunningService, producer: Producer, partner_endpoint: Endpoint
) -> None:
    await grant(notify, NGO, "case.routed", "case.decided")
    created = await subscribe(
        notify,
        NGO,
        {"transport": "webhook", "url": partner_endpoint.url, "event_types": ["case.routed", "case.decided"]},
    )
    partner = notify.auth("partner", partner_id=NGO)
    leaving, narrowing, staying = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for resident in (leaving, narrowing, staying):
        await consented(notify, producer, resident, 1, {f"partner:{NGO}": True})

    # Delivered before the withdrawal: it stays delivered (nothing is recalled).
    early = await producer.publish(f.routed(leaving, uuid.uuid4(), "child_allowance"))
    await wait_until(lambda: len(partner_endpoint.accepted) == 1)

    # The partner's endpoint is paused: what follows queues up.
    assert (await notify.client.post(f"/v1/subscriptions/{created['id']}/pause", headers=partner)).status_code == 200
    queued = {}
    for resident in (leaving, narrowing, staying):
        application = uuid.uuid4()
        queued[resident] = [
            await producer.publish(f.routed(resident, application, "parent_benefit")),
            await producer.publish(f.decided(resident, application, "parent_benefit")),
        ]

    async def all_pending() -> bool:
        return len(await deliveries(notify, NGO, status="pending")) == 6

    await wait_until(all_pending)

    # One resident withdraws; another keeps only case.routed for this partner.
    await consented(notify, producer, leaving, 2, {f"partner:{NGO}": False})
    await consented(notify, producer, narrowing, 2, {f"partner:{NGO}": False, f"partner:{NGO}:case.routed": True})
    withdrawn = await deliveries(notify, NGO, status="withdrawn")
    dropped = {queued[leaving][0].id, queued[leaving][1].id, queued[narrowing][1].id}
    assert {d["event_id"] for d in withdrawn} == dropped, "dropped in the transaction that took the consent"
    for delivery in withdrawn:
        assert delivery["withdrawn_at"] is not None
        assert delivery["last_error"] == WITHDRAWN_NOTE
        assert (delivery["transport"], delivery["attempts"]) == ("webhook", 0)
        assert not {str(leaving), str(narrowing)} & set(str(v) for v in delivery.values()), "no personal data"
    async with notify.runtime.db.session() as session:
        payloads = await session.scalars(select(WebhookDelivery.payload).where(WebhookDelivery.event_id.in_(dropped)))
        assert set(payloads) == {""}, "nothing about the resident is kept for the partner"

    # Resumed: only what the consents still cover goes out, in order.
    assert (await notify.client.post(f"/v1/subscriptions/{created['id']}/resume", headers=partner)).status_code == 200
    await wait_until(lambda: len(partner_endpoint.accepted) == 4)
    assert [body(r)["id"] for r in partner_endpoint.accepted] == [
        early.id,
        queued[narrowing][0].id,
        queued[staying][0].id,
        queued[staying][1].id,
    ]

    # Asked for again after the withdrawal, the early delivery is stopped before it goes out; a withdrawn one is
    # refused outright.
    [sent_early] = [d for d in await deliveries(notify, NGO) if d["event_id"] == early.id]
    again = await notify.client.post(f"/v1/deliveries/{sent_early['id']}/redeliver", headers=partner)
    assert again.status_code == 202, again.text

    async def stopped() -> bool:
        response = await notify.client.get(f"/v1/deliveries/{sent_early['id']}", headers=partner)
        return bool(response.json()["status"] == "withdrawn")

    await wait_until(stopped)
    refused = await notify.client.post(f"/v1/deliveries/{withdrawn[0]['id']}/redeliver", headers=partner)
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert len(partner_endpoint.requests) == 4, "nothing more reached the partner"


async def test_a_withdrawal_drops_the_nats_copies_still_waiting_in_the_outbox(
    notify: RunningService, producer: Producer, nats_server: NatsServer, bus_prefix: str
) -> None:
    await grant(notify, NGO, "case.routed", "case.decided")
    await subscribe(notify, NGO, {"transport": "nats", "event_types": ["case.routed", "case.decided"]})
    leaving, staying = uuid.uuid4(), uuid.uuid4()
    for resident in (leaving, staying):
        await consented(notify, producer, resident, 1, {f"partner:{NGO}": True})

    async with nats_partner(nats_server, f"{bus_prefix}.partner.{NGO}.>") as received:
        # The relay is held up (NATS slow to acknowledge, say): the partner copies wait in notify's outbox.
        await notify.runtime.relay.stop()
        try:
            application = uuid.uuid4()
            await producer.publish(f.routed(leaving, application, "child_allowance"))
            await producer.publish(f.decided(leaving, application, "child_allowance"))
            kept = await producer.publish(f.routed(staying, uuid.uuid4(), "child_allowance"))

            async def waiting() -> bool:
                return await queued_copies(notify) == 3

            await wait_until(waiting)
            await consented(notify, producer, leaving, 2, {f"partner:{NGO}": False})
            assert await queued_copies(notify) == 1, "the leaving resident's copies were dropped"
            recorded = await deliveries(notify, NGO, status="withdrawn")
            assert sorted((d["transport"], d["event_type"]) for d in recorded) == [
                ("nats", "case.decided"),
                ("nats", "case.routed"),
            ]
            assert all(d["withdrawn_at"] is not None and str(leaving) not in str(d) for d in recorded)
        finally:
            await notify.runtime.relay.start()
        marker = await producer.publish(f.decided(staying, uuid.uuid4(), "child_allowance"))
        await wait_until(lambda: any(b["id"] == marker.id for b in received))
        assert [b["id"] for b in received] == [kept.id, marker.id]
    assert await deliveries(notify, NGO, status="withdrawn") == recorded


# ================================================================================================ aggregates


async def test_the_aggregate_feed_needs_no_consent_and_carries_no_resident(
    database_url: str,
    nats_server: NatsServer,
    bus_prefix: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    notify_settings: dict[str, Any],
    producer: Producer,
    partner_endpoint: Endpoint,
) -> None:
    """Residents who consented to nothing are counted; the partner sees periods, districts, programs and counts. One
    second periods and groups of one shown, so the test need not wait a day nor produce ten residents (the withheld
    small groups are in test_aggregates.py)."""
    settings = {**notify_settings, "aggregate_period_seconds": 1, "aggregate_min_group": 1}
    async with start_notify(
        database_url=database_url, nats_url=nats_server.url, prefix=bus_prefix, keys_dir=keys_dir, issuer=issuer,
        settings=settings,
    ) as notify:  # fmt: skip
        await grant(notify, NGO, aggregate__determinations_counted="statistics")
        await grant(notify, BANK, case__decided="payment")  # granted other things, not the aggregate
        feed = ["aggregate.determinations_counted"]
        await subscribe(notify, NGO, {"transport": "webhook", "url": partner_endpoint.url, "event_types": feed})
        await subscribe(notify, NGO, {"transport": "nats", "event_types": feed})
        refused = await notify.client.post(
            "/v1/subscriptions", json={"transport": "nats", "event_types": feed},
            headers=notify.auth("partner", partner_id=BANK),
        )  # fmt: skip
        assert refused.status_code == 403, "subscribable only where granted"

        mapo = ResidentContext(district_code="11440")
        residents = [uuid.uuid4() for _ in range(3)]
        determinations = [
            f.determined(residents[0], uuid.uuid4(), 1, [
                f.program("child_allowance", "아동수당", "CA", Outcome.ELIGIBLE, amount=100_000),
                f.program("parent_benefit", "부모급여", "PB", Outcome.INELIGIBLE),
            ]),
            f.determined(residents[1], uuid.uuid4(), 1, [
                f.program("child_allowance", "아동수당", "CA", Outcome.ELIGIBLE),
            ]),
            f.determined(residents[2], uuid.uuid4(), 1, [
                f.program("child_allowance", "아동수당", "CA", Outcome.NEEDS_INFORMATION),
            ]).model_copy(update={"resident": mapo}),
        ]  # fmt: skip
        async with nats_partner(nats_server, f"{bus_prefix}.partner.{NGO}.>") as received:
            published = [await producer.publish(d) for d in determinations]
            expected = {
                ("11110", "child_allowance"): {"determinations": 2, "eligible": 2},
                ("11110", "parent_benefit"): {"determinations": 1, "ineligible": 1},
                ("11440", "child_allowance"): {"determinations": 1, "needs_information": 1},
            }

            def totals(bodies: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, int]]:
                out: dict[tuple[str, str], dict[str, int]] = {}
                for b in bodies:
                    for row in b["data"]["counts"]:
                        group = out.setdefault((row["district_code"], row["program_code"]), {})
                        for key in ("determinations", *(o.value for o in Outcome)):
                            assert row[key] is not None, "groups of one are shown here"
                            if row[key]:
                                group[key] = group.get(key, 0) + row[key]
                return out

            # The counts may fall in one period or two: the sums over the periods are what the residents did.
            await wait_until(lambda: totals([body(r) for r in partner_endpoint.accepted]) == expected)
            await wait_until(lambda: totals(received) == expected)
            over_nats = list(received)

        over_webhooks = [body(r) for r in partner_endpoint.accepted]
        assert [b["id"] for b in over_nats] == [b["id"] for b in over_webhooks], "the same events on both"
        starts = [b["data"]["period_start"] for b in over_webhooks]
        assert len(set(starts)) == len(starts), "each period published once"
        identifiers = {str(r) for r in residents} | {str(d.application_id) for d in determinations}
        identifiers |= {str(d.determination_id) for d in determinations} | {e.id for e in published}
        for request in partner_endpoint.accepted:
            assert body(request)["type"] == "onestop.aggregate.determinations_counted"
            assert not [k for k in all_keys(body(request)["data"]) if k.endswith("_id")]
            assert not [i for i in identifiers if i in request.body.decode()], "no resident, application or event"
            assert "amount" not in all_keys(body(request)["data"])
        # The bank, not granted the feed, got nothing; nothing of it was about anyone who could withdraw.
        assert await deliveries(notify, BANK) == []
        async with notify.runtime.db.session() as session:
            assert set(await session.scalars(select(WebhookDelivery.resident_id))) == {None}


async def test_a_batch_judges_each_resident_by_their_consent_reading_consents_once_and_counting_once(
    notify: RunningService, producer: Producer, partner_endpoint: Endpoint
) -> None:
    """The partners' consumer applies a batch in one transaction: whether its residents asked for erasure, and what
    they consented to, is read in a query each at its start, and its determinations are counted in one statement at
    its end. Each resident is still judged by their own consent, and one who asks for erasure in the middle of the
    batch has what was queued for them withdrawn and nothing after it sent or counted."""
    await grant(notify, NGO, "eligibility.determined")
    feed = ["eligibility.determined"]
    subscription = await subscribe(notify, NGO, {"transport": "webhook", "url": partner_endpoint.url,
                                                 "event_types": feed})  # fmt: skip
    partner = notify.auth("partner", partner_id=NGO)
    # Paused, it queues: what the erasure finds queued is the same however the events fall into transactions.
    paused = await notify.client.post(f"/v1/subscriptions/{subscription['id']}/pause", headers=partner)
    assert paused.status_code == 200, paused.text
    residents = [uuid.uuid4() for _ in range(6)]
    consenting, erased = residents[0], residents[1]
    for resident in (consenting, erased):
        await consented(notify, producer, resident, 1, {f"partner:{NGO}": True})
    consumer, residents_consumer = notify.runtime.consumers["partners"], notify.runtime.consumers["residents"]
    await consumer.stop()  # started again, it takes the first event alone and the rest as one batch
    await residents_consumer.stop()  # which would otherwise record the erasure first
    program = f.program("child_allowance", "아동수당", "CA", Outcome.ELIGIBLE)
    counted = [f.determined(r, uuid.uuid4(), 1, [program]) for r in residents]
    erasure = ResidentErasureRequested(
        erasure_id=uuid.uuid4(), resident_id=erased, requested_at=dt.datetime.now(dt.UTC)
    )
    late = f.determined(erased, uuid.uuid4(), 1, [program])
    published = [await producer.publish(d) for d in [*counted, erasure, late]]
    with consumer_statements(notify.runtime.db, consumer.durable) as work:
        await consumer.start()
        await wait_until(lambda: notify.settled("partners"), timeout=20)
    await residents_consumer.start()
    count, commits = work.count, work.commits

    reads = "\n".join(s[:100] for s in work.statements)
    assert count("SELECT partner_consents.") <= commits + 1, reads  # and the erased resident's, locked
    assert count("SELECT resident_erasures.") <= commits + 1, reads  # and the erasure's own record, locked
    assert count("INSERT INTO aggregate_periods ") <= commits, reads
    assert count("INSERT INTO aggregate_counts ") <= commits, reads

    resumed = await notify.client.post(f"/v1/subscriptions/{subscription['id']}/resume", headers=partner)
    assert resumed.status_code == 200, resumed.text
    await wait_until(lambda: len(partner_endpoint.accepted) == 1)
    assert [(body(r)["id"], body(r)["data"]["resident_id"]) for r in partner_endpoint.accepted] == [
        (published[0].id, str(consenting))
    ]

    async def deliveries_recorded() -> list[tuple[str, str]]:
        async with notify.runtime.db.session() as session:
            rows = (await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.seq))).all()
        return [(r.event_id, r.status) for r in rows]

    expected = [(published[0].id, "sent"), (published[1].id, "withdrawn")]
    await wait_until(lambda: _equal(deliveries_recorded(), expected))  # the worker records the send after the POST
    async with notify.runtime.db.session() as session:
        total = await session.scalar(select(func.sum(AggregateCount.count)))
    assert total == len(counted), "every determination before the erasure counted once, none after it"


async def _equal(value: Awaitable[object], expected: object) -> bool:
    return bool(await value == expected)
