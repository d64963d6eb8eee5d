"""Where to send: the resident's contact details, asked of intake when a message goes out and never stored.

intake serves ``GET /v1/residents/{id}/contact``, and ``POST /v1/contact-lookups`` for several residents at once,
to the notify service only. A short in-memory cache spares intake a call per channel of the same message; nothing of
it is written to disk or to logs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)

# How many residents one request to intake names (intake's limit: services/intake/schemas.py MAX_CONTACTS).
CONTACTS_PER_REQUEST = 100

# An intake of a release before ``POST /v1/contact-lookups`` (a rolling deploy that updates notify first) answers it
# 404 or 405. Its residents are then asked one by one, as before, and the batched request is tried again after this
# long, so that notify takes it up once intake is updated, without a restart.
ONE_BY_ONE_SECONDS = 300.0


class ContactUnavailable(Exception):
    """intake could not be asked (down, timing out, answering 5xx): try again later."""


class PostalPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    address: str


class ContactPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    resident_id: uuid.UUID
    email: str | None = None
    phone: str | None = None
    preferred_language: str | None = None
    preferred_channels: list[str] | None = None
    # Only for a resident who chose letters (intake gives it to no one else).
    postal: PostalPayload | None = None


class ContactListPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[ContactPayload]


@dataclass(frozen=True)
class Contact:
    resident_id: uuid.UUID
    # Kept out of repr so that a stray log line or traceback never carries them.
    email: str | None = field(repr=False)
    phone: str | None = field(repr=False)
    preferred_language: str | None
    preferred_channels: tuple[str, ...]
    postal_name: str | None = field(default=None, repr=False)
    postal_address: str | None = field(default=None, repr=False)


class ContactDirectory:
    def __init__(
        self, client: httpx.AsyncClient, base_url: str, token: str | None, *, cache_seconds: float = 60.0
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.cache_seconds = cache_seconds
        self._cache: dict[uuid.UUID, tuple[float, Contact | None]] = {}
        self.one_by_one_seconds = ONE_BY_ONE_SECONDS
        # When (monotonic) intake last did not know the batched request; None when it has not.
        self._batch_refused_at: float | None = None

    async def lookup(self, resident_id: uuid.UUID) -> Contact | None:
        """The resident's contact, or None when intake does not know the resident."""
        now = time.monotonic()
        cached = self._cache.get(resident_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            response = await self.client.get(
                f"{self.base_url}/v1/residents/{resident_id}/contact", headers=self._headers()
            )
        except httpx.HTTPError as exc:
            raise ContactUnavailable(f"intake unreachable: {type(exc).__name__}") from None
        if response.status_code == 404:
            contact = None
        elif response.status_code == 200:
            try:
                contact = _contact(ContactPayload.model_validate_json(response.content))
            except ValidationError:
                raise ContactUnavailable("intake answered with an unreadable contact") from None
        else:
            raise ContactUnavailable(f"intake answered {response.status_code}")
        self._keep(now, {resident_id: contact})
        return contact

    async def lookup_many(self, resident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Contact | None]:
        """Each resident's contact (None when intake does not know the resident), those not in the cache asked of
        intake in one request per ``CONTACTS_PER_REQUEST``, not one each: a request costs intake a transaction
        (the read is recorded in the resident's access log) and both services the HTTP round."""
        now = time.monotonic()
        found: dict[uuid.UUID, Contact | None] = {}
        missing: list[uuid.UUID] = []
        for resident_id in dict.fromkeys(resident_ids):
            cached = self._cache.get(resident_id)
            if cached is not None and cached[0] > now:
                found[resident_id] = cached[1]
            else:
                missing.append(resident_id)
        for start in range(0, len(missing), CONTACTS_PER_REQUEST):
            asked = missing[start : start + CONTACTS_PER_REQUEST]
            if self._batch_refused_at is not None and now < self._batch_refused_at + self.one_by_one_seconds:
                found.update(await self._one_by_one(asked))
                continue
            try:
                response = await self.client.post(
                    f"{self.base_url}/v1/contact-lookups",
                    headers=self._headers(),
                    json={"resident_ids": [str(r) for r in asked]},
                )
            except httpx.HTTPError as exc:
                raise ContactUnavailable(f"intake unreachable: {type(exc).__name__}") from None
            if response.status_code in (404, 405):
                # Never an answer of an intake that has the route (it leaves unknown residents out): one without it.
                log.warning("intake does not batch contact lookups; asking one resident at a time")
                self._batch_refused_at = now
                found.update(await self._one_by_one(asked))
                continue
            if response.status_code != 200:
                raise ContactUnavailable(f"intake answered {response.status_code}")
            try:
                told = ContactListPayload.model_validate_json(response.content)
            except ValidationError:
                raise ContactUnavailable("intake answered with unreadable contacts") from None
            contacts: dict[uuid.UUID, Contact | None] = dict.fromkeys(asked)  # left out: intake does not know them
            contacts.update((p.resident_id, _contact(p)) for p in told.items if p.resident_id in contacts)
            self._keep(now, contacts)
            found.update(contacts)
        return found

    async def _one_by_one(self, resident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Contact | None]:
        return {resident_id: await self.lookup(resident_id) for resident_id in resident_ids}

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _keep(self, now: float, contacts: dict[uuid.UUID, Contact | None]) -> None:
        if self.cache_seconds > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            for resident_id, contact in contacts.items():
                self._cache[resident_id] = (now + self.cache_seconds, contact)

    def forget(self, resident_id: uuid.UUID) -> None:
        self._cache.pop(resident_id, None)


def _contact(payload: ContactPayload) -> Contact:
    return Contact(
        resident_id=payload.resident_id,
        email=payload.email or None,
        phone=payload.phone or None,
        preferred_language=payload.preferred_language,
        preferred_channels=tuple(payload.preferred_channels or ()),
        postal_name=payload.postal.name if payload.postal else None,
        postal_address=payload.postal.address if payload.postal else None,
    )
