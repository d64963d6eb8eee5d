"""Screenings on the record, and who a run screens: what the API and the scheduler handle without running one.

A screening is asked for (``POST /v1/screenings``, or the scheduler finding one due: ``scheduler.py``), opened as a
row in ``screenings``, listed and reported from it. Running it is ``screening.py`` (an administrator's run, answered
when done) and ``screening_runs.py`` (a run a page at a time); both judge in columns with Polars, which costs a
process about 37 MB of memory once imported. Nothing here imports it, so a service that evaluates applications and
never screens does without: the runs are imported where one starts with someone to screen (:func:`start`,
:func:`execute`). What every run shares, the runs' own modules import from ``screening_records.py``, not from here.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete

from services.eligibility.determinations import Eligibility
from services.eligibility.models import ScreeningQueueRow, ScreeningRow
from services.eligibility.repository import Repository
from services.eligibility.schemas import ScreeningIn, ScreeningOut, ScreeningPage
from services.eligibility.screening_records import Population, finish, requested_programs, screening_out
from shared.db import Database
from shared.problems import NotFound, UnprocessableContent

if TYPE_CHECKING:
    from services.eligibility.population import Reads, RegistryPage

log = logging.getLogger(__name__)

Kind = Literal["manual", "requested", "full", "daily", "incremental"]


# ---------------------------------------------------------------------------------------------- who a run screens


async def _read_page(
    repo: Repository,
    after: str | None,
    limit: int,
    only: Sequence[uuid.UUID] | None = None,
    *,
    due: dt.date | None = None,
) -> RegistryPage:
    """``population.read_page``, imported when a run reads its first page: the page is Polars' columns."""
    from services.eligibility import population

    return await population.read_page(repo, after, limit, only, due=due)


def _moved_past(population: Everyone | DueToday, page: RegistryPage) -> tuple[int, RegistryPage] | None:
    """A page read in id order after ``population.after``, with ``after`` moved past it; None when it was empty."""
    if not page.ids:
        return None
    population.after = page.ids[-1]
    return len(page.ids), page


@dataclass
class Everyone:
    """Every resident who consented to proactive screening (a full run), by id."""

    after: str | None = None
    sparse: bool = False
    reads_ahead: bool = True

    async def total(self, repo: Repository) -> int:
        return await repo.count_consenting()

    async def next_page(self, repo: Repository, limit: int) -> tuple[int, RegistryPage] | None:
        return _moved_past(self, await _read_page(repo, self.after, limit))

    async def page_done(self, repo: Repository) -> None:
        return None


@dataclass
class DueToday:
    """Consenting residents whose review day has come: their dates moved a fact the rules read (or were never
    screened). Screening them records their next review day, so a run that stops part-way loses nothing."""

    today: dt.date
    after: str | None = None
    sparse: bool = True
    reads_ahead: bool = True

    async def total(self, repo: Repository) -> int:
        return await repo.count_due(self.today)

    async def next_page(self, repo: Repository, limit: int) -> tuple[int, RegistryPage] | None:
        return _moved_past(self, await _read_page(repo, self.after, limit, due=self.today))

    async def page_done(self, repo: Repository) -> None:
        return None


@dataclass
class Queued:
    """The residents marked since their last screening (facts, consents or answers changed), oldest mark first. The
    marks a page saw are cleared with its findings; a mark made again meanwhile stays for the next run. The run takes
    at most as many marks as there were when it started, so a steady stream of changes cannot keep it going."""

    budget: int = 0
    marks: list[tuple[uuid.UUID, dt.datetime]] = field(default_factory=list)
    sparse: bool = True
    reads_ahead: bool = False

    async def total(self, repo: Repository) -> int:
        self.budget = await repo.queue_size()
        return self.budget

    async def next_page(self, repo: Repository, limit: int) -> tuple[int, RegistryPage] | None:
        if self.budget <= 0:
            return None
        rows = await repo.queued(min(limit, self.budget))
        if not rows:
            return None
        self.budget -= len(rows)
        self.marks = [(r.resident_id, r.queued_at) for r in rows]
        return len(rows), await _read_page(repo, None, len(rows), [r.resident_id for r in rows])

    async def page_done(self, repo: Repository) -> None:
        await repo.clear_queued(self.marks)


# ---------------------------------------------------------------------------------------------- runs on the record


