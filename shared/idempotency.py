"""``Idempotency-Key`` for POSTs that create something: a retry gets the original answer, the same key with another
body is refused. The key is stored in the same transaction as what the request created.

A route that honours the header takes :data:`shared.deps.IdempotentDep` (an :class:`IdempotentRequest`), which
declares the header for OpenAPI, and runs its one domain call through :meth:`IdempotentRequest.create`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Insert, bindparam, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import Principal
from shared.problems import Conflict, UnprocessableContent
from shared.responses import FastJSONResponse
from shared.tables import PlatformTables

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255

# For ``responses=`` of a POST whose ``IdempotentRequest.create(location=...)`` names what it created.
CREATED_AT_LOCATION: dict[int | str, dict[str, Any]] = {
    201: {"headers": {"Location": {"required": True, "schema": {"type": "string"}}}}
}


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: Any
    # True when this is the answer stored for an earlier request with the same key.
    replayed: bool = False
    # The body as JSON, when it was written already (it is written once, for the store and the answer alike).
    raw: bytes | None = None

    @property
    def json(self) -> bytes:
        return self.raw if self.raw is not None else orjson.dumps(self.body)

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        extra = dict(headers or {})
        if self.replayed:
            extra["Idempotent-Replayed"] = "true"
        return FastJSONResponse(self.json, status_code=self.status_code, headers=extra)


class IdempotencyKeyReused(UnprocessableContent):
    slug = "idempotency-key-reused"
    title = "Idempotency key reused"


def fingerprint(method: str, path: str, body: Any) -> str:
    """What makes two requests the same. A retry is compared before its body is validated, so a body orjson cannot
    write (an integer beyond 64 bits) is written by the standard library instead: the validator then answers 422,
    never a 500."""
    try:
        canonical = orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)
    except TypeError:
        canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


class Idempotency:
    """Look up and store responses by (principal, key)."""

    def __init__(self, tables: PlatformTables) -> None:
        self.table = tables.idempotency_keys
        self._statements: dict[str, Insert] = {}
        # Made once, as the INSERT is: a statement used again is neither built nor given its cache key again, at
        # every request that has a key.
        self._stored = select(self.table).where(
            self.table.c.principal == bindparam("principal"), self.table.c.key == bindparam("key")
        )

    def _storing(self, dialect: str) -> Insert:
        """``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of an answer, made once per dialect (only values change)."""
        statement = self._statements.get(dialect)
        if statement is None:
            insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
            statement = self._statements[dialect] = (
                insert(self.table)
                .values({column.name: bindparam(column.name, type_=column.type) for column in self.table.columns})
                .on_conflict_do_nothing(index_elements=[self.table.c.principal, self.table.c.key])
                .returning(self.table.c.key)
            )
        return statement

    async def replay(
        self, session: AsyncSession, principal: Principal, key: str, method: str, path: str, body: Any
    ) -> StoredResponse | None:
        """The stored response for a retry, None for a first request; refuses a key reused with another body."""
        row = (await session.execute(self._stored, {"principal": principal.subject, "key": key})).one_or_none()
        if row is None:
            return None
        if row.fingerprint != fingerprint(method, path, body):
            raise IdempotencyKeyReused(
                f"The {HEADER} '{key}' was already used for a different request; use a new key for a new request.",
                errors=[
                    {"field": f"header.{HEADER}", "message": "already used with a different body", "type": "reused"}
                ],
            )
        return StoredResponse(row.status_code, orjson.loads(row.response))

    async def remember(
        self,
        session: AsyncSession,
        principal: Principal,
        key: str,
        method: str,
        path: str,
        body: Any,
        response: StoredResponse,
    ) -> bool:
        """Store the answer under the key; False when an answer is stored under it already (a request with the same
        key that got there first: committed, or on PostgreSQL waited for until it committed)."""
        stored = await session.execute(
            self._storing(session.get_bind().dialect.name),
            {
                "principal": principal.subject,
                "key": key,
                "method": method,
                "path": path,
                "fingerprint": fingerprint(method, path, body),
                "status_code": response.status_code,
                "response": response.json.decode(),
                "created_at": dt.datetime.now(dt.UTC),
            },
        )
        return stored.first() is not None

    async def once(
        self,
        session: AsyncSession,
        principal: Principal,
        key: str | None,
        method: str,
        path: str,
        body: BaseModel | None,
        create: Callable[[], Awaitable[BaseModel]],
        *,
        status_code: int = 201,
    ) -> StoredResponse:
        """Do ``create`` once per ``Idempotency-Key`` (when the request has one): a retry gets the first answer,
        the same key with another body is refused, and the key is stored in the transaction that did the work.

        The stored answer is looked up before anything is written (on SQLite, before the writer lock is taken:
        ``Database.session(reads_first=True)``), so a retry that comes while the first request is still being handled
        finds nothing and does the work too. Where the key is stored, the first to store it wins: the other's work is
        rolled back and it answers as a retry does (the same answer, or 422 for another body)."""
        fingerprint_body = body.model_dump(mode="json") if body is not None else None
        if key is not None:
            stored = await self.replay(session, principal, key, method, path, fingerprint_body)
            if stored is not None:
                return StoredResponse(stored.status_code, stored.body, replayed=True)
        payload = (await create()).model_dump(mode="json")
        answer = StoredResponse(status_code, payload, raw=orjson.dumps(payload))
        if key is not None and not await self.remember(session, principal, key, method, path, fingerprint_body, answer):
            stored = await self.replay(session, principal, key, method, path, fingerprint_body)
            if stored is None:  # stored and gone again (expired) in between: the client retries
                raise Conflict("A request with this Idempotency-Key was being handled at the same time; retry.")
            await session.rollback()  # what this request did: the first one did it
            return StoredResponse(stored.status_code, stored.body, replayed=True)
        return answer


# The request's ``Idempotency-Key``, declared by the dependency that honours it (``shared.deps.IdempotentDep``), so
# that every route that honours it documents it.
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        max_length=MAX_KEY_LENGTH,
        description=(
            "Makes a retry safe: the same key and body return the first answer (with `Idempotent-Replayed: "
            "true`); the same key with another body is refused (422)."
        ),
    ),
]


def checked_key(key: str | None) -> str | None:
    """The ``Idempotency-Key`` as it is stored: without surrounding blanks, and refused (422) when nothing is left."""
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise UnprocessableContent.for_field(f"header.{HEADER}", f"must be 1 to {MAX_KEY_LENGTH} characters")
    return key


@dataclass(frozen=True)
class IdempotentRequest:
    """The request's key with what it takes to honour it; routes get one through ``shared.deps.IdempotentDep``."""

    idempotency: Idempotency
    session: AsyncSession
    principal: Principal
    key: str | None
    request: Request

    async def create(
        self,
        body: BaseModel | None,
        create: Callable[[], Awaitable[BaseModel]],
        *,
        status_code: int = 201,
        location: Callable[[Any], str] | None = None,
    ) -> JSONResponse:
        """Run ``create`` once per key and answer with its result: the stored one (same status, same body) for a
        retry. ``location`` makes a ``Location`` header from the answer's body."""
        answer = await self.idempotency.once(
            self.session,
            self.principal,
            self.key,
            self.request.method,
            self.request.url.path,
            body,
            create,
            status_code=status_code,
        )
        headers = {"Location": location(answer.body)} if location is not None else None
        return answer.response(headers)
