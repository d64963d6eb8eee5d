"""The app factory's behaviour, on a small service made of the real shared parts: problem details for every error,
the request body limit, the unit of work, the dead-letter admin API with replay, and consumers that give way to the
requests being served."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.audit import AuditLog
from shared.auth import Role, TokenIssuer
from shared.consumer import Subscription, on
from shared.deps import OutboxDep, PrincipalDep, SessionDep
from shared.events import ApplicationWithdrawn, CloudEvent
from shared.observability import LoopMonitor, Metrics
from shared.problems import Conflict, NotFound
from shared.runtime import Runtime, ServiceDefinition, no_context
from shared.service import create_service_app
from shared.settings import ServiceSettings
from tests.support.bus_harness import effects, metadata, tables, withdrawn
from tests.support.nats import NatsServer
from tests.support.waiting import wait_until


class Thing(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    size: int = Field(ge=0)
    born: dt.date


class Switch:
    """Whether the handler works; a test flips it to show a replay after the cause is fixed."""

    broken = True


class Held:
    """A request to ``/v1/things/held/now`` is answered once a test sets this (a request still being served)."""

    gate: asyncio.Event | None = None


def router() -> APIRouter:
    api = APIRouter(prefix="/v1/things")

    @api.post("", status_code=201)
    async def create(thing: Thing, session: SessionDep, outbox: OutboxDep) -> dict[str, str]:
        await session.execute(
            insert(effects).values(application_id=thing.name, event_id="api", applied_at=dt.datetime.now(dt.UTC))
        )
        if thing.name == "conflict":
            raise Conflict("A thing by that name is in the way.")  # after a write: it must be rolled back
        if thing.name == "crash":
            raise RuntimeError("secret internal detail")
        await outbox.emit(session, withdrawn())
        return {"name": thing.name}

    @api.get("/held/now")
    async def held() -> dict[str, str]:
        assert Held.gate is not None
        await Held.gate.wait()
        return {"held": "no longer"}

    @api.get("/{name}")
    async def read(name: str, session: SessionDep, principal: PrincipalDep) -> dict[str, int]:
        """A read that leaves a record of itself (as a read of a resident's data by staff does) or, wrongly, writes."""
        await audit.record(session, principal, action="read", record_type="thing", record_id=name, purpose="test")
        if name == "sneaky":
            await session.execute(
                insert(effects).values(application_id=name, event_id="api", applied_at=dt.datetime.now(dt.UTC))
            )
        if name == "missing":
            raise NotFound("No such thing.")
        return {"things": int(await session.scalar(select(func.count()).select_from(effects)) or 0)}

    return api


audit = AuditLog(tables)


async def apply(session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:
    if Switch.broken:
        raise RuntimeError("handler is broken")
    await session.execute(
        insert(effects).values(
            application_id=str(data.application_id), event_id=event.id, applied_at=dt.datetime.now(dt.UTC)
        )
    )


def definition() -> ServiceDefinition[None]:
    def subscriptions(context: None) -> list[Subscription]:
        return [Subscription(name="things", handlers=[on(ApplicationWithdrawn, apply)], retry_delays=(0.01,))]

    return ServiceDefinition(
        name="testsvc", title="Test", description="A test service", tables=tables, routers=[router()],
        context=no_context, subscriptions=subscriptions,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def serving(
    nats_server: NatsServer, bus_prefix: str, keys_dir: Path, database_url: str, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The test service on the suite's NATS and database with these settings, its tables made, ready; the client
    carries the app (``client.app``)."""
    app = create_service_app(
        definition(),
        ServiceSettings(
            database_url=database_url,
            nats_url=nats_server.url,
            bus_prefix=bus_prefix,
            jwt_public_key_file=keys_dir / "issuer.pub.pem",
            log_json=False,
            **settings,
        ),
    )
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        runtime: Runtime = app.state.runtime
        async with runtime.db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(manager.app, raise_app_exceptions=False), base_url="http://test"
        ) as c:
            c.app = app  # type: ignore[attr-defined]
            await wait_until(lambda: _ready(c))
            yield c


@pytest.fixture
async def client(
    nats_server: NatsServer, bus_prefix: str, keys_dir: Path, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    Switch.broken = True
    async with serving(
        nats_server, bus_prefix, keys_dir, database_url,
        max_body_bytes=2048, consumer_max_deliver=2, outbox_poll_interval_seconds=0.05,
    ) as c:  # fmt: skip
        yield c


async def _ready(c: httpx.AsyncClient) -> bool:
    return (await c.get("/readyz")).status_code == 200


async def _count(c: httpx.AsyncClient) -> int:
    runtime: Runtime = c.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(effects)) or 0)


async def _outbox(c: httpx.AsyncClient) -> int:
    runtime: Runtime = c.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(tables.outbox)) or 0)


def _auth(issuer: TokenIssuer, role: Role = Role.ADMIN, **claims: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.mint(role, **claims)}"}  # type: ignore[arg-type]


async def test_invalid_input_is_a_422_problem_naming_each_field_and_writes_nothing(
    client: httpx.AsyncClient, issuer: TokenIssuer
) -> None:
    response = await client.post(
        "/v1/things", json={"name": "", "size": "big", "born": "2024-02-30"}, headers=_auth(issuer)
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:onestop:problem:validation"
    assert {e["field"] for e in problem["errors"]} == {"name", "size", "born"}
    assert "born" in problem["detail"]
    assert await _count(client) == 0
    assert await _outbox(client) == 0

    malformed = await client.post(
        "/v1/things", content=b"{not json", headers={**_auth(issuer), "content-type": "application/json"}
    )
    assert malformed.status_code == 422
    assert malformed.headers["content-type"] == "application/problem+json"


async def test_a_domain_error_after_a_write_rolls_the_write_back(
    client: httpx.AsyncClient, issuer: TokenIssuer
) -> None:
    response = await client.post(
        "/v1/things", json={"name": "conflict", "size": 1, "born": "2020-01-01"}, headers=_auth(issuer)
    )
    assert response.status_code == 409
    assert response.json()["detail"] == "A thing by that name is in the way."
    assert await _count(client) == 0


async def test_an_unexpected_error_is_a_500_problem_that_leaks_nothing(
    client: httpx.AsyncClient, issuer: TokenIssuer
) -> None:
    response = await client.post(
        "/v1/things", json={"name": "crash", "size": 1, "born": "2020-01-01"}, headers=_auth(issuer)
    )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret" not in response.text
    assert await _count(client) == 0


async def test_success_commits_the_state_and_its_event_together(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    response = await client.post(
        "/v1/things", json={"name": "ok", "size": 1, "born": "2020-01-01"}, headers=_auth(issuer)
    )
    assert response.status_code == 201
    assert await _count(client) == 1
    assert await _outbox(client) == 1


async def test_bodies_over_the_limit_are_refused_with_413(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    big = {"name": "x", "size": 1, "born": "2020-01-01", "padding": "y" * 5000}
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traced = {**_auth(issuer), "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    response = await client.post("/v1/things", json=big, headers=traced)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    # Refused within the request's span and counted, as any other answer is.
    assert response.headers["traceparent"].split("-")[1] == trace_id
    metrics: Metrics = client.app.state.runtime.metrics  # type: ignore[attr-defined]
    counted = {"method": "POST", "route": "unmatched", "status": "413"}
    assert metrics.registry.get_sample_value("onestop_http_requests_total", counted) == 1

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(10):
            yield b" " * 500

    streamed = await client.post(
        "/v1/things", content=chunks(), headers={**_auth(issuer), "content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert metrics.registry.get_sample_value("onestop_http_requests_total", counted) == 2
    assert await _count(client) == 0


async def test_unknown_paths_and_methods_are_problems_too(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    missing = await client.get("/v1/nowhere", headers=_auth(issuer))
    assert (missing.status_code, missing.headers["content-type"]) == (404, "application/problem+json")
    wrong = await client.delete("/healthz")
    assert (wrong.status_code, wrong.headers["content-type"]) == (405, "application/problem+json")


async def test_dead_letters_are_listed_for_admins_and_replayed_once_the_cause_is_fixed(
    client: httpx.AsyncClient, issuer: TokenIssuer
) -> None:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    event = withdrawn()
    async with runtime.db.session() as session:
        await runtime.outbox.emit(session, event)

    async def listed() -> bool:
        return len((await client.get("/v1/admin/dead-letters", headers=_auth(issuer))).json()) == 1

    await wait_until(listed)
    [letter] = (await client.get("/v1/admin/dead-letters", headers=_auth(issuer))).json()
    assert letter["consumer"] == "testsvc-things"
    assert letter["deliveries"] == 2
    assert "handler is broken" in letter["error"]
    supervisor = _auth(issuer, Role.SUPERVISOR, offices=["JN-WEL"])
    assert (await client.get("/v1/admin/dead-letters", headers=supervisor)).status_code == 403

    Switch.broken = False
    replayed = await client.post(f"/v1/admin/dead-letters/{letter['id']}/replay", headers=_auth(issuer))
    assert replayed.json() == {"id": letter["id"], "handled": True}
    assert await _count(client) == 1
    # Replaying again finds the event in the inbox: no second effect.
    again = await client.post(f"/v1/admin/dead-letters/{letter['id']}/replay", headers=_auth(issuer))
    assert again.json() == {"id": letter["id"], "handled": False}
    assert await _count(client) == 1
    remaining = (await client.get("/v1/admin/dead-letters", headers=_auth(issuer))).json()
    assert remaining == []
    missing = await client.post("/v1/admin/dead-letters/999999/replay", headers=_auth(issuer))
    assert missing.status_code == 404


async def test_the_caller_s_trace_continues_into_the_event_it_caused(
    client: httpx.AsyncClient, issuer: TokenIssuer
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await client.post(
        "/v1/things",
        json={"name": "traced", "size": 1, "born": "2020-01-01"},
        headers={**_auth(issuer), "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    assert response.status_code == 201
    assert response.headers["traceparent"].split("-")[1] == trace_id
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.db.session() as session:
        payload = await session.scalar(select(tables.outbox.c.payload))
    assert payload is not None
    event = CloudEvent.from_json(payload)
    assert event.traceparent is not None
    assert event.traceparent.split("-")[1] == trace_id


async def test_request_logs_name_the_route_not_the_path_with_its_ids(
    client: httpx.AsyncClient, issuer: TokenIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="onestop.http")
    await client.post("/v1/admin/dead-letters/424242/replay?resident=kim-minji", headers=_auth(issuer))
    [record] = [r for r in caplog.records if r.name == "onestop.http"]
    assert record.route == "/v1/admin/dead-letters/{dead_letter_id}/replay"  # type: ignore[attr-defined]
    assert record.status == 404  # type: ignore[attr-defined]
    ours = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records if not r.name.startswith("httpx"))
    assert "424242" not in ours
    assert "kim-minji" not in ours


async def _audited(c: httpx.AsyncClient) -> list[str]:
    runtime: Runtime = c.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.db.read_session() as session:
        return list(
            (await session.execute(select(tables.audit_log.c.record_id).order_by(tables.audit_log.c.id))).scalars()
        )


async def test_a_get_reads_in_a_read_only_unit_of_work_and_its_record_is_written_before_the_answer(
    client: httpx.AsyncClient, issuer: TokenIssuer
) -> None:
    staff = _auth(issuer, Role.CASEWORKER, offices=["JN-WEL"])
    response = await client.get("/v1/things/one", headers=staff)
    assert (response.status_code, response.json()) == (200, {"things": 0})
    assert await _audited(client) == ["one"], "the read's audit entry is there once it is answered"

    # A GET that fails leaves no record; one that tries to write is refused and writes nothing.
    assert (await client.get("/v1/things/missing", headers=staff)).status_code == 404
    assert (await client.get("/v1/things/sneaky", headers=staff)).status_code == 500
    assert await _audited(client) == ["one"]
    assert await _count(client) == 0


async def test_the_longest_stall_of_the_event_loop_is_a_metric(client: httpx.AsyncClient) -> None:
    # The service's own work holding the loop: a blocking call here (the test runs in the service's loop).
    time.sleep(0.3)

    async def gauge(name: str) -> float:
        text = (await client.get("/metrics")).text
        return float(next(x for x in text.splitlines() if x.startswith(f"{name} ")).split()[1])

    async def reported() -> bool:
        return await gauge("onestop_event_loop_stall_max_seconds") >= 0.25

    await wait_until(reported)
    assert await gauge("onestop_event_loop_lag_max_seconds") >= 0.25
    assert 'onestop_event_loop_lag_seconds_bucket{le="0.5"}' in (await client.get("/metrics")).text


def test_time_the_os_ran_other_processes_is_lateness_not_a_stall() -> None:
    metrics = Metrics("testsvc")
    monitor = LoopMonitor(metrics)
    monitor.observe(0.4, preempted=0.38)  # late by 400 ms, 380 of them waiting for a CPU
    monitor.observe(0.06)
    assert metrics.registry.get_sample_value("onestop_event_loop_lag_max_seconds") == 0.4
    assert metrics.registry.get_sample_value("onestop_event_loop_stall_max_seconds") == 0.06


def handlers_built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths whose handlers FastAPI builds from now on, in order (its builder counted)."""
    import fastapi.routing

    built: list[str] = []
    build = fastapi.routing._build_dependant_with_parameterless_dependencies

    def counted(**kwargs: Any) -> Any:
        built.append(kwargs["path"])
        return build(**kwargs)

    monkeypatch.setattr(fastapi.routing, "_build_dependant_with_parameterless_dependencies", counted)
    return built


async def test_the_first_request_finds_its_route_handlers_built(
    client: httpx.AsyncClient, issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI builds an included router's handlers on the first request reaching it, unless the app factory built
    them (shared.service.build_route_handlers): the first requests build nothing."""
    built = handlers_built(monkeypatch)
    created = await client.post(
        "/v1/things", headers=_auth(issuer), json={"name": "first", "size": 1, "born": "2020-01-01"}
    )
    assert created.status_code == 201, created.text
    assert (await client.get("/v1/things/first", headers=_auth(issuer))).status_code == 200
    assert (await client.get("/v1/admin/dead-letters", headers=_auth(issuer))).status_code == 200
    assert built == [], f"handlers built on a request: {built}"


def test_handlers_are_built_with_the_app_unless_the_setting_leaves_them_to_the_first_request(
    keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service's routers (those included with the authentication dependency, which FastAPI builds lazily) are built
    with the app; with ``build_route_handlers`` off, as the suite's services run, by the first request."""
    from services.routing.main import create_app
    from tests.support.services import service_settings

    built = handlers_built(monkeypatch)
    for setting in (True, False):
        built.clear()
        settings = service_settings(
            "routing",
            database_url="sqlite+aiosqlite:///:memory:",
            nats_url="nats://127.0.0.1:1",
            prefix="t",
            keys_dir=keys_dir,
            build_route_handlers=setting,
        )
        create_app(settings)  # type: ignore[arg-type]
        assert ("/v1/queues/{office}" in built) is setting, (setting, built)


async def _applied(c: httpx.AsyncClient) -> int:
    """Effects the consumer wrote (the API's own are marked ``api``)."""
    runtime: Runtime = c.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.db.session() as session:
        applied = select(func.count()).select_from(effects).where(effects.c.event_id != "api")
        return int(await session.scalar(applied) or 0)


async def _submit(c: httpx.AsyncClient, issuer: TokenIssuer, name: str) -> None:
    """A thing created: its event goes out through the outbox to the service's own consumer."""
    response = await c.post("/v1/things", json={"name": name, "size": 1, "born": "2020-01-01"}, headers=_auth(issuer))
    assert response.status_code == 201, response.text


async def test_consumers_give_way_to_a_request_being_served_until_it_is_answered(
    client: httpx.AsyncClient, issuer: TokenIssuer
) -> None:
    Switch.broken = False
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    runtime.foreground.patience = 30  # longer than the test: only the request's end lets the batch go on
    await _submit(client, issuer, "before")
    await wait_until(lambda: _applied_at_least(client, 1))

    Held.gate = asyncio.Event()
    held = asyncio.create_task(client.get("/v1/things/held/now", headers=_auth(issuer)))
    try:
        await wait_until(lambda: runtime.foreground.requests == 1)
        await _submit(client, issuer, "during")  # a request too: counted while served, then done
        consumer = runtime.consumers["things"]
        await wait_until(lambda: _taken(runtime, consumer.durable))
        await asyncio.sleep(0.5)
        assert await _applied(client) == 1, "the batch waits while a request is being served"
    finally:
        Held.gate.set()
    assert (await held).status_code == 200
    await wait_until(lambda: _applied_at_least(client, 2), timeout=5)  # at once, not after its 30 s of patience


async def test_under_requests_that_never_let_up_consumers_still_go_on_after_their_patience(
    client: httpx.AsyncClient, issuer: TokenIssuer
) -> None:
    Switch.broken = False
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    runtime.foreground.patience = 0.2
    Held.gate = asyncio.Event()
    held = asyncio.create_task(client.get("/v1/things/held/now", headers=_auth(issuer)))
    try:
        await wait_until(lambda: runtime.foreground.requests == 1)
        for name in ("one", "two", "three"):
            await _submit(client, issuer, name)
        await wait_until(lambda: _applied_at_least(client, 3), timeout=10)
        assert not held.done(), "applied while the request was still being served"
    finally:
        Held.gate.set()
    assert (await held).status_code == 200


async def _applied_at_least(c: httpx.AsyncClient, n: int) -> bool:
    return await _applied(c) >= n


async def _taken(runtime: Runtime, durable: str) -> bool:
    """The consumer has taken a message it has not acknowledged: its batch is waiting to be applied."""
    info = await runtime.bus.js.consumer_info(runtime.bus.stream, durable)
    return bool(info.num_ack_pending >= 1)


async def test_an_api_process_runs_no_consumer_and_sends_a_replay_to_its_worker(
    nats_server: NatsServer, bus_prefix: str, keys_dir: Path, database_url: str, issuer: TokenIssuer
) -> None:
    """Split as `onestop run --workers` splits a service: the api process consumes nothing, and a dead letter (made
    by its worker) is not replayed there as if it were unknown: the answer says where it can be."""
    async with serving(nats_server, bus_prefix, keys_dir, database_url, process_role="api") as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        assert runtime.consumers == {}
        async with runtime.db.session() as session:
            await session.execute(
                insert(runtime.tables.dead_letters).values(
                    consumer="testsvc-things", event_id="e-1", event_type="application.withdrawn",
                    subject=f"{bus_prefix}.application.withdrawn", payload="{}", error="broken", deliveries=2,
                    failed_at=dt.datetime.now(dt.UTC),
                )
            )  # fmt: skip
        [letter] = (await client.get("/v1/admin/dead-letters", headers=_auth(issuer))).json()
        replay = await client.post(f"/v1/admin/dead-letters/{letter['id']}/replay", headers=_auth(issuer))
        assert (replay.status_code, replay.headers["content-type"]) == (421, "application/problem+json")
        assert "worker" in replay.json()["detail"]
        missing = await client.post("/v1/admin/dead-letters/999999/replay", headers=_auth(issuer))
        assert missing.status_code == 404, "one that does not exist is still not found"
