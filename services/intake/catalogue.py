"""Eligibility's catalogue of life events and fact types, read over HTTP and cached.

Eligibility owns the catalogue; intake needs it to list life events and to refuse answers that name no known fact
or have the wrong type. A copy is kept for a short TTL, then revalidated by its version (eligibility's ``ETag``): an
unchanged catalogue answers 304 and the copy, already parsed, is kept as it is; only a new version is fetched and
parsed again. When eligibility cannot be reached a stale copy is served, and only when there is no copy at all does
the request fail (503, nothing written).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from services.intake.schemas import FactType, LifeEvent
from services.intake.settings import IntakeSettings
from shared.problems import ServiceUnavailable
from shared.tls import verifying_context

log = logging.getLogger(__name__)

T = TypeVar("T")


class CatalogueUnavailable(ServiceUnavailable):
    slug = "catalogue-unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The program catalogue (eligibility service) cannot be reached right now; nothing was saved. "
            "Please try again shortly.",
            headers={"Retry-After": "5"},
        )


@dataclass
class _Entry(Generic[T]):
    value: T
    fetched_at: float
    version: str | None = None


class _Cached(Generic[T]):
    """One catalogue resource: fetched at most once at a time, fresh for ``ttl`` seconds, stale on failure."""

    def __init__(self, client: httpx.AsyncClient, path: str, parse: Callable[[Any], T], ttl: float) -> None:
        self.client = client
        self.path = path
        self.parse = parse
        self.ttl = ttl
        self._entry: _Entry[T] | None = None
        self._lock = asyncio.Lock()

    def _fresh(self) -> T | None:
        entry = self._entry
        if entry is not None and time.monotonic() - entry.fetched_at < self.ttl:
            return entry.value
        return None

    async def get(self) -> T:
        if (value := self._fresh()) is not None:
            return value
        async with self._lock:
            if (value := self._fresh()) is not None:  # another request refreshed it while we waited
                return value
            entry = self._entry
            try:
                headers = {"If-None-Match": entry.version} if entry is not None and entry.version else {}
                response = await self.client.get(self.path, headers=headers)
                if response.status_code == 304 and entry is not None:
                    entry.fetched_at = time.monotonic()  # the same version: the copy is fresh again
                    return entry.value
                response.raise_for_status()
                value = self.parse(response.json())
            except (httpx.HTTPError, ValueError, ValidationError) as exc:
                if self._entry is not None:
                    log.warning(
                        "catalogue not refreshed; serving the cached copy",
                        extra={"path": self.path, "error": repr(exc)},
                    )
                    return self._entry.value
                log.error("catalogue unavailable and nothing cached", extra={"path": self.path, "error": repr(exc)})
                raise CatalogueUnavailable() from exc
            self._entry = _Entry(value, time.monotonic(), response.headers.get("etag"))
            return value


_LIFE_EVENTS = TypeAdapter(list[LifeEvent])
_FACT_TYPES = TypeAdapter(list[FactType])


@dataclass(frozen=True)
class CatalogueSnapshot:
    life_events: list[LifeEvent]
    fact_types: dict[str, FactType]

    @functools.cached_property
    def life_event_codes(self) -> frozenset[str]:
        return frozenset(e.code for e in self.life_events)


class Catalogue:
    def __init__(self, client: httpx.AsyncClient, *, ttl: float) -> None:
        self._life_events = _Cached(client, "/v1/life-events", _LIFE_EVENTS.validate_python, ttl)
        self._fact_types = _Cached(
            client, "/v1/fact-types", lambda raw: {f.name: f for f in _FACT_TYPES.validate_python(raw)}, ttl
        )
        self._snapshot: CatalogueSnapshot | None = None

    async def life_events(self) -> list[LifeEvent]:
        return await self._life_events.get()

    async def fact_types(self) -> dict[str, FactType]:
        return await self._fact_types.get()

    async def snapshot(self) -> CatalogueSnapshot:
        """Both parts as one snapshot, the same object as long as neither part changed."""
        life_events, fact_types = await self.life_events(), await self.fact_types()
        snapshot = self._snapshot
        if snapshot is None or snapshot.life_events is not life_events or snapshot.fact_types is not fact_types:
            snapshot = self._snapshot = CatalogueSnapshot(life_events, fact_types)
        return snapshot


@contextlib.asynccontextmanager
async def catalogue_client(settings: IntakeSettings) -> AsyncIterator[Catalogue]:
    """The catalogue over a long-lived HTTP client to eligibility, for the service's lifetime (part of intake's
    context)."""
    headers = {"Accept": "application/json"}
    if settings.service_token is not None:
        headers["Authorization"] = f"Bearer {settings.service_token.get_secret_value()}"
    async with httpx.AsyncClient(
        base_url=settings.eligibility_url,
        headers=headers,
        timeout=settings.catalogue_timeout_seconds,
        verify=verifying_context(),
    ) as client:
        yield Catalogue(client, ttl=settings.catalogue_ttl_seconds)


async def fetch(catalogue: Catalogue) -> CatalogueSnapshot | CatalogueUnavailable:
    """The catalogue for a request that writes, read before its transaction starts (no database lock is held while
    eligibility answers). Unavailable is returned, not raised: a retry of a request that already succeeded is still
    answered from the idempotency store; :func:`available` raises it when the catalogue is really needed."""
    try:
        return await catalogue.snapshot()
    except CatalogueUnavailable as exc:
        return exc


def available(fetched: CatalogueSnapshot | CatalogueUnavailable) -> CatalogueSnapshot:
    if isinstance(fetched, CatalogueUnavailable):
        raise fetched
    return fetched
