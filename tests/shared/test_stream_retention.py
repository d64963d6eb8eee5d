"""The stream lets events go after ``stream_max_age_hours`` (copies of a resident's events must not outlive an erasure
by long): set when the stream is created, and applied to a stream that already exists. Against a real nats-server."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from nats.js.api import StorageType, StreamConfig
from pydantic import ValidationError

from shared.bus import Bus
from shared.events import TYPE_PREFIX, CloudEvent
from shared.settings import ServiceSettings
from tests.support.nats import NatsServer
from tests.support.waiting import wait_until


def _settings(nats_server: NatsServer, prefix: str, **values: Any) -> ServiceSettings:
    return ServiceSettings(nats_url=nats_server.url, bus_prefix=prefix, database_url="sqlite+aiosqlite://", **values)


async def test_a_new_stream_keeps_events_for_the_configured_age(nats_server: NatsServer, bus_prefix: str) -> None:
    bus = Bus(_settings(nats_server, bus_prefix), name="retention")
    await bus.connect()
    try:
        await bus.ensure_stream()
        info = await bus.js.stream_info(bus.stream)
        assert info.config.max_age == 72 * 3600, "the documented default: three days"
    finally:
        await bus.close()


async def test_an_existing_stream_without_an_age_gets_one_and_lets_old_events_go(
    nats_server: NatsServer, bus_prefix: str
) -> None:
    # A stream as an earlier version made it: no max age, events kept for ever.
    first = Bus(_settings(nats_server, bus_prefix), name="retention")
    await first.connect()
    try:
        await first.js.add_stream(StreamConfig(name=first.stream, subjects=[f"{bus_prefix}.>"],
                                               storage=StorageType.FILE))  # fmt: skip
        assert not (await first.js.stream_info(first.stream)).config.max_age
    finally:
        await first.close()

    # Two seconds (the retentions and the duplicate window scaled down with it: JetStream wants the window within
    # the age, the settings want the age between the outbox's retention and the inbox's).
    hours = 2 / 3600
    bus = Bus(_settings(nats_server, bus_prefix, stream_max_age_hours=hours, outbox_retention_hours=hours / 2,
                        inbox_retention_hours=hours, stream_duplicate_window_seconds=1), name="retention")  # fmt: skip
    await bus.connect()
    try:
        await bus.ensure_stream()
        info = await bus.js.stream_info(bus.stream)
        assert info.config.max_age == pytest.approx(2.0)
        event = CloudEvent(id=str(uuid.uuid4()), source="/test", type=TYPE_PREFIX + "resident.updated",
                           time=dt.datetime.now(dt.UTC), data={"resident_id": str(uuid.uuid4())})  # fmt: skip
        await bus.publish_event(event)
        assert (await bus.js.stream_info(bus.stream)).state.messages == 1

        async def gone() -> bool:
            return (await bus.js.stream_info(bus.stream)).state.messages == 0

        await wait_until(gone, timeout=30)  # JetStream expires by age on its own
    finally:
        await bus.close()


def test_the_age_must_lie_between_the_outbox_and_the_inbox_retention(nats_server: NatsServer) -> None:
    with pytest.raises(ValidationError, match="longer than outbox_retention_hours"):
        _settings(nats_server, "x", stream_max_age_hours=12)  # the outbox keeps sent events 24 h
    with pytest.raises(ValidationError, match="must not be longer than inbox_retention_hours"):
        _settings(nats_server, "x", stream_max_age_hours=24 * 31)  # the inbox remembers ids 30 days
