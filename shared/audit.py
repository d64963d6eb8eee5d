"""The audit log: every read or change of a resident's personal data by anyone but the resident — who, in which role
and offices, when, which record, for what purpose. One platform table in each service's database
(:attr:`shared.tables.PlatformTables.audit_log`), written through this one helper: in the transaction of a change it
records; for a read (a GET, in a read-only unit of work), in a write transaction when the read ends, before the answer
is sent — a read that fails leaves no entry, an answer never leaves without one.

Entries name the resident where the record is theirs, so that a service can show a resident who looked at their data
(intake's access log). Someone acting *for* a resident — a representative the resident named, counter staff under an
authority the resident gave — is recorded with on whose behalf and under which :class:`Authority`: who, for whom,
under which authority. These are columns of their own rather than words in ``purpose``, so that the resident's view
shows them as such and every act under one authority can be found (should a signed form turn out to be forged)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import Principal, Role
from shared.db import defer_write, is_read_only
from shared.tables import PlatformTables


@dataclass(frozen=True)
class Authority:
    """Under what someone acted for a resident: its kind (``representative``; at a counter ``signed_form`` or
    ``id_checked``) and the id of its record in the service that keeps it (intake)."""

    kind: str
    id: uuid.UUID | str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    actor_role: str
    actor_name: str | None
    offices: list[str]
    action: str
    record_type: str
    record_id: str | None
    resident_id: uuid.UUID | None
    purpose: str
    on_behalf_of: uuid.UUID | None = None
    authority_kind: str | None = None
    authority_id: str | None = None


class AuditLog:
    def __init__(self, tables: PlatformTables) -> None:
        self.table = tables.audit_log
        # One statement, its values given at execution: building an INSERT with its values and the cache key of those
        # for each entry was about a twentieth of a queue GET's CPU (py-spy, an idle platform).
        self._insert = insert(self.table)

    async def record(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        action: str,
        record_type: str,
        record_id: uuid.UUID | str | None,
        purpose: str,
        resident_id: uuid.UUID | None = None,
        authority: Authority | None = None,
        even_by_the_resident: bool = False,
    ) -> None:
        """Write an entry in the caller's transaction, unless the resident is looking at their own data (or
        ``even_by_the_resident``: a copy of all their data leaving, which they should see in their log whoever
        asked). With an ``authority`` the caller acted on the resident's behalf under it."""
        own = resident_id is not None and principal.role is Role.RESIDENT and principal.resident_id == resident_id
        if own and not even_by_the_resident:
            return
        entry = dict(
            at=dt.datetime.now(dt.UTC),
            actor=principal.subject[:255],
            actor_role=principal.role.value,
            actor_name=principal.name[:200] if principal.name else None,
            offices=sorted(principal.offices),
            action=action[:64],
            record_type=record_type[:64],
            record_id=str(record_id)[:64] if record_id is not None else None,
            resident_id=resident_id,
            purpose=purpose[:255],
            on_behalf_of=resident_id if authority is not None else None,
            authority_kind=authority.kind[:32] if authority is not None else None,
            authority_id=str(authority.id)[:64] if authority is not None else None,
        )
        if is_read_only(session):
            # A read (a GET): the entry is written when the read ends, before the answer leaves (shared.db).
            defer_write(session, lambda writer: writer.execute(self._insert, entry), one_statement=True)
        else:
            await session.execute(self._insert, entry)

    async def of_resident(
        self, session: AsyncSession, resident_id: uuid.UUID, *, before_id: int | None, limit: int
    ) -> list[AuditEntry]:
        """The entries about one resident, newest first, ``limit`` at a time below ``before_id``."""
        query = select(self.table).where(self.table.c.resident_id == resident_id)
        if before_id is not None:
            query = query.where(self.table.c.id < before_id)
        rows = (await session.execute(query.order_by(self.table.c.id.desc()).limit(limit))).mappings().all()
        return [AuditEntry(**dict(row)) for row in rows]

    async def purge_of_residents(
        self, session: AsyncSession, resident_ids: list[uuid.UUID], *, before: dt.datetime
    ) -> int:
        """Destroy the entries about these (erased) residents written before ``before``: their period ended."""
        if not resident_ids:
            return 0
        result = await session.execute(
            delete(self.table).where(self.table.c.resident_id.in_(resident_ids), self.table.c.at < before)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
