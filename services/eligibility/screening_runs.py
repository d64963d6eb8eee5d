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
from sqlalchemy import Table, delete, update

from services.eligibility import near_misses, vectorised
from services.eligibility.catalogue import Catalogue, named_programs
from services.eligibility.determinations import Eligibility
from services.eligibility.facts import Derived, FactCatalogue, FactLayers, derive, resolve
from services.eligibility.models import (
    ResidentRow,
    ScreeningQuestionRow,
    ScreeningQueueRow,
    ScreeningRow,
)
from services.eligibility.near_misses import NearMiss
from services.eligibility.repository import Repository, registry_of, reported_of
from services.eligibility.schemas import ScreeningIn, ScreeningOut, ScreeningPage
from services.eligibility.screening import (
    Finding,
    facts_read,
    opportunity_events,
    opportunity_rows,
    screening_out,
    start_screening,
)
from services.eligibility.triggers import ReviewCalendar
from shared.db import Database, bulk_insert
from shared.events import Localized, ScreeningQuestionAsked
from shared.outbox import EnvelopeTemplate, dashed
from shared.problems import NotFound, UnprocessableContent

log = logging.getLogger(__name__)

Kind = Literal["manual", "requested", "full", "daily", "incremental"]
QUESTIONS = cast(Table, ScreeningQuestionRow.__table__)
_ERROR = object()
_MISSING = object()
# Residents judged in one table between two yields to the event loop (a page holds up to ``screening_batch_size``):
# large enough that the columns pay, small enough that requests and consumers wait for one such table at most.
JUDGED_BETWEEN_YIELDS = 100


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
    residents go through the same path; the differential tests (``test_vectorised.py``, ``test_near_miss_columns.py``)
    hold it to the per-record engine. A near miss is told in columns too (``Judge`` with ``near_misses``: the one fact
    a program waiting on information asks for, and which criteria wait on it); where the columns cannot tell (an
    absorbing criterion with two or more facts missing, whose wait CEL itself decides; a row or program judged per
    record) it is told per record, explained, as ``near_misses.near_miss`` does — that verdict kept per distinct tuple
    of the facts the rule reads and of what each missing fact would be asked as."""

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
        self.why: dict[tuple[str, int], dict[str, str]] = {}
        self.awaited: dict[int, dict[tuple[Any, ...], int]] = {}
        self.read = frozenset(name for _, read in self.plans for name in read)
        self.judged = 0
        self.evaluations = 0
        # Near misses told per record (the columns could not): how often the slow path was taken.
        self.near_misses_per_record = 0

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
        judged = vectorised.Judge(
            self.catalogue, self.plan, table, criteria=False, near_misses=True, awaited_memo=self.awaited
        ).run()
        codes = [code for code, _ in self.plans]
        columns = [
            name(c)
            for c in codes
            for name in (
                vectorised.outcome_column,
                vectorised.amount_column,
                vectorised.near_miss_column,
                vectorised.waiting_column,
                vectorised.near_miss_per_record_column,
            )
        ]
        rows = judged.select(columns).rows()
        out = []
        for layers, resolution, row in zip(people, resolved, rows, strict=True):
            values = resolution[0]
            findings: list[Finding] = []
            misses: list[NearMiss] = []
            derived: Derived | None = None
            for at, (code, read) in enumerate(self.plans):
                outcome, amount, fact, waiting, per_record = row[5 * at : 5 * at + 5]
                if outcome == vectorised.ELIGIBLE:
                    program, version = self.versions[code]
                    spec = version.spec
                    period = spec.amount.period if spec.amount is not None and amount is not None else None
                    findings.append(Finding(program, version.version, amount, period))
                elif outcome != vectorised.NEEDS_INFORMATION:
                    continue
                elif per_record:
                    if derived is None:
                        derived = self._derive(layers, resolution)
                    miss = self._near_miss_per_record(code, read, derived)
                    if miss is not None:
                        misses.append(miss)
                elif fact is not None:
                    miss = self._near_miss(code, fact, waiting)
                    if miss is not None:
                        misses.append(miss)
            out.append(Judgement(findings, misses, {n: values[n] for n in self.dates if n in values}))
        self.judged += len(people) * len(self.plans)
        # Every judgement is made in columns (a few rows or programs by the per-record engine): none reuses another.
        self.evaluations = self.judged
        return out

    def _near_miss(self, code: str, fact: str, waiting: int) -> NearMiss | None:
        """The near miss the columns found: the one fact the program waits on, if the resident can be asked it
        (``near_misses.near_miss``), and why, from the criteria still unknown."""
        fact_type = self.catalogue.facts.types.get(fact)
        if fact_type is None or fact_type.derived or fact_type.asked_of != "resident" or fact in self.unasked:
            return None
        program, version = self.versions[code]
        why = self.why.get((code, waiting))
        if why is None:
            labels = [
                node.label
                for i, node in enumerate(version.rule.explained)
                if waiting >> i & 1 and node.label is not None
            ]
            why = self.why[(code, waiting)] = near_misses.explain(program.name, labels)
        return NearMiss(program, fact, why)

    def _near_miss_per_record(self, code: str, read: tuple[str, ...], derived: Derived) -> NearMiss | None:
        self.near_misses_per_record += 1
        if derived.errors:
            key = tuple(_ERROR if n in derived.errors else derived.values.get(n) for n in read)
        else:
            key = tuple(map(derived.values.get, read))
        asked = tuple(derived.asks.get(n, (n,)) for n, v in zip(read, key, strict=True) if v is None)
        near_key = (code, key, asked)
        miss = self.near.get(near_key, _MISSING)
        if miss is _MISSING:
            miss = near_misses.near_miss(self.catalogue, derived.environment(), code, self.unasked)
            self.near[near_key] = miss
        return cast(NearMiss | None, miss)

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


@dataclass(frozen=True)
class Judged:
    """One resident of a page, judged: what was found, and the day their dates next move a fact the rules read."""

    resident_id: uuid.UUID
    judgement: Judgement
    review_on: dt.date


async def judge_page(
    repo: Repository, judge: ProactiveJudge, reviews: ReviewCalendar, residents: Sequence[ResidentRow]
) -> list[Judged]:
    """Judge a page of consenting residents: reads only, so it runs in a read-only unit of work and the rules are
    evaluated while no write transaction waits on them (a write holds the database's writer lock on SQLite)."""
    ids = [r.resident_id for r in residents]
    if not ids:
        return []
    reported = await repo.department_facts_of(ids)
    answers = await repo.resident_answers_of(ids)
    people = [
        FactLayers(
            declared=answers.get(resident.resident_id, {}),
            registry=registry_of(resident),
            reported=reported_of(reported.get(resident.resident_id, [])),
            consents=resident.consents or {},
        )
        for resident in residents
    ]
    judged: list[Judged] = []
    for start in range(0, len(residents), JUDGED_BETWEEN_YIELDS):
        if start:
            await asyncio.sleep(0)  # requests and consumers get the event loop within a long page too
        chunk = slice(start, start + JUDGED_BETWEEN_YIELDS)
        for resident, judgement in zip(residents[chunk], judge.judge_many(people[chunk]), strict=True):
            judged.append(Judged(resident.resident_id, judgement, reviews.next_review(judgement.values)))
    return judged


async def record_page(
    repo: Repository,
    service: Eligibility,
    judge: ProactiveJudge,
    screening_id: uuid.UUID,
    judged: Sequence[Judged],
    now: dt.datetime,
) -> PageCounts:
    """Write what a judged page found, with its events, in the caller's (write) transaction. Who was erased, applied,
    told or asked is read here, in the transaction that writes: a resident erased or an application filed since the
    page was judged is never offered anything. A resident whose facts changed since is marked for the next
    incremental run (``triggers.queue``), so a judgement made a moment earlier is made again."""
    counts = PageCounts(screened=len(judged))
    # A resident erased since the page was read is neither found nor asked anything (resident_data.py).
    erased = await repo.erased_among([j.resident_id for j in judged])
    judged = [j for j in judged if j.resident_id not in erased]
    if not judged:
        return counts
    ids = [j.resident_id for j in judged]
    applied = await repo.applied_programs(ids)
    told = await repo.notified(ids)
    asked = await repo.asked(ids)
    facts = judge.catalogue.facts
    offered: list[tuple[str, str, int | None]] = []  # (resident as 32 hex digits, program, amount)
    # The questions, by what their events share (program, fact, why): (question, resident) per question.
    questions: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[tuple[str, str]]] = {}
    misses: dict[tuple[str, str, tuple[tuple[str, str], ...]], NearMiss] = {}
    review_rows: list[dict[str, Any]] = []
    for one in judged:
        rid, judgement = one.resident_id, one.judgement
        for finding in judgement.findings:
            counts.eligible_found += 1
            code = finding.program.code
            if code in applied.get(rid, ()):
                counts.already_applied += 1
                continue
            if (rid, code) in told:
                counts.already_notified += 1
                continue
            offered.append((rid.hex, code, finding.amount))
        for miss in judgement.near_misses:
            code = miss.program.code
            if code in applied.get(rid, ()) or (rid, code) in told or (rid, code, miss.fact) in asked:
                continue
            asked.add((rid, code, miss.fact))
            key = (code, miss.fact, tuple(sorted(miss.why.items())))
            misses.setdefault(key, miss)
            questions.setdefault(key, []).append((uuid.uuid4().hex, rid.hex))
        review_rows.append({"resident_id": rid, "review_on": one.review_on, "screened_on": judge.as_of})
    # Written in columns, one bulk statement each (``screening.opportunity_rows`` / ``opportunity_events``): the
    # same rows and, byte for byte, the same events as one model per finding (``test_screening_outbox.py``).
    if offered:
        fresh = pl.DataFrame(
            offered, schema={"resident_id": pl.String(), "program_code": pl.String(), "amount": pl.Int64()},
            orient="row",
        )  # fmt: skip
        await repo.add_opportunities(opportunity_rows(fresh, judge.versions, screening_id, now))
        await service.outbox.emit_frames(
            repo.session, opportunity_events(service.outbox, fresh, judge.versions, screening_id, now)
        )
    if questions:
        asked_rows, events = question_rows(service, facts, misses, questions, screening_id, now)
        await bulk_insert(repo.session, QUESTIONS, asked_rows)
        await service.outbox.emit_frames(repo.session, events)
    await repo.record_reviews(review_rows)
    counts.opportunities = len(offered)
    counts.questions = sum(len(q) for q in questions.values())
    return counts


