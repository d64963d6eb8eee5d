"""What every screening shares, whoever runs it: the programs a request screens for, the population a run pages
through, how a run's record ends and the counts it shows.

Kept apart from ``screenings.py`` (the record as the API and the scheduler see it) so that the runs, ``screening.py``
and ``screening_runs.py``, which ``screenings.py`` imports only when one starts with someone to screen (they judge in
columns with Polars), import nothing back from it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import TYPE_CHECKING, Protocol

from services.eligibility.catalogue import Catalogue, named_programs
from services.eligibility.determinations import Eligibility
from services.eligibility.models import ScreeningRow
from services.eligibility.repository import Repository
from services.eligibility.schemas import ScreeningIn, ScreeningOut
from shared.db import Database

if TYPE_CHECKING:
    from services.eligibility.population import RegistryPage

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- what is screened for


def proactive_codes(catalogue: Catalogue, as_of: dt.date) -> list[str]:
    """Every proactive program with a rule version in force on ``as_of``."""
    return [c for c, p in catalogue.programs.items() if p.attributes.proactive and p.version_on(as_of)]


async def requested_programs(repo: Repository, service: Eligibility, request: ScreeningIn) -> tuple[dt.date, list[str]]:
    """What a screening request asks for: its day (default: today in the city) and the programs it names (each known
    and in force that day, else the request is refused) or, naming none, every proactive program in force then."""
    catalogue = await service.store.get(repo)
    as_of = request.as_of or service.store.today()
    if request.programs is not None:
        return as_of, named_programs(catalogue, request.programs, as_of, field="programs")
    return as_of, proactive_codes(catalogue, as_of)


# ---------------------------------------------------------------------------------------------- who a run screens


class Population(Protocol):
    # The residents of a page are spread over every id (named, or due), not one range of ids.
    sparse: bool
    # The next page may be read before this one's findings are written.
    reads_ahead: bool

    async def total(self, repo: Repository) -> int: ...

    async def next_page(self, repo: Repository, limit: int) -> tuple[int, RegistryPage] | None:
        """(residents this page accounts for, the consenting ones to judge, read as columns), or None when done."""

    async def page_done(self, repo: Repository) -> None: ...


# ---------------------------------------------------------------------------------------------- a run's record


async def finish(
    db: Database,
    service: Eligibility,
    screening_id: uuid.UUID,
    started: float,
    judgements: int,
    evaluations: int,
    *,
    status: str,
    error: str | None = None,
) -> ScreeningRow:
    """A run ended: how, its judgements and evaluations, and how long it took (``started``: ``time.perf_counter``);
    counted in the service's metrics once recorded."""
    async with db.session() as session:
        row = await Repository(session).screening(screening_id)
        assert row is not None
        await session.refresh(row)
        row.status = status
        row.error = error
        row.judgements = judgements
        row.evaluations = evaluations
        row.finished_at = dt.datetime.now(dt.UTC)
        row.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        log.info(
            "screening finished",
            extra={
                "screening_id": str(screening_id),
                "kind": row.kind,
                "status": status,
                "residents": row.residents_screened,
                "opportunities": row.opportunities,
                "questions": row.questions,
            },
        )
    if service.screening_metrics is not None:
        if status == "completed":
            service.screening_metrics.finished(row)
        else:
            service.screening_metrics.failed()
    return row


def screening_out(row: ScreeningRow) -> ScreeningOut:
    """A screening's counts (an administrator's run is answered with them when done)."""
    rate = None
    if row.duration_ms:
        rate = round(row.residents_screened / (row.duration_ms / 1000), 1)
    return ScreeningOut(
        screening_id=row.screening_id,
        status=row.status,
        as_of=row.as_of,
        programs=list(row.programs),
        residents_screened=row.residents_screened,
        judgements=row.judgements,
        evaluations=row.evaluations,
        eligible_found=row.eligible_found,
        already_applied=row.already_applied,
        already_notified=row.already_notified,
        opportunities=row.opportunities,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_ms=row.duration_ms,
        residents_per_second=rate,
    )
