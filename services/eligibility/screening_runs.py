"""Screenings that run by themselves, a page at a time, with their progress on the record.

``screening.py`` answers an administrator's call in one request. The runs here are started by the scheduler
(``triggers.py``) — a full run when the catalogue changes, a daily run for the residents whose dates crossed a
boundary, an incremental run for the residents whose facts changed — or by an administrator asking for a run in the
background (``POST /v1/screenings`` with ``background``). Each commits page by page: its row in ``screenings`` shows
how far it got (``residents_screened`` of ``residents_total``) while it runs, and a run that fails or whose process
dies leaves everything it wrote whole, the rest to the next run.

Per resident and proactive program a run finds one of three things:
- eligible, never applied for and never offered: an opportunity (``eligibility.opportunity``), as ``screening.py``;
- a *near miss*: the rule waits on exactly one fact the resident can tell (``near_misses.py``): one question
  (``screening.question_asked``), not an offer;
- anything else: nothing.
It also records, per resident, the day their dates next move a fact the rules read (``triggers.next_review``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import polars as pl
from sqlalchemy import Table, delete, insert, update

from services.eligibility import near_misses, vectorised
from services.eligibility.catalogue import Catalogue, named_programs
from services.eligibility.determinations import Eligibility
from services.eligibility.facts import Derived, Environment, FactLayers, derive, resolve
from services.eligibility.models import (
    OpportunityRow,
    ResidentRow,
    ScreeningQuestionRow,
    ScreeningQueueRow,
    ScreeningRow,
)
from services.eligibility.near_misses import NearMiss
from services.eligibility.repository import Repository, registry_of, reported_of
from services.eligibility.schemas import ScreeningIn, ScreeningOut, ScreeningPage
from services.eligibility.screening import Finding, facts_read, screening_out, start_screening
from services.eligibility.triggers import ReviewCalendar
from shared.db import Database
from shared.events import EligibilityOpportunity, Localized, ScreeningQuestionAsked
from shared.problems import NotFound, UnprocessableContent

log = logging.getLogger(__name__)

Kind = Literal["manual", "requested", "full", "daily", "incremental"]
OPPORTUNITIES = cast(Table, OpportunityRow.__table__)
QUESTIONS = cast(Table, ScreeningQuestionRow.__table__)
_ERROR = object()
_MISSING = object()


# ---------------------------------------------------------------------------------------------- judging


@dataclass
class Judgement:
    findings: list[Finding]
    near_misses: list[NearMiss]
    # The resident's resolved and derived facts: what their next review day is worked out from.
    values: dict[str, Any]


class ProactiveJudge:
    """Judges residents against the proactive programs on one date, a page at a time, in columns: each resident's base
    facts are resolved (``facts.resolve``, as for an application) into one row of a table, and every program's rule
    is judged for the whole table by the vectorised engine (``vectorised.Judge``: derived facts and criteria as
    column expressions, the per-record engine for a program its compiler cannot translate — ``onestop catalogue
    check`` lists them — and for rows at risk of a CEL error). A full run, a daily run and a re-screen of a few
    residents go through the same path; the differential tests (``test_vectorised.py``) hold it to the per-record
    engine. A program waiting on information is looked at once more, per record and explained, to tell a near miss:
    that verdict is kept per distinct tuple of the facts the rule reads and of what each missing fact would be asked
    as (an unknown recognised income asks for different facts depending on which of its inputs are missing)."""

    def __init__(
        self,
        catalogue: Catalogue,
        codes: Sequence[str],
        as_of: dt.date,
        now: dt.datetime,
        unasked: frozenset[str] = frozenset(),
    ) -> None:
        self.catalogue = catalogue
        self.as_of = as_of
        self.now = now
        self.unasked = unasked
        self.plans: list[tuple[str, tuple[str, ...]]] = []
        for code in codes:
            program = catalogue.programs.get(code)
            if program is not None and program.version_on(as_of) is not None:
                self.plans.append((code, facts_read(catalogue, [code], as_of)))
        self.plan = vectorised.plan(catalogue, [code for code, _ in self.plans], as_of)
        self.versions = catalogue.versions_on(as_of)
        # The base facts a review day is worked out from (dates), beside those the rules read.
        self.dates = frozenset(
            t.name for t in catalogue.facts.types.values() if not t.derived and (t.type == "date" or t.items == "date")
        )
        self.near: dict[tuple[Any, ...], Any] = {}
        self.read = frozenset(name for _, read in self.plans for name in read)
        self.judged = 0
        self.evaluations = 0

    def judge(self, layers: FactLayers) -> Judgement:
        return self.judge_many([layers])[0]

    def judge_many(self, people: Sequence[FactLayers]) -> list[Judgement]:
        """Every resident of ``people`` (in order) against every program, in one table."""
        if not people:
            return []
        facts = self.catalogue.facts
        resolved = [resolve(facts, layers, self.now) for layers in people]
        base = self.plan.base
        table = pl.DataFrame([{n: v[0].get(n) for n in base} for v in resolved], schema=base, orient="row")
        judged = vectorised.Judge(self.catalogue, self.plan, table, criteria=False).run()
        codes = [code for code, _ in self.plans]
        outcomes = judged.select([vectorised.outcome_column(c) for c in codes]).rows()
        amounts = judged.select([vectorised.amount_column(c) for c in codes]).rows()
        out = []
        for layers, resolution, outcome_row, amount_row in zip(people, resolved, outcomes, amounts, strict=True):
            values = resolution[0]
            findings: list[Finding] = []
            misses: list[NearMiss] = []
            derived: Derived | None = None
            env: Environment | None = None
            for (code, read), outcome, amount in zip(self.plans, outcome_row, amount_row, strict=True):
                if outcome == vectorised.ELIGIBLE:
                    program, version = self.versions[code]
                    spec = version.spec
                    period = spec.amount.period if spec.amount is not None and amount is not None else None
                    findings.append(Finding(program, version.version, amount, period))
                elif outcome == vectorised.NEEDS_INFORMATION:
                    # Waiting on information: whether it is a near miss is told per record (derived once per resident).
                    if derived is None:
                        derived = self._derive(layers, resolution)
                    if derived.errors:
                        key = tuple(_ERROR if n in derived.errors else derived.values.get(n) for n in read)
                    else:
                        key = tuple(map(derived.values.get, read))
                    asked = tuple(derived.asks.get(n, (n,)) for n, v in zip(read, key, strict=True) if v is None)
                    near_key = (code, key, asked)
                    miss = self.near.get(near_key, _MISSING)
                    if miss is _MISSING:
                        env = env or derived.environment()
                        miss = near_misses.near_miss(self.catalogue, env, code, self.unasked)
                        self.near[near_key] = miss
                    if miss is not None:
                        misses.append(cast(NearMiss, miss))
            out.append(Judgement(findings, misses, {n: values[n] for n in self.dates if n in values}))
        self.judged += len(people) * len(self.plans)
        # Every judgement is made in columns (a few rows or programs by the per-record engine): none reuses another.
        self.evaluations = self.judged
        return out

    def _derive(self, layers: FactLayers, resolution: tuple[dict[str, Any], dict[str, str], dict[str, str]]) -> Derived:
        catalogue = self.catalogue
        return derive(
            catalogue.facts,
            catalogue.medians,
            self.as_of,
            layers,
            self.now,
            explain=False,
            districts=catalogue.districts,
            resolved=resolution,
        )


# ---------------------------------------------------------------------------------------------- one page


@dataclass
class PageCounts:
    screened: int = 0
    eligible_found: int = 0
    already_applied: int = 0
    already_notified: int = 0
    opportunities: int = 0
    questions: int = 0


async def screen_page(
    repo: Repository,
    service: Eligibility,
    judge: ProactiveJudge,
    reviews: ReviewCalendar,
    screening_id: uuid.UUID,
    residents: Sequence[ResidentRow],
    now: dt.datetime,
) -> PageCounts:
    """Judge a page of consenting residents and write what it finds, with its events, in the caller's transaction."""
    counts = PageCounts(screened=len(residents))
    # A resident erased since the page was read is neither found nor asked anything (resident_data.py).
    erased = await repo.erased_among([r.resident_id for r in residents])
    residents = [r for r in residents if r.resident_id not in erased]
    if not residents:
        return counts
    ids = [r.resident_id for r in residents]
    reported = await repo.department_facts_of(ids)
    answers = await repo.resident_answers_of(ids)
    applied = await repo.applied_programs(ids)
    told = await repo.notified(ids)
    asked = await repo.asked(ids)
    facts = judge.catalogue.facts
    opportunities: list[dict[str, Any]] = []
    offers: list[EligibilityOpportunity] = []
    questions: list[dict[str, Any]] = []
    asking: list[ScreeningQuestionAsked] = []
    review_rows: list[dict[str, Any]] = []
    people = [
        FactLayers(
            declared=answers.get(resident.resident_id, {}),
            registry=registry_of(resident),
            reported=reported_of(reported.get(resident.resident_id, [])),
            consents=resident.consents or {},
        )
        for resident in residents
    ]
    for resident, judgement in zip(residents, judge.judge_many(people), strict=True):
        rid = resident.resident_id
        for finding in judgement.findings:
            counts.eligible_found += 1
            code = finding.program.code
            if code in applied.get(rid, ()):
                counts.already_applied += 1
                continue
            if (rid, code) in told:
                counts.already_notified += 1
                continue
            opportunities.append(
                {
                    "screening_id": screening_id,
                    "resident_id": rid,
                    "program_code": code,
                    "rule_version": finding.version,
                    "amount": finding.amount,
                    "found_at": now,
                }
            )
            offers.append(
                EligibilityOpportunity(
                    screening_id=screening_id,
                    resident_id=rid,
                    program_code=code,
                    program_name=Localized(**finding.program.name),
                    department=finding.program.attributes.department,
                    amount=finding.amount,
                    amount_period=finding.period,
                    found_at=now,
                )
            )
        for miss in judgement.near_misses:
            code = miss.program.code
            if code in applied.get(rid, ()) or (rid, code) in told or (rid, code, miss.fact) in asked:
                continue
            asked.add((rid, code, miss.fact))
            question_id = uuid.uuid4()
            questions.append(
                {
                    "question_id": question_id,
                    "screening_id": screening_id,
                    "resident_id": rid,
                    "program_code": code,
                    "fact": miss.fact,
                    "status": "open",
                    "asked_at": now,
                    "answered_at": None,
                }
            )
            fact_type = facts.types[miss.fact]
            asking.append(
                ScreeningQuestionAsked(
                    question_id=question_id,
                    screening_id=screening_id,
                    resident_id=rid,
                    program_code=code,
                    program_name=Localized(**miss.program.name),
                    department=miss.program.attributes.department,
                    fact=facts.missing_fact(miss.fact),
                    choices=list(fact_type.enum) if fact_type.enum else None,
                    why=Localized(**miss.why),
                    asked_at=now,
                )
            )
        review_rows.append(
            {"resident_id": rid, "review_on": reviews.next_review(judgement.values), "screened_on": judge.as_of}
        )
    if opportunities:
        await repo.session.execute(insert(OPPORTUNITIES), opportunities)
        await service.outbox.emit_many(repo.session, offers, subjects=[str(o.resident_id) for o in offers])
    if questions:
        await repo.session.execute(insert(QUESTIONS), questions)
        await service.outbox.emit_many(repo.session, asking, subjects=[str(q.resident_id) for q in asking])
    await repo.record_reviews(review_rows)
    counts.opportunities = len(opportunities)
    counts.questions = len(questions)
    return counts


