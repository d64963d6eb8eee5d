"""Stand-ins for HTTP systems outside the platform — an SMS gateway, a partner's webhook endpoint: a real HTTP server
on loopback that records every request and can be told to fail."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response

from tests.support.http import serve


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Endpoint:
    """A partner's webhook endpoint or the SMS gateway: records every request; ``fail_next`` requests get
    ``fail_status``, and ``down`` makes every request fail."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 503
    down: bool = False

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.status < 300]


def endpoint_app(state: Endpoint) -> FastAPI:
    app = FastAPI()

    @app.post("/{path:path}")
    async def receive(path: str, request: Request) -> Response:
        body = await request.body()
        status = 200
        if state.down:
            status = state.fail_status
        elif state.fail_next > 0:
            state.fail_next -= 1
            status = state.fail_status
        state.requests.append(Received(path, dict(request.headers), body, status))
        return Response(status_code=status)

    return app


@contextlib.asynccontextmanager
async def served_endpoint() -> AsyncIterator[Endpoint]:
    state = Endpoint()
    async with serve(endpoint_app(state)) as url:
        state.url = url
        yield state
