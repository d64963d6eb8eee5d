"""Which office each case of an application is in now, from routing's ``case.routed`` and ``case.transferred``: what
scopes staff reads of an application's determinations (a caseworker or supervisor reads them only while a case of
the application is in one of their offices). Eligibility never reads routing's tables; it keeps this projection.

Idempotent under redelivery and reordering: each row remembers when its case came to its office, and an event older
than that (a late redelivery of the routing after a transfer) changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy.ext.asyncio import AsyncSession

from services.eligibility.models import CaseOfficeRow
from services.eligibility.repository import Repository
from shared.events import CaseEventBase, CaseRouted, CaseTransferred, CloudEvent

log = logging.getLogger(__name__)


async def on_case_routed(session: AsyncSession, event: CloudEvent, data: CaseRouted) -> None:
    await _move(Repository(session), data, data.routed_at)


async def on_case_transferred(session: AsyncSession, event: CloudEvent, data: CaseTransferred) -> None:
    await _move(Repository(session), data, data.transferred_at)


async def _move(repo: Repository, data: CaseEventBase, since: dt.datetime) -> None:
    row = await repo.case_office(data.case_id, for_update=True)
    if row is None:
        repo.session.add(
            CaseOfficeRow(
                case_id=data.case_id,
                application_id=data.application_id,
                office_code=data.office_code,
                office_since=since,
            )
        )  # the next event of this case in the same batch finds it among the session's new rows
        return
    if since < row.office_since:
        log.info("an older case event changes no office", extra={"case_id": str(data.case_id)})
        return
    row.office_code = data.office_code
    row.office_since = since