# ---------------------------------------------------------------------------------------------- who a run screens


class Population(Protocol):
    async def total(self, repo: Repository) -> int: ...

    async def next_page(self, repo: Repository, limit: int) -> tuple[int, list[ResidentRow]] | None:
        """(residents this page accounts for, the consenting ones to judge), or None when done."""

    async def page_done(self, repo: Repository) -> None: ...


@dataclass
class Everyone:
    """Every resident who consented to proactive screening (a full run), by id."""

    after: uuid.UUID | None = None

    async def total(self, repo: Repository) -> int:
        return await repo.count_consenting()

    async def next_page(self, repo: Repository, limit: int) -> tuple[int, list[ResidentRow]] | None:
        page = await repo.screening_residents(self.after, limit)
        if not page:
            return None
        self.after = page[-1].resident_id
        return len(page), page

    async def page_done(self, repo: Repository) -> None:
        return None


@dataclass
class DueToday:
    """Consenting residents whose review day has come: their dates moved a fact the rules read (or were never
    screened). Screening them records their next review day, so a run that stops part-way loses nothing."""

    today: dt.date
    after: uuid.UUID | None = None

    async def total(self, repo: Repository) -> int:
        return await repo.count_due(self.today)

    async def next_page(self, repo: Repository, limit: int) -> tuple[int, list[ResidentRow]] | None:
        page = await repo.due_residents(self.today, self.after, limit)
        if not page:
            return None
        self.after = page[-1].resident_id
        return len(page), page

    async def page_done(self, repo: Repository) -> None:
        return None


