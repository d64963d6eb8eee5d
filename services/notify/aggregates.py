"""The aggregate feed: eligibility determinations counted per district and program, for partners that plan (an NGO
sizing its branches, a department its outreach). It names no resident, so no resident's consent is needed: an
administrator grants ``aggregate.determinations_counted`` (purpose ``statistics``) and the partner subscribes to it
like to any other type, over NATS or a webhook.

- Counting: the partners' consumer counts each program of every ``eligibility.determined`` it handles (one per
  evaluation round) under the resident's district, the program and the outcome, in the period it is handled in
  (``aggregate_period_seconds`` long, aligned to midnight in the city's time zone: a day by default). Only the counts
  are kept; a count for a period already published goes into the next one.
- Publishing: once a period has ended, :class:`AggregatePublisher` emits one ``aggregate.determinations_counted``
  for it (exactly one, whichever replica gets there first), which the fan-out sends to the partners subscribed. A
  period in which nothing was counted publishes nothing.
- Small groups: a district and program with fewer than ``aggregate_min_group`` determinations is left out (counted
  in ``withheld_groups``); within a group an outcome counted fewer times (but not zero) is null, and so is the next
  smallest when it alone could be worked out from the total.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.models import AggregateCount, utcnow
from services.notify.repository import Repository
from services.notify.schedule import zone
from services.notify.settings import NotifySettings
from shared.db import Database
from shared.events import DeterminationCounts, DeterminationsCounted, EligibilityDetermined, Outcome
from shared.outbox import Outbox

log = logging.getLogger(__name__)

OUTCOMES = tuple(o.value for o in Outcome)
# Periods published in one pass at most (after a long stop, the rest follow in the next passes).
PUBLISH_BATCH = 50


def period_start(moment: dt.datetime, length: dt.timedelta, timezone: dt.tzinfo) -> dt.datetime:
    """The start (UTC) of the period ``moment`` falls in: periods of ``length`` counted from midnight, local time."""
    local = moment.astimezone(timezone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = (local - midnight) // length
    return (midnight + elapsed * length).astimezone(dt.UTC)


async def count_determinations(
    session: AsyncSession, settings: NotifySettings, data: EligibilityDetermined, now: dt.datetime | None = None
) -> None:
    """Count the programs of one determination in the period open now (in the consumer's transaction)."""
    counts = Counter((data.resident.district_code, p.program_code, p.outcome.value) for p in data.programs)
    await _count(session, settings, counts, now)


# What a consumer's transaction counted, written once at its end (see note_determination).
_NOTED = "notify_determinations_noted"


async def note_determination(session: AsyncSession, settings: NotifySettings, data: EligibilityDetermined) -> None:
    """Count the programs of one determination with the others of the transaction, written together by
    :func:`count_noted` at its end (the partners' consumer's ``Subscription.finish``): one period looked up and one
    statement for a batch, not three per determination. Within a savepoint (a batch applied event by event, after a
    failure) the count is written at once instead, so that it is rolled back with its event if that one fails."""
    if session.in_nested_transaction():
        await count_determinations(session, settings, data)
        return
    noted: Counter[tuple[str, str, str]] = session.info.setdefault(_NOTED, Counter())
    noted.update((data.resident.district_code, p.program_code, p.outcome.value) for p in data.programs)


async def count_noted(session: AsyncSession, settings: NotifySettings, now: dt.datetime | None = None) -> None:
    """Write what the transaction's determinations counted (:func:`note_determination`), in the period open now."""
    noted: Counter[tuple[str, str, str]] | None = session.info.pop(_NOTED, None)
    if noted:
        await _count(session, settings, noted, now)


async def _count(
    session: AsyncSession, settings: NotifySettings, counts: Counter[tuple[str, str, str]], now: dt.datetime | None
) -> None:
    """Add ``counts`` ((district, program, outcome) -> how many) to the period open now, in one statement."""
    if not counts:
        return
    repo = Repository(session)
    length = dt.timedelta(seconds=settings.aggregate_period_seconds)
    start = period_start(now or utcnow(), length, zone(None, settings.timezone))
    period = await repo.open_aggregate_period(start, length)
    await repo.count_determinations(period.period_start, dict(counts))


def withheld(counts: dict[str, int], min_group: int) -> set[str]:
    """The outcomes to withhold in a group that is shown: those counted 1..min_group-1 times, and when that is one
    alone (the total would give it away) the next smallest counted one too."""
    small = {o for o, n in counts.items() if 0 < n < min_group}
    if len(small) == 1:
        others = sorted((n, o) for o, n in counts.items() if n > 0 and o not in small)
        if others:
            small.add(others[0][1])
    return small


def counted(
    start: dt.datetime, end: dt.datetime, rows: Iterable[AggregateCount], min_group: int, now: dt.datetime
) -> DeterminationsCounted:
    groups: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    for row in rows:
        groups[(row.district_code, row.program_code)][row.outcome] = row.count
    shown: list[DeterminationCounts] = []
    left_out = 0
    for (district_code, program_code), by_outcome in sorted(groups.items()):
        total = sum(by_outcome.values())
        if total < min_group:
            left_out += 1
            continue
        hidden = withheld(by_outcome, min_group)
        outcomes = {o: (None if o in hidden else n) for o, n in by_outcome.items()}
        shown.append(
            DeterminationCounts(
                district_code=district_code, program_code=program_code, determinations=total, **outcomes
            )
        )
    return DeterminationsCounted(
        period_start=start, period_end=end, min_group=min_group, counts=shown, withheld_groups=left_out,
        counted_at=now,
    )  # fmt: skip


class AggregatePublisher:
    """Publishes each ended period once (a background loop of the service, see services/notify/worker.py)."""

    def __init__(self, *, db: Database, outbox: Outbox, settings: NotifySettings) -> None:
        self.db = db
        self.outbox = outbox
        self.settings = settings

    async def run_once(self) -> int:
        now = utcnow()
        async with self.db.session() as session:
            repo = Repository(session)
            periods = await repo.claim_due_aggregate_periods(now, PUBLISH_BATCH)
            for start, end in periods:
                rows: Sequence[AggregateCount] = await repo.aggregate_counts(start)
                await self.outbox.emit(session, counted(start, end, rows, self.settings.aggregate_min_group, now))
        if periods:
            log.info("aggregate periods published", extra={"periods": len(periods)})
        return len(periods)
