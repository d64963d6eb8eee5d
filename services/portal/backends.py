"""The four services' public APIs, called with the signed-in person's own token.

The portal never decides who may see or do what: it forwards the person's token, and maps what the service answers
(RFC 9457 problems) to what a page shows — 404 "not found" whatever the reason, 403 "not allowed", 409 a conflict
explained, 422 the field's error next to the field, 401 "sign in again", anything else "try again shortly"."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from services.portal.settings import PortalSettings
from shared.observability import current_traceparent
from shared.tls import verifying_context

log = logging.getLogger(__name__)

SERVICES = ("intake", "eligibility", "routing", "notify")


class UpstreamError(Exception):
    """A service said no; ``problem`` is its RFC 9457 body (or what could be read of it)."""

    status = 500

    def __init__(self, problem: dict[str, Any] | None = None, *, service: str = "", status: int | None = None) -> None:
        self.problem = problem or {}
        self.service = service
        if status is not None:
            self.status = status
        super().__init__(f"{service}: {self.status} {self.problem.get('detail') or self.problem.get('title') or ''}")

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or "")

    @property
    def slug(self) -> str:
        return str(self.problem.get("type") or "").rsplit(":", 1)[-1]


class SignInAgain(UpstreamError):
    status = 401


class NotAllowed(UpstreamError):
    status = 403


class NotVisible(UpstreamError):
    status = 404


class Conflict(UpstreamError):
    status = 409


class Invalid(UpstreamError):
    status = 422

    def field_errors(self) -> dict[str, str]:
        """The problem's errors by field (the last part of a dotted name: ``answers.earned_income`` →
        ``earned_income``)."""
        out: dict[str, str] = {}
        for error in self.problem.get("errors") or []:
            name = str(error.get("field") or "")
            out.setdefault(name.rsplit(".", 1)[-1] if name else "", str(error.get("message") or ""))
        return out


class Unavailable(UpstreamError):
    status = 503


_BY_STATUS: dict[int, type[UpstreamError]] = {
    401: SignInAgain,
    403: NotAllowed,
    404: NotVisible,
    409: Conflict,
    422: Invalid,
}


@dataclass
class Backends:
    """One long-lived HTTP client per service (connection pools), for the portal's lifetime."""

    clients: dict[str, httpx.AsyncClient]

    def as_person(self, token: str | None, language: str) -> Upstream:
        return Upstream(self.clients, token, language)


@contextlib.asynccontextmanager
async def backends(settings: PortalSettings) -> AsyncIterator[Backends]:
    urls = {name: getattr(settings, f"{name}_url") for name in SERVICES}
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=url,
                    timeout=settings.upstream_timeout_seconds,
                    verify=verifying_context(),
                    headers={"Accept": "application/json"},
                    follow_redirects=False,
                )
            )
            for name, url in urls.items()
        }
        yield Backends(clients)


class Upstream:
    """The services as one person: each call carries their token (and the trace)."""

    def __init__(self, clients: dict[str, httpx.AsyncClient], token: str | None, language: str) -> None:
        self._clients = clients
        self._token = token
        self.language = language

    async def get(self, service: str, path: str, params: Any = None) -> Any:
        return await self.request(service, "GET", path, params=params)

    async def post(
        self, service: str, path: str, body: Any = None, *, idempotency_key: str | None = None, params: Any = None
    ) -> Any:
        return await self.request(service, "POST", path, json=body, idempotency_key=idempotency_key, params=params)

    async def put(self, service: str, path: str, body: Any) -> Any:
        return await self.request(service, "PUT", path, json=body)

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        idempotency_key: str | None = None,
    ) -> Any:
        if self._token is None:
            raise SignInAgain(service=service)
        headers = {"Authorization": f"Bearer {self._token}", "Accept-Language": self.language}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if (traceparent := current_traceparent()) is not None:
            headers["traceparent"] = traceparent
        try:
            response = await self._clients[service].request(
                method, path, headers=headers, params=params, json=json if method != "GET" else None
            )
        except httpx.HTTPError as exc:
            log.warning("service unreachable", extra={"service": service, "error": repr(exc)})
            raise Unavailable({"detail": type(exc).__name__}, service=service) from exc
        if response.status_code < 300:
            return response.json() if response.content else None
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text[:200]}
        if not isinstance(problem, dict):
            problem = {"detail": str(problem)[:200]}
        error = _BY_STATUS.get(response.status_code)
        if error is None:
            log.warning("service error", extra={"service": service, "status": response.status_code, "path": path})
            raise Unavailable(problem, service=service, status=response.status_code)
        raise error(problem, service=service)
