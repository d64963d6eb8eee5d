"""An office's queue: its cases, most urgent first (priority, then due date), earliest due first or newest first, a
page at a time.

Only staff of the office (and admins) read it, and each read is written to the audit log with its purpose: a queue
shows who is waiting for what."""

from __future__ import annotations

from services.routing import views
from services.routing.models import audit_log
from services.routing.offices import OfficeNotFound
from services.routing.repository import QueueFilter, Repository
from services.routing.schemas import QueuePage, QueueSort
from shared.auth import Principal
from shared.problems import Forbidden, UnprocessableContent


async def page(
    repo: Repository,
    principal: Principal,
    office_code: str,
    filters: QueueFilter,
    sort: QueueSort,
    *,
    cursor: str | None,
    limit: int,
    purpose: str,
) -> QueuePage:
    """One page of the queue in ``sort``'s order after ``cursor`` (an office that does not exist is a 404 before the
    403; a cursor made for another order is a 422)."""
    if not principal.works_in(office_code):
        if await repo.office(office_code) is None:
            raise OfficeNotFound(office_code)
        raise Forbidden(f"You do not work in office {office_code}.")
    try:
        after = views.decode_cursor(cursor, sort) if cursor else None
    except UnprocessableContent:
        if await repo.office(office_code) is None:
            raise OfficeNotFound(office_code) from None
        raise
    # Whether the office exists is read with its cases, in one statement.
    rows = await repo.queue_page(office_code, filters, sort, after, limit + 1)
    if rows is None:
        raise OfficeNotFound(office_code)
    cases = rows[:limit]
    await audit_log.record(
        repo.session, principal, action="queue.read", record_type="office", record_id=office_code, purpose=purpose
    )
    return QueuePage(
        office_code=office_code,
        sort=sort,
        items=[views.summary(c) for c in cases],
        next_cursor=views.encode_cursor(cases[-1], sort) if len(rows) > limit else None,
    )
