"""NATS clients that keep what the server tells them: the permission violations it reports (asynchronously) and what
each subscription received — for tests of NATS users and subject permissions against a real nats-server."""

from __future__ import annotations

from typing import Any

import nats

from onestop.natsauth import PasswordStore
from tests.support.nats import NatsServer


class Client:
    """A NATS connection that keeps the errors the server sends (permission violations arrive asynchronously)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.received: dict[str, list[bytes]] = {}
        self.nc: Any = None

    async def connect(self, url: str, user: str | None, password: str | None) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(
            url, user=user, password=password, error_cb=on_error, allow_reconnect=False, connect_timeout=2
        )
        return self

    async def subscribe(self, subject: str) -> None:
        async def collect(msg: Any) -> None:
            self.received.setdefault(subject, []).append(msg.data)

        await self.nc.subscribe(subject, cb=collect)
        await self.nc.flush()

    def violations(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e.lower()]


async def connect(
    clients: list[Client], server: NatsServer, user: str | None, passwords: PasswordStore | None
) -> Client:
    client = Client()
    clients.append(client)
    return await client.connect(server.url, user, passwords.get(user) if user and passwords else None)
