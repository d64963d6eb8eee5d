"""The notify API as a whole: who may do what (object-level authorization). Schemathesis runs over it in
test_schemathesis.py."""

from __future__ import annotations

import uuid
from typing import Any

from tests.services.notify import support as f
from tests.services.notify.support import Producer, consented, grant
from tests.support.endpoints import Endpoint
from tests.support.intake_server import IntakeServer
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
