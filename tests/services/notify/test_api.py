"""The notify API as a whole: who may do what (object-level authorization). Schemathesis runs over it in
test_schemathesis.py."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from services.notify.context import NotifyContext
from services.notify.models import Representation
from shared.clock import Clock
from tests.services.notify import support as f
from tests.services.notify.support import SHARED_STREAM, Producer, consented, grant
from tests.support.endpoints import Endpoint
from tests.support.events import event_log
from tests.support.intake_server import IntakeServer
from tests.support.nats import NatsServer
from tests.support.services import RunningService
from tests.support.waiting import wait_until

PARTNER_A, PARTNER_B = "partner-a", "partner-b"
ROLES = (
    "owner",
    "other_resident",
    "caseworker",
    "supervisor",
    "admin",
    "partner_a",
    "partner_b",
    "service",
    "anonymous",
)


async def test_every_endpoint_authorizes_the_caller_and_hides_what_they_may_not_see(
    notify: RunningService, producer: Producer, intake: IntakeServer, partner_endpoint: Endpoint
) -> None:
    owner = await intake.register(channels=("inbox",))
    tokens: dict[str, dict[str, str]] = {
        "owner": notify.auth("resident", resident_id=owner),
        "other_resident": notify.auth("resident", resident_id=uuid.uuid4()),
        "caseworker": notify.auth("caseworker", offices=["JN-WEL"]),
        "supervisor": notify.auth("supervisor", offices=["JN-WEL"]),
        "admin": notify.auth("admin"),
        "partner_a": notify.auth("partner", partner_id=PARTNER_A),
        "partner_b": notify.auth("partner", partner_id=PARTNER_B),
        "service": notify.auth("service", service="intake"),
        "anonymous": {},
    }
    # What there is to see: a message in the owner's inbox, partner A's webhook subscription, a delivery of it, and
    # one the owner's withdrawn consent stopped.
    admin = tokens["admin"]
    await grant(notify, PARTNER_A, case__decided="payment")
    await grant(notify, PARTNER_B, "case.routed")
    await consented(notify, producer, owner, 1, {f"partner:{PARTNER_A}": True})
    created = await notify.client.post(
        "/v1/subscriptions",
        json={"transport": "webhook", "url": partner_endpoint.url, "event_types": ["case.decided"]},
        headers=tokens["partner_a"],
    )
    assert created.status_code == 201
    subscription = created.json()["id"]
    application = uuid.uuid4()
    await producer.publish(f.submitted(owner, application))
    await producer.publish(f.decided(owner, application, "child_allowance"))
    await producer.publish(f.decided(owner, application, "parent_benefit"))
    await wait_until(lambda: len(partner_endpoint.accepted) == 2)

    async def inbox_filled() -> bool:
        response = await notify.client.get("/v1/inbox", headers=tokens["owner"])
        return len(response.json()["items"]) == 2

    await wait_until(inbox_filled)
    message = (await notify.client.get("/v1/inbox", headers=tokens["owner"])).json()["items"][0]["id"]
    delivery, stopped = [
        d["id"] for d in (await notify.client.get("/v1/deliveries", headers=tokens["partner_a"])).json()
    ]
    # The owner withdraws their consent; asked for again, the sent delivery is stopped before it goes out.
    await consented(notify, producer, owner, 2, {f"partner:{PARTNER_A}": False})
    assert (await notify.client.post(f"/v1/deliveries/{stopped}/redeliver", headers=admin)).status_code == 202

    async def withdrawn() -> bool:
        response = await notify.client.get(f"/v1/deliveries/{stopped}", headers=admin)
        return bool(response.json()["status"] == "withdrawn")

    await wait_until(withdrawn)
    inbox_delivery = (
        await notify.client.get("/v1/notification-deliveries", params={"channel": "inbox"}, headers=admin)
    ).json()[0]["id"]

    residents = {"owner": 200, "other_resident": 200}
    admin_only = {"admin": 200}
    # (method, path, body, expected status per role: roles not listed get 403, "anonymous" always 401)
    matrix: list[tuple[str, str, Any, dict[str, int]]] = [
        ("GET", "/v1/inbox", None, residents),
        ("GET", f"/v1/inbox/{message}", None, {"owner": 200, "other_resident": 404}),
        ("POST", f"/v1/inbox/{message}/read", None, {"owner": 200, "other_resident": 404}),
        ("GET", "/v1/preferences", None, residents),
        ("PUT", "/v1/preferences", {"language": "en"}, residents),
        ("GET", "/v1/notification-deliveries", None, admin_only),
        ("POST", f"/v1/notification-deliveries/{inbox_delivery}/retry", None, {"admin": 409}),
        ("GET", "/v1/partners", None, admin_only),
        ("GET", f"/v1/partners/{PARTNER_A}", None, {"admin": 200, "partner_a": 200, "partner_b": 404}),
        ("PUT", f"/v1/partners/{PARTNER_A}/grants", {"grants": [{"event_type": "case.decided", "purpose": "payment"}]},
         admin_only),
        ("POST", "/v1/subscriptions", {"transport": "nats", "event_types": ["case.decided"]},
         {"partner_a": 201, "partner_b": 403}),
        ("GET", "/v1/subscriptions", None, {"admin": 200, "partner_a": 200, "partner_b": 200}),
        ("GET", f"/v1/subscriptions/{subscription}", None, {"admin": 200, "partner_a": 200, "partner_b": 404}),
        ("POST", f"/v1/subscriptions/{subscription}/pause", None, {"admin": 200, "partner_a": 200, "partner_b": 404}),
        ("POST", f"/v1/subscriptions/{subscription}/rotate-secret", None, {"partner_a": 200, "partner_b": 404}),
        ("GET", "/v1/deliveries", None, {"admin": 200, "partner_a": 200, "partner_b": 200}),
        ("GET", f"/v1/deliveries/{delivery}", None, {"admin": 200, "partner_a": 200, "partner_b": 404}),
        ("POST", f"/v1/deliveries/{delivery}/redeliver", None, {"admin": 202, "partner_a": 202, "partner_b": 404}),
        ("GET", "/v1/deliveries?status=withdrawn", None, {"admin": 200, "partner_a": 200, "partner_b": 200}),
        ("GET", f"/v1/deliveries/{stopped}", None, {"admin": 200, "partner_a": 200, "partner_b": 404}),
        ("POST", f"/v1/deliveries/{stopped}/redeliver", None, {"admin": 409, "partner_a": 409, "partner_b": 404}),
        ("GET", "/v1/admin/dead-letters", None, admin_only),
        # A resident's whole part of their export: theirs and intake's (gathering it); nobody else finds them.
        ("GET", f"/v1/residents/{owner}/data", None,
         {"owner": 200, "service": 200, "other_resident": 404, "caseworker": 404, "supervisor": 404, "admin": 404,
          "partner_a": 404, "partner_b": 404}),
        ("DELETE", f"/v1/subscriptions/{subscription}", None, {"partner_b": 404, "partner_a": 204, "admin": 404}),
    ]  # fmt: skip
    failures = []
    for method, path, body, allowed in matrix:
        # The roles allowed go last, so that a refused call always meets the object as it was.
        order = sorted(ROLES, key=lambda r: (r in allowed, list(allowed).index(r) if r in allowed else 0))
        for role in order:
            expected = 401 if role == "anonymous" else allowed.get(role, 403)
            response = await notify.client.request(method, path, json=body, headers=tokens[role])
            if response.status_code != expected:
                failures.append(f"{method} {path} as {role}: {response.status_code}, expected {expected}")
            elif expected >= 400:
                assert response.headers["content-type"] == "application/problem+json"
    assert failures == []

    # Lists are scoped: partner B sees none of partner A's subscriptions or deliveries.
    assert (await notify.client.get("/v1/deliveries", headers=tokens["partner_b"])).json() == []
    assert (await notify.client.get("/v1/deliveries?status=withdrawn", headers=tokens["partner_b"])).json() == []
    # Partner A sees the withdrawal with its time, and nothing about the resident. (The other delivery, asked for
    # again above, waited behind the paused subscription and was cancelled with it.)
    [shown] = (await notify.client.get("/v1/deliveries?status=withdrawn", headers=tokens["partner_a"])).json()
    assert (shown["id"], shown["transport"]) == (stopped, "webhook")
    assert shown["withdrawn_at"] is not None
    assert str(owner) not in str(shown)
    assert (await notify.client.get("/v1/subscriptions", headers=tokens["partner_b"])).json() == []
    assert (await notify.client.get("/v1/inbox", headers=tokens["other_resident"])).json()["items"] == []


# intake on the notify test's stream: the representatives a resident names and revokes at intake reach notify as
# intake's own representation.changed events.
@pytest.mark.parametrize("intake_shares_stream", [True], ids=[SHARED_STREAM])
async def test_a_representative_reads_the_residents_inbox_only_in_scope_unexpired_and_unrevoked(
    notify: RunningService, producer: Producer, intake: IntakeServer, nats_server: NatsServer, bus_prefix: str
) -> None:
    owner = await intake.register(channels=("inbox",))
    today = Clock().today()  # intake's today, in the city
    reps = {who: uuid.uuid4() for who in ("reader", "answers only", "expired", "revoked")}
    named = {}
    async with event_log(nats_server.url, bus_prefix) as log:
        for who, scopes, expires in [
            ("reader", ["read_messages", "answer"], today + dt.timedelta(days=30)),
            ("answers only", ["answer"], today + dt.timedelta(days=30)),
            ("expired", ["read_messages"], today),
            ("revoked", ["read_messages"], today + dt.timedelta(days=30)),
        ]:
            body = {"representative_id": str(reps[who]), "representative_name": who, "relation": "family",
                    "scopes": scopes, "expires_on": expires.isoformat()}  # fmt: skip
            named[who] = await intake.call("POST", f"/v1/residents/{owner}/representations", resident_id=owner,
                                           body=body)  # fmt: skip
        await intake.call("POST", f"/v1/residents/{owner}/representations/{named['revoked']['id']}/revoke",
                          resident_id=owner, body=None)  # fmt: skip
        changes = await log.wait_for("representation.changed", count=5)

    async def projected() -> bool:
        return (
            await notify.count(Representation) == 4
            and await notify.count(Representation, Representation.revoked_at.is_not(None)) == 1
        )

    await wait_until(projected)
    # The revocation's older "named" event arrives again, late: the revocation stands.
    await producer.republish(next(e for e in changes if e.data["representation_id"] == named["revoked"]["id"]))

    application = uuid.uuid4()
    await producer.publish(f.submitted(owner, application))

    async def delivered() -> bool:
        response = await notify.client.get("/v1/inbox", headers=notify.auth("resident", resident_id=owner))
        return len(response.json()["items"]) == 1

    await wait_until(delivered)
    await wait_until(lambda: notify.settled("residents"))
    message = (await notify.client.get("/v1/inbox", headers=notify.auth("resident", resident_id=owner))).json()
    message_id = message["items"][0]["id"]
    notify.context(NotifyContext).clock.fixed_today = today + dt.timedelta(days=1)  # "expired" lasted through today

    callers = {
        "owner": notify.auth("resident", resident_id=owner),
        **{f"representative ({who})": notify.auth("resident", resident_id=rep, name=who) for who, rep in reps.items()},
        "another resident": notify.auth("resident", resident_id=uuid.uuid4()),
        "caseworker": notify.auth("caseworker", offices=["JN-WEL"]),
        "admin": notify.auth("admin"),
        "anonymous": {},
    }
    may = {"owner", "representative (reader)"}
    of_owner = {"resident_id": str(owner)}
    failures = []
    for method, path in [("GET", "/v1/inbox"), ("GET", f"/v1/inbox/{message_id}"),
                         ("POST", f"/v1/inbox/{message_id}/read")]:  # fmt: skip
        for who, headers in callers.items():
            expected = 200 if who in may else 401 if who == "anonymous" else 403 if who in ("caseworker", "admin") \
                else 404  # fmt: skip
            response = await notify.client.request(method, path, params=of_owner, headers=headers)
            if response.status_code != expected:
                failures.append(f"{method} {path} as {who}: {response.status_code}, expected {expected}")
            elif expected == 200 and path == "/v1/inbox":
                assert [m["id"] for m in response.json()["items"]] == [message_id], who
    assert failures == []
    own = await notify.client.get("/v1/inbox", headers=callers["representative (reader)"])
    assert own.json()["items"] == [], "without resident_id a representative reads their own inbox"

    # The owner sees who read their messages for them, under which authority; the refused left no trace.
    log_page = (await notify.client.get("/v1/access-log", headers=callers["owner"])).json()
    entries = log_page["items"]
    assert [(e["action"], e["record_type"]) for e in entries] == [
        ("mark read", "message"), ("read", "message"), ("list", "inbox")
    ]  # fmt: skip
    for entry in entries:
        assert entry["actor"] == f"resident:{reps['reader']}"
        assert entry["actor_name"] == "reader"
        assert entry["on_behalf_of"] == str(owner)
        assert entry["purpose"] == "representation"
        assert entry["authority"] == {"kind": "representative", "id": named["reader"]["id"]}
    reader_log = await notify.client.get("/v1/access-log", headers=callers["representative (reader)"])
    assert reader_log.json()["items"] == [], "the access log is the resident's own"
    assert (await notify.client.get("/v1/access-log", headers=callers["admin"])).status_code == 403
