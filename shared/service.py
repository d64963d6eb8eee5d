"""The app factory every service uses: lifespan (database, NATS, relay, the service's context, consumers), auth on
every route, problem+json errors, request limits, health/readiness/metrics, and the dead-letter admin API.

What a service is and what it holds while it runs are in :mod:`shared.runtime`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import select
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import Role, current_principal, require_roles
from shared.consumer import DeadLetterNotFound
from shared.deps import SessionDep, get_runtime
from shared.observability import Metrics, RequestContextMiddleware, configure_logging
from shared.problems import (
    PROBLEM_JSON,
    MisdirectedRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    install_problem_handlers,
    problem_response,
    problem_responses,
)
from shared.runtime import Runtime, ServiceDefinition
from shared.settings import ServiceSettings
from shared.tracing import Tracing
from shared.turns import Foreground

log = logging.getLogger(__name__)

OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})


# ---------------------------------------------------------------------------------------------- the factory


def create_service_app(definition: ServiceDefinition[Any], settings: ServiceSettings) -> FastAPI:
    configure_logging(definition.name, settings.log_level, json=settings.log_json)
    metrics = Metrics(definition.name)
    tracing = Tracing.from_settings(definition.name, settings)
    # The requests being served, counted by the middleware; the consumers give way to them.
    foreground = Foreground(patience=settings.consumer_patience_ms / 1000)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.process_nice:
            lower_priority(settings.process_nice)
        runtime = Runtime.build(definition, settings, metrics, foreground)
        app.state.runtime = runtime
        app.state.verifier = runtime.verifier
        try:
            async with runtime.running(definition):
                yield
        finally:
            tracing.shutdown()  # exports what is buffered

    app = FastAPI(
        title=definition.title,
        description=definition.description,
        version=definition.version,
        lifespan=lifespan,
        # Spans and metrics are shared.tracing's and shared.observability's. FastAPI's own are off, so that it does not
        # ask at every request whether a global OpenTelemetry provider has been set since.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    app.add_middleware(
        BodyLimitedRequestMiddleware,
        metrics=metrics,
        service=definition.name,
        max_bytes=settings.max_body_bytes,
        foreground=foreground,
    )
    app.state.tracing = tracing

    app.include_router(ops_router())
    authenticated = [Depends(current_principal)]
    for router in definition.routers:
        app.include_router(router, dependencies=authenticated)
    app.include_router(dead_letter_router(), dependencies=authenticated)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    if settings.build_route_handlers:
        build_route_handlers(app.router.routes)
    return app


def lower_priority(nice: int) -> None:
    """Lower this process's CPU priority by ``nice``: its thread's (the threads it starts after inherit it) and, where
    the kernel groups each session's processes for scheduling (autogroup: the runner starts each process in a session
    of its own), its group's, without which a process alone in its group competes with the others as an equal
    whatever its nice. Lowering needs no privilege; it is never raised again."""
    os.nice(nice)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w", encoding="ascii") as autogroup:
        autogroup.write(str(nice))


def build_route_handlers(routes: Sequence[BaseRoute]) -> None:
    """Build every included router's request handlers now, with the app. FastAPI (0.16x) builds them (a validator
    for each parameter of each route) on the first request that reaches a router: 50-100 ms with the event loop held,
    in the middle of serving (seen as a service's longest stall under load). Built here, they are also made before
    ``onestop.serve`` freezes what the app holds, so no collection walks them again."""
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            build_route_handlers(candidates())
            low_priority = getattr(route, "effective_low_priority_routes", None)
            if callable(low_priority):
                low_priority()


class BodyLimitedRequestMiddleware(RequestContextMiddleware):
    """Each request's span, timing and count (:class:`RequestContextMiddleware`), and within them bodies over the
    limit refused with 413 before anything reads them whole: one layer, where a middleware of its own for the limit
    cost a request another coroutine and a ``PayloadTooLarge`` made up front (about 12 µs). Each request is counted
    in ``foreground`` while it is served: the service's consumers give way to it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, service: str, max_bytes: int, foreground: Foreground) -> None:
        super().__init__(app, metrics, service)
        self.max_bytes = max_bytes
        self.foreground = foreground

    def _too_large(self) -> ASGIApp:
        return problem_response(PayloadTooLarge(f"The request body is larger than {self.max_bytes} bytes."))

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.foreground.enter()
        try:
            await self._within_limit(scope, receive, send)
        finally:
            self.foreground.leave()

    async def _within_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared_length: int | None = None
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    declared_length = int(value)
                except ValueError:
                    declared_length = 0
                if declared_length > self.max_bytes:
                    await self._too_large()(scope, receive, send)
                    return
        if declared_length is not None:
            await self.app(scope, receive, send)
            return
        # No Content-Length (a chunked upload): read it here, up to the limit, and hand the app what was read.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            received += len(body)
            if received > self.max_bytes:
                await self._too_large()(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay_receive() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replay_receive, send)


# ---------------------------------------------------------------------------------------------- ops routes


def ops_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="The database and NATS are reachable", responses={503: {"description": "Not ready"}})
    async def readyz(request: Request) -> Response:
        runtime = get_runtime(request)
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(runtime.db.ping(), timeout=2)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        checks["nats"] = "ok" if await runtime.bus.ping() else "unavailable"
        checks["consumers"] = "ok" if runtime.messaging_ready else "starting"
        if all(v == "ok" for v in checks.values()):
            return Response(content=f'{{"status":"ready","checks":{_json(checks)}}}', media_type="application/json")
        return problem_response(ServiceUnavailable("Not ready.", checks=checks), request)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(get_runtime(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class DeadLetter(BaseModel):
    id: int
    consumer: str
    event_id: str
    event_type: str
    subject: str
    error: str
    deliveries: int
    failed_at: dt.datetime
    replayed_at: dt.datetime | None
    replay_error: str | None


class ReplayResult(BaseModel):
    id: int
    handled: bool


def dead_letter_router() -> APIRouter:
    router = APIRouter(prefix="/v1/admin/dead-letters", tags=["operations"])
    admin = Depends(require_roles(Role.ADMIN))

    @router.get("", dependencies=[admin], summary="Events that kept failing")
    async def list_dead_letters(
        request: Request,
        session: SessionDep,
        consumer: str | None = Query(default=None, max_length=100),
        include_replayed: bool = False,
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[DeadLetter]:
        table = get_runtime(request).tables.dead_letters
        query = select(table).order_by(table.c.id.desc()).limit(limit)
        if consumer:
            query = query.where(table.c.consumer == consumer)
        if not include_replayed:
            query = query.where(table.c.replayed_at.is_(None))
        rows = (await session.execute(query)).mappings().all()
        return [DeadLetter.model_validate(dict(r)) for r in rows]

    @router.post(
        "/{dead_letter_id}/replay",
        dependencies=[admin],
        summary="Run a dead letter's event again",
        responses=problem_responses(421),
    )
    async def replay(request: Request, dead_letter_id: int = Path(ge=1, le=2**63 - 1)) -> ReplayResult:
        runtime = get_runtime(request)
        async with runtime.db.session() as session:
            table = runtime.tables.dead_letters
            consumer_name = await session.scalar(select(table.c.consumer).where(table.c.id == dead_letter_id))
        consumer = next((c for c in runtime.consumers.values() if c.durable == consumer_name), None)
        if consumer is None and consumer_name is not None and runtime.settings.process_role == "api":
            raise MisdirectedRequest(
                f"Dead letter {dead_letter_id} is {consumer_name}'s, and this process runs no consumers (the service "
                "runs them in its worker: onestop run --workers). Replay it on the worker's port."
            )
        if consumer is None:
            raise NotFound(f"No dead letter {dead_letter_id}.")
        try:
            handled = await consumer.replay(dead_letter_id)
        except DeadLetterNotFound:
            raise NotFound(f"No dead letter {dead_letter_id}.") from None
        return ReplayResult(id=dead_letter_id, handled=handled)

    return router


# ---------------------------------------------------------------------------------------------- OpenAPI

_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}, "type": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

_COMMON_PROBLEMS = {
    "401": "Missing or invalid bearer token",
    "403": "The caller's role may not do this",
    "404": "Not found, or not visible to the caller",
    "413": "Request body too large",
    "422": "Invalid input: a parameter, a field, or a body that is not JSON (nothing was written)",
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = _PROBLEM_SCHEMA
    components["schemas"].pop("HTTPValidationError", None)
    components["schemas"].pop("ValidationError", None)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    problem = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    # The headers the shared parts answer with, declared where they come: shared.problems' Unauthorized, a
    # ServiceUnavailable that knows when to come back, and shared.idempotency's replay of a stored answer.
    problem_headers = {
        "401": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}, "description": "Bearer"}},
        "503": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before a retry"}},
    }
    replayed = {
        "Idempotent-Replayed": {
            "schema": {"type": "string", "enum": ["true"]},
            "description": "Present on a retry with the same Idempotency-Key: this is the first request's answer",
        }
    }
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if path in OPS_PATHS:
                if path == "/readyz":
                    responses["503"] = {"description": "Not ready", **problem}
                continue
            operation["security"] = [{"bearer": []}]
            for status, description in _COMMON_PROBLEMS.items():
                existing = responses.get(status, {})
                responses[status] = {**existing, "description": existing.get("description", description), **problem}
            responses.setdefault("500", {"description": "Unexpected error", **problem})
            idempotent = any(
                p.get("in") == "header" and p.get("name", "").lower() == "idempotency-key"
                for p in operation.get("parameters", [])
            )
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    response.update(problem)
                if status in problem_headers:
                    response.setdefault("headers", {}).update(problem_headers[status])
                if idempotent and status.startswith("2"):
                    response.setdefault("headers", {}).update(replayed)
    app.openapi_schema = schema
    return schema