def question_rows(
    service: Eligibility,
    facts: FactCatalogue,
    misses: dict[tuple[str, str, tuple[tuple[str, str], ...]], NearMiss],
    questions: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[tuple[str, str]]],
    screening_id: uuid.UUID,
    now: dt.datetime,
) -> tuple[pl.DataFrame, list[tuple[EnvelopeTemplate, pl.DataFrame]]]:
    """The ``screening_questions`` rows and their ``screening.question_asked`` events, in columns: one envelope
    template per program, fact and reason (what the question says), the question and resident filled in per row."""
    moment = dt.datetime.now(dt.UTC)
    rows: list[pl.DataFrame] = []
    events: list[tuple[EnvelopeTemplate, pl.DataFrame]] = []
    for key, asked in questions.items():
        miss = misses[key]
        code = miss.program.code
        fact_type = facts.types[miss.fact]
        group = pl.DataFrame(asked, schema={"question_id": pl.String(), "resident_id": pl.String()}, orient="row")
        rows.append(
            group.select(
                "question_id",
                pl.lit(screening_id.hex).alias("screening_id"),
                "resident_id",
                pl.lit(code).alias("program_code"),
                pl.lit(miss.fact).alias("fact"),
                pl.lit("open").alias("status"),
                pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias("asked_at"),
                pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("answered_at"),
            )
        )
        sample = ScreeningQuestionAsked(
            question_id=screening_id,  # a hole: each row's own
            screening_id=screening_id,
            resident_id=screening_id,  # a hole: each row's own
            program_code=code,
            program_name=Localized(**miss.program.name),
            department=miss.program.attributes.department,
            fact=facts.missing_fact(miss.fact),
            choices=list(fact_type.enum) if fact_type.enum else None,
            why=Localized(**miss.why),
            asked_at=now,
        )
        template = service.outbox.template(sample, holes=["question_id", "resident_id"], time=moment)
        resident = dashed(pl.col("resident_id"))
        events.append(
            (
                template,
                group.select(
                    resident.alias("subject"), dashed(pl.col("question_id")).alias("question_id"),
                    resident.alias("resident_id"),
                ),
            )
        )  # fmt: skip
    return pl.concat(rows), events


async def screen_page(
    repo: Repository,
    service: Eligibility,
    judge: ProactiveJudge,
    reviews: ReviewCalendar,
    screening_id: uuid.UUID,
    residents: Sequence[ResidentRow],
    now: dt.datetime,
) -> PageCounts:
    """Judge a page and write what it finds, both in the caller's transaction (a run judges in a read-only unit of
    work first: :func:`execute`)."""
    return await record_page(repo, service, judge, screening_id, await judge_page(repo, judge, reviews, residents), now)


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
            # The page is read and judged in a read-only unit of work; only what it found is written, in a short
            # write transaction: the rules never run while the database's writer lock is held.
            async with db.read_session() as session:
                page = await population.next_page(Repository(session), batch)
                if page is None:
                    break
                accounted, residents = page
                judged = await judge_page(Repository(session), judge, reviews, residents)
            async with db.session() as session:
                repo = Repository(session)
                counts = await record_page(repo, service, judge, screening_id, judged, dt.datetime.now(dt.UTC))
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
        if service.screening_metrics is not None:
            service.screening_metrics.failed()
        raise
    row = await _finish(db, screening_id, judge, started, status="completed")
    if service.screening_metrics is not None:
        service.screening_metrics.finished(row)
    return row


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
