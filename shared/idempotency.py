"""``Idempotency-Key`` for POSTs that create something: a retry gets the original answer, the same key with another
body is refused. The key is stored in the same transaction as what the request created."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import Principal
from shared.problems import UnprocessableContent
from shared.tables import PlatformTables

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: Any


class IdempotencyKeyReused(UnprocessableContent):
    slug = "idempotency-key-reused"
    title = "Idempotency key reused"


def fingerprint(method: str, path: str, body: Any) -> str:
    return hashlib.sha256(orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)).hexdigest()


class Idempotency:
    """Look up and store responses by (principal, key)."""

    def __init__(self, tables: PlatformTables) -> None:
        self.table = tables.idempotency_keys

    @staticmethod
    def key_from(request: Request) -> str | None:
        key = request.headers.get(HEADER)
        if key is None:
            return None
        key = key.strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            raise UnprocessableContent.for_field(f"header.{HEADER}", f"must be 1 to {MAX_KEY_LENGTH} characters")
        return key

    async def replay(
        self, session: AsyncSession, principal: Principal, key: str, method: str, path: str, body: Any
    ) -> StoredResponse | None:
        """The stored response for a retry, None for a first request; refuses a key reused with another body."""
        row = (
            await session.execute(
                select(self.table).where(self.table.c.principal == principal.subject, self.table.c.key == key)
            )
        ).one_or_none()
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
    ) -> None:
        await session.execute(
            insert(self.table).values(
                principal=principal.subject,
                key=key,
                method=method,
                path=path,
                fingerprint=fingerprint(method, path, body),
                status_code=response.status_code,
                response=orjson.dumps(response.body).decode(),
                created_at=dt.datetime.now(dt.UTC),
            )
        )