@dataclass
class Queued:
    """The residents marked since their last screening (facts, consents or answers changed), oldest mark first. The
    marks a page saw are cleared with its findings; a mark made again meanwhile stays for the next run. The run takes
    at most as many marks as there were when it started, so a steady stream of changes cannot keep it going."""

    budget: int = 0
    marks: list[tuple[uuid.UUID, dt.datetime]] = field(default_factory=list)

    async def total(self, repo: Repository) -> int:
        self.budget = await repo.queue_size()
        return self.budget

    async def next_page(self, repo: Repository, limit: int) -> tuple[int, list[ResidentRow]] | None:
        if self.budget <= 0:
            return None
        rows = await repo.queued(min(limit, self.budget))
        if not rows:
            return None
        self.budget -= len(rows)
        self.marks = [(r.resident_id, r.queued_at) for r in rows]
        return len(rows), await repo.consenting_residents([r.resident_id for r in rows])

    async def page_done(self, repo: Repository) -> None:
        await repo.clear_queued(self.marks)


# ---------------------------------------------------------------------------------------------- a run


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


def proactive_codes(catalogue: Catalogue, as_of: dt.date) -> list[str]:
    return [c for c, p in catalogue.programs.items() if p.attributes.proactive and p.version_on(as_of)]


async def execute(
    db: Database,
    service: Eligibility,
    screening_id: uuid.UUID,
    population: Population,
    *,
    renew: Any = None,
) -> ScreeningRow:
    """Run a screening whose row exists, page by page (each page one transaction), to its end. ``renew`` (an
    awaitable factory) is called between pages to keep the scheduler's lease. A failure marks the run failed and is
    raised again; what earlier pages wrote stays."""
    batch = service.settings.screening_batch_size
    started = time.perf_counter()
    async with db.session() as session:
        repo = Repository(session)
        row = await repo.screening(screening_id)
        assert row is not None
        catalogue = await service.store.get(repo)
        row.status = "running"
        row.residents_total = await population.total(repo)
        as_of, codes = row.as_of, list(row.programs)
    judge = ProactiveJudge(catalogue, codes, as_of, dt.datetime.now(dt.UTC), service.settings.screening_unasked_facts)
    reviews = ReviewCalendar(catalogue, as_of, judge.read)
    try:
        while True:
            async with db.session() as session:
                repo = Repository(session)
                page = await population.next_page(repo, batch)
                if page is None:
                    break
                accounted, residents = page
                now = dt.datetime.now(dt.UTC)
                counts = await screen_page(repo, service, judge, reviews, screening_id, residents, now)
                await population.page_done(repo)
                await session.execute(
                    update(ScreeningRow)
                    .where(ScreeningRow.screening_id == screening_id)
                    .values(
                        residents_screened=ScreeningRow.residents_screened + accounted,
                        eligible_found=ScreeningRow.eligible_found + counts.eligible_found,
                        already_applied=ScreeningRow.already_applied + counts.already_applied,
                        already_notified=ScreeningRow.already_notified + counts.already_notified,
                        opportunities=ScreeningRow.opportunities + counts.opportunities,
                        questions=ScreeningRow.questions + counts.questions,
                        judgements=judge.judged,
                        evaluations=judge.evaluations,
                    )
                    .execution_options(synchronize_session=False)
                )
            if renew is not None:
                await renew()
            await asyncio.sleep(0)  # let the service's requests and consumers in between pages
    except Exception as exc:
        await _finish(db, screening_id, judge, started, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    return await _finish(db, screening_id, judge, started, status="completed")


async def _finish(
    db: Database,
    screening_id: uuid.UUID,
    judge: ProactiveJudge,
    started: float,
    *,
    status: str,
    error: str | None = None,
) -> ScreeningRow:
    async with db.session() as session:
        row = await Repository(session).screening(screening_id)
        assert row is not None
        await session.refresh(row)
        row.status = status
        row.error = error
        row.judgements = judge.judged
        row.evaluations = judge.evaluations
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
        return row


async def clear_marks_before(db: Database, before: dt.datetime) -> None:
    """After a full run: the marks made before it began are answered by it."""
    async with db.session() as session:
        await session.execute(delete(ScreeningQueueRow).where(ScreeningQueueRow.queued_at < before))


# ---------------------------------------------------------------------------------------------- the API's side


async def start(
    repo: Repository, service: Eligibility, request: ScreeningIn, *, actor: str, now: dt.datetime
) -> ScreeningOut:
    """``POST /v1/screenings``: at once (the answer waits for the counts, as before), or in the background: the row is
    queued and the scheduler runs it next, a page at a time (``GET /v1/screenings/{id}`` shows how far it got)."""
    if not request.background:
        return await start_screening(repo, service, request, actor=actor, now=now)
    catalogue = await service.store.get(repo)
    as_of = request.as_of or service.store.today()
    if request.programs is not None:
        codes = named_programs(catalogue, request.programs, as_of, field="programs")
    else:
        codes = proactive_codes(catalogue, as_of)
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
    """A screening as the API shows it: its counts (``screening.screening_out``), what started it and how far it got."""
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
