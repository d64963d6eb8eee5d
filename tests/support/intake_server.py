"""The real intake service for another service's tests, served over real HTTP on a fixed port from the test's own
event loop: it can be stopped (callers then meet a refused connection) and started again on the same address, and it
registers residents through its own API as a resident would."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from onestop.runner import unused_port
from services.intake.main import create_app as create_intake_app
from services.intake.settings import IntakeSettings
from shared.auth import Role, TokenIssuer
from shared.tls import verifying_context
from tests.support.http import serve


def _without(app: ASGIApp, paths: tuple[str, ...]) -> ASGIApp:
    """``app`` as a release without ``paths`` would answer them: FastAPI's 404 for a path it has no route for."""

    async def earlier_release(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in paths:
            await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
        else:
            await app(scope, receive, send)

    return earlier_release


@dataclass
class IntakeServer:
    """The real intake service, its migrations applied, served over real HTTP on a fixed port: ``stop()`` takes it
    down (notify then meets a refused connection) and ``start()`` brings it back on the same address. ``client``
    talks to it over that HTTP."""

    issuer: TokenIssuer
    port: int = field(default_factory=unused_port)
    # Paths this intake answers 404, as a release from before they were added would (set before ``start``).
    left_out: tuple[str, ...] = ()
    settings: IntakeSettings | None = field(default=None, init=False)
    client: httpx.AsyncClient = field(init=False, repr=False)
    _stack: contextlib.AsyncExitStack | None = field(default=None, init=False, repr=False)
    _starting: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # A request answered later than httpx's default 5 s is slow, not wrong: an intake serving in the test's loop
        # beside notify took longer on a loaded machine.
        self.client = httpx.AsyncClient(base_url=self.url, verify=verifying_context(), timeout=60.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_soon(self, database: Callable[[], str], configure: Callable[[str], IntakeSettings]) -> None:
        """Make intake's database and start it, in the background: alongside the notify service, which needs
        intake's address, not intake. The first call through ``call`` waits for it, and so do ``stop`` and
        ``close``."""

        async def first_start() -> None:
            self.settings = configure(await asyncio.to_thread(database))
            await self.start()

        self._starting = asyncio.create_task(first_start(), name="intake-start")

    async def started(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None:
            await starting

    async def start(self) -> None:
        assert self.settings is not None, "intake has no database yet"
        assert self._stack is None, "intake is running already"
        stack = contextlib.AsyncExitStack()
        # A new app each time, as a restarted process would be; its durable consumers pick up where they were.
        app: ASGIApp = create_intake_app(self.settings)
        if self.left_out:
            app = _without(app, self.left_out)
        await stack.enter_async_context(serve(app, port=self.port))
        self._stack = stack
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.started()
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def close(self) -> None:
        try:
            await self.stop()
        finally:
            await self.client.aclose()

    async def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            response = await self.client.get("/readyz")
            if response.status_code == 200:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"intake not ready: {response.text}")
            await asyncio.sleep(0.05)

    def resident_auth(self, resident_id: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.mint(Role.RESIDENT, resident_id=resident_id)}"}

    async def call(self, method: str, path: str, *, resident_id: uuid.UUID, body: Any) -> dict[str, Any]:
        """One request to intake over HTTP as the resident; the answer's JSON (a 2xx is required)."""
        await self.started()
        response = await self.client.request(method, path, json=body, headers=self.resident_auth(resident_id))
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        result: dict[str, Any] = response.json()
        return result

    async def register(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        language: str = "ko",
        channels: tuple[str, ...] | None = None,
    ) -> uuid.UUID:
        """A resident registers themselves at intake with these contact details; returns the resident's id. The
        channels default to the inbox plus each channel an address was given for."""
        if channels is None:
            channels = ("inbox", *(("email",) if email else ()), *(("sms",) if phone else ()))
        resident_id = uuid.uuid4()
        body = {
            "name": "김민지",
            "birth_date": "1991-03-08",
            "district_code": "11110",
            "address": "서울특별시 종로구 삼봉로 43",
            "email": email,
            "phone": phone,
            "preferred_language": language,
            "preferred_channels": list(channels),
        }
        created = await self.call("POST", "/v1/residents", resident_id=resident_id, body=body)
        assert created["id"] == str(resident_id), "a resident's token registers that resident"
        return resident_id

    async def update(self, resident_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
        """The resident changes their record at intake (``PATCH``: only the fields given)."""
        return await self.call("PATCH", f"/v1/residents/{resident_id}", resident_id=resident_id, body=changes)

    async def set_consents(self, resident_id: uuid.UUID, consents: dict[str, bool]) -> dict[str, Any]:
        """The resident's complete consent set (a purpose left out is withdrawn)."""
        body = {"consents": consents}
        return await self.call("PUT", f"/v1/residents/{resident_id}/consents", resident_id=resident_id, body=body)
