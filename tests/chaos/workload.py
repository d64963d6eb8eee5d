"""What the fault suite does to the platform: clients filing applications (retrying with the same Idempotency-Key
when a request fails), faults at random moments, and a partner's webhook endpoint that goes away for a long stretch."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import nats

from onestop.runner import Platform
from shared.bus import stream_name
from tests.e2e.support import Api, Resident
from tests.support.checker import Receipt

JSON = dict[str, Any]


# ---------------------------------------------------------------------------------------------- the partner


class PartnerEndpoint:
    """A partner's webhook endpoint (a real HTTP server) that can be taken down (its port closed: connections are
    refused) and brought back on the same port."""

    def __init__(self) -> None:
        self.receipts: list[Receipt] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.down_seconds = 0.0
        self._down_since: float | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/onestop-events"

    def up(self) -> None:
        receipts, lock = self.receipts, self.lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    receipts.append(Receipt(self.headers["webhook-id"], json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        if self._down_since is not None:
            self.down_seconds += time.monotonic() - self._down_since
            self._down_since = None

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self._down_since = time.monotonic()

    def close(self) -> None:
        self.down()


# ---------------------------------------------------------------------------------------------- the clients


@dataclass
class Filing:
    resident: Resident
    key: str
    # Sent once more after it succeeded, as a client that lost the answer would.
    replay: bool = False
    application_id: str | None = None
    attempts: int = 0


class Clients:
    """``threads`` clients file the applications; a request that fails (the replica died, the connection was cut,
    a 5xx) is retried with the same Idempotency-Key, as a careful client does. A filing marked ``replay`` is sent
    once more after it succeeded: it must get the same application back."""

    def __init__(self, platform: Platform, filings: list[Filing], answers: JSON, *, threads: int = 4) -> None:
        self.platform = platform
        self.filings = filings
        self.answers = answers
        self.threads = threads
        self._next = 0
        self._lock = threading.Lock()
        self.done = 0
        self.errors: list[BaseException] = []
        self.replays: list[tuple[str, str]] = []
        self._workers: list[threading.Thread] = []

    @property
    def operations(self) -> int:
        return sum(f.attempts for f in self.filings)

    def start(self) -> None:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"client-{n}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(deadline - time.monotonic(), 0))
        return not any(w.is_alive() for w in self._workers)

    def _take(self) -> Filing | None:
        with self._lock:
            if self._next >= len(self.filings):
                return None
            self._next += 1
            return self.filings[self._next - 1]

    def _run(self) -> None:
        api = Api(self.platform)
        try:
            while (filing := self._take()) is not None:
                filing.application_id = self._file(api, filing)
                with self._lock:
                    self.done += 1
                if filing.replay:
                    self.replays.append((filing.application_id, self._file(api, filing)))
        except BaseException as exc:
            self.errors.append(exc)

    def _file(self, api: Api, filing: Filing) -> str:
        body = {"resident_id": str(filing.resident.id), "life_event": "job_loss", "answers": self.answers,
                "channel": "web"}  # fmt: skip
        deadline = time.monotonic() + 180
        while True:
            filing.attempts += 1
            try:
                response = api.request("intake", "POST", "/v1/applications", filing.resident.auth, json=body,
                                       headers={"Idempotency-Key": filing.key})  # fmt: skip
                if response.status_code in (200, 201):
                    return str(response.json()["id"])
                if response.status_code < 500:
                    raise AssertionError(f"filing refused: {response.status_code} {response.text}")
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer for {filing.key} within 180 s")
            time.sleep(0.2)


# ---------------------------------------------------------------------------------------------- the faults


@dataclass
class Fault:
    at: int  # when this many applications were filed
    kind: str
    action: Callable[[], str]


@dataclass
class Faults:
    """Faults at random moments (a seeded plan, printed), injected from a thread while the clients file."""

    platform: Platform
    seed: int
    log: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    error: BaseException | None = None

    def plan(self, total: int, partner: PartnerEndpoint) -> list[Fault]:
        rng = random.Random(self.seed)

        def moments(n: int) -> list[int]:
            return sorted(rng.randint(total // 10, total * 9 // 10) for _ in range(n))

        faults = [
            Fault(at, "NATS stream leader SIGKILL", self.kill_stream_leader) for at in moments(max(2, total // 400))
        ]
        for group in self.platform.groups:  # the four services and the portal
            for at in moments(max(1, total // 500)):
                replica = f"{group}-{rng.randint(1, self.platform.config.replicas)}"
                faults.append(Fault(at, "service replica SIGKILL", lambda r=replica: self.kill(r)))  # type: ignore[misc]
        faults += [
            Fault(at, "PostgreSQL backends terminated", self.terminate_backends) for at in moments(max(2, total // 400))
        ]
        # The partner's endpoint is away for a long stretch: from 15 % of the filings to 75 %.
        faults.append(Fault(total * 15 // 100, "webhook endpoint down", lambda: self.endpoint(partner, up=False)))
        faults.append(Fault(total * 75 // 100, "webhook endpoint back", lambda: self.endpoint(partner, up=True)))
        return sorted(faults, key=lambda f: f.at)

    def run(self, plan: list[Fault], progress: Callable[[], int], finished: Callable[[], bool]) -> None:
        try:
            for fault in plan:
                while progress() < fault.at:
                    if finished():
                        break
                    time.sleep(0.05)
                what = fault.action()
                if fault.kind != "webhook endpoint back":  # the end of a fault, not one
                    self.counts[fault.kind] += 1
                self.log.append(f"at {progress()} filed: {what}")
        except BaseException as exc:
            self.error = exc

    def endpoint(self, partner: PartnerEndpoint, *, up: bool) -> str:
        if up:
            partner.up()
            return f"the partner's webhook endpoint is back on port {partner.port}"
        partner.down()
        return f"the partner's webhook endpoint is down (port {partner.port} closed)"

    def kill(self, name: str) -> str:
        pid = self.platform.crash(name)
        return f"SIGKILL {name} (pid {pid})"

    def terminate_backends(self) -> str:
        assert self.platform.postgres is not None
        return f"pg_terminate_backend: {self.platform.postgres.terminate_backends()} connections"

    def kill_stream_leader(self) -> str:
        # One node at a time: wait until the cluster is whole again (the stream's replicas current) first.
        leader = asyncio.run(self._stream_leader(whole=True))
        return self.kill(leader) + " (the stream's leader)"

    async def _stream_leader(self, *, whole: bool, timeout: float = 90.0) -> str:
        nc = await nats.connect(
            self.platform.nats_url.split(","), connect_timeout=5, **self.platform.nats_credentials()
        )
        try:
            js = nc.jetstream(timeout=5)
            deadline = time.monotonic() + timeout
            last: Any = None
            while time.monotonic() < deadline:
                try:
                    info = await js.stream_info(stream_name(self.platform.config.bus_prefix))
                    cluster = info.cluster
                    last = cluster
                    replicas = cluster.replicas or [] if cluster else []
                    if (
                        cluster
                        and cluster.leader
                        and (not whole or (len(replicas) == 2 and all(r.current for r in replicas)))
                    ):
                        return str(cluster.leader)
                except Exception as exc:  # no leader for a moment
                    last = exc
                await asyncio.sleep(0.2)
            raise AssertionError(f"the stream has no leader with current replicas: {last}")
        finally:
            await nc.close()
