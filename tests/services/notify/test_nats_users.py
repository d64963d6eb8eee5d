"""notify under its own restricted NATS user (as `make run` and production run it): it provisions its stream and
consumers, and a partner's NATS user receives on its own subject what notify republishes for it, and nothing else."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson

from onestop.natsauth import PasswordStore, partner_user_name
from shared.auth import TokenIssuer
from shared.bus import Bus
from shared.events import new_event
from shared.settings import ServiceSettings
from tests.services.notify import support as f
from tests.services.notify.support import start_notify
from tests.support.nats import NatsServer
from tests.support.nats_clients import Client, connect
from tests.support.waiting import wait_until


async def test_services_run_on_their_own_users_and_a_partner_receives_what_notify_republishes(
    secured_nats: NatsServer,
    bus_prefix: str,
    passwords: PasswordStore,
    clients: list[Client],
    database_url: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    notify_settings: dict[str, Any],
) -> None:
    settings = {**notify_settings, "nats_user": "notify", "nats_password": passwords.get("notify")}
    async with start_notify(
        database_url=database_url, nats_url=secured_nats.url, prefix=bus_prefix, keys_dir=keys_dir, issuer=issuer,
        settings=settings,
    ) as notify:  # fmt: skip
        # notify provisioned the stream and its consumers under its own restricted user (it is ready).
        admin, partner = notify.auth("admin"), notify.auth("partner", partner_id="bank")
        grants = {"grants": [{"event_type": "case.decided", "purpose": "payment"}]}
        assert (await notify.client.put("/v1/partners/bank/grants", json=grants, headers=admin)).status_code == 200
        created = await notify.client.post(
            "/v1/subscriptions", json={"transport": "nats", "event_types": ["case.decided"]}, headers=partner
        )
        assert created.status_code == 201
        bank = await connect(clients, secured_nats, partner_user_name("bank"), passwords)
        await bank.subscribe(created.json()["nats_subjects"][0])

        # routing's part, played by the intake user (same permissions): publish through JetStream.
        producer = Bus(
            ServiceSettings(
                nats_url=secured_nats.url, bus_prefix=bus_prefix, nats_user="intake",
                nats_password=passwords.get("intake"),
            ),
            name="producer",
        )  # fmt: skip
        await producer.connect(attempts=5)
        try:
            # The resident consented to the bank (intake's event), then the decision (routing's): in this order.
            resident = uuid.uuid4()
            await producer.publish_event(
                new_event(f.consent(resident, 1, {"partner:bank": True}), source="/onestop/intake")
            )
            event = new_event(f.decided(resident, uuid.uuid4(), "child_allowance"), source="/onestop/routing")
            await producer.publish_event(event)
        finally:
            await producer.close()
        subject = created.json()["nats_subjects"][0]
        await wait_until(lambda: len(bank.received.get(subject, [])) == 1)
        envelope = orjson.loads(bank.received[subject][0])
        assert envelope["id"] == event.id
        assert envelope["type"] == "onestop.case.decided"
        assert bank.violations() == []