async def open_run(
    repo: Repository,
    *,
    kind: Kind,
    trigger: str,
    actor: str,
    as_of: dt.date,
    codes: Sequence[str],
    now: dt.datetime,
    status: Literal["queued", "running"] = "running",
) -> ScreeningRow:
    row = ScreeningRow(
        screening_id=uuid.uuid4(),
        requested_by=actor,
        as_of=as_of,
        programs=list(codes),
        status=status,
        residents_screened=0,
        judgements=0,
        evaluations=0,
        eligible_found=0,
        already_applied=0,
        already_notified=0,
        opportunities=0,
        questions=0,
        started_at=now,
        kind=kind,
        trigger=trigger,
    )
    repo.session.add(row)
    await repo.session.flush()
    return row


async def execute(
    db: Database,
    service: Eligibility,
    screening_id: uuid.UUID,
    population: Population,
    *,
    renew: Any = None,
) -> ScreeningRow:
    """Run a screening whose row exists to its end (``screening_runs.execute``: page by page, each page one
    transaction; ``renew``, an awaitable factory, is called between pages to keep the scheduler's lease). One with
    nobody to screen (none consenting, due or queued: a new database's first full run, a day no one's dates moved) is
    completed here, without importing the runs: they judge in columns with Polars, which a process that only
    evaluates applications does without."""
    started = time.perf_counter()
    async with db.session() as session:
        repo = Repository(session)
        row = await repo.screening(screening_id)
        assert row is not None
        row.status = "running"
        row.residents_total = await population.total(repo)
    if row.residents_total:
        from services.eligibility import screening_runs

        return await screening_runs.execute(db, service, screening_id, population, started=started, renew=renew)
    return await finish(db, service, screening_id, started, 0, 0, status="completed")


async def clear_marks_before(db: Database, before: dt.datetime) -> None:
    """After a full run: the marks made before it began are answered by it."""
    async with db.session() as session:
        await session.execute(delete(ScreeningQueueRow).where(ScreeningQueueRow.queued_at < before))


# ---------------------------------------------------------------------------------------------- the API's side


async def start(
    repo: Repository,
    service: Eligibility,
    request: ScreeningIn,
    *,
    actor: str,
    now: dt.datetime,
    reads: Reads | None = None,
) -> ScreeningOut:
    """``POST /v1/screenings``: at once (the answer waits for the counts, as before), or in the background: the row is
    queued and the scheduler runs it next, a page at a time (``GET /v1/screenings/{id}`` shows how far it got)."""
    if not request.background:
        from services.eligibility.screening import start_screening  # the run itself: Polars is loaded from here on

        return await start_screening(repo, service, request, actor=actor, now=now, reads=reads)
    as_of, codes = await requested_programs(repo, service, request)
    row = await open_run(
        repo,
        kind="requested",
        trigger=f"requested by {actor}",
        actor=actor,
        as_of=as_of,
        codes=codes,
        now=now,
        status="queued",
    )
    return run_out(row)


def run_out(row: ScreeningRow) -> ScreeningOut:
    """A screening as the API shows it: its counts (:func:`screening_out`), what started it and how far it got."""
    progress = None  # a manual run is answered when done: it has no progress to follow
    if row.residents_total is not None:
        progress = round(min(row.residents_screened / row.residents_total, 1.0), 4) if row.residents_total else 1.0
    return screening_out(row).model_copy(
        update={
            "kind": row.kind,
            "trigger": row.trigger,
            "residents_total": row.residents_total,
            "progress": progress,
            "questions": row.questions or 0,
            "error": row.error,
        }
    )


async def report(repo: Repository, screening_id: uuid.UUID) -> ScreeningOut:
    row = await repo.screening(screening_id)
    if row is None:
        raise NotFound(f"No screening {screening_id}.")
    return run_out(row)


async def list_screenings(
    repo: Repository, *, kind: str | None, status: str | None, cursor: str | None, limit: int
) -> ScreeningPage:
    """Every screening, newest first, a page at a time."""
    after = _decode(cursor) if cursor else None
    rows = await repo.screenings_page(kind, status, after, limit + 1)
    page = rows[:limit]
    last = page[-1] if page else None
    return ScreeningPage(
        items=[run_out(r) for r in page],
        next_cursor=_encode(last.started_at, last.screening_id) if last is not None and len(rows) > limit else None,
    )


def _encode(at: dt.datetime, screening_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{screening_id}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, last = raw.partition("|")
        moment = dt.datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment, uuid.UUID(last)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise UnprocessableContent.for_field("query.cursor", "is not a cursor this API gave out") from None
