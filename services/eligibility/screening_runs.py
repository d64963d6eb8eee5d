"""Screenings that run by themselves, a page at a time, with their progress on the record.

``screening.py`` answers an administrator's call in one request. The runs here are started by the scheduler
(``triggers.py``) — a full run when the catalogue changes, a daily run for the residents whose dates crossed a
boundary, an incremental run for the residents whose facts changed — or by an administrator asking for a run in the
background (``POST /v1/screenings`` with ``background``). Each commits page by page: its row in ``screenings`` shows
how far it got (``residents_screened`` of ``residents_total``) while it runs, and a run that fails or whose process
dies leaves everything it wrote whole, the rest to the next run. Who a run screens, its row opened and shown, are
``screenings.py`` (no Polars there: this module is imported once a run has someone to screen).

Per resident and proactive program a run finds one of three things:
- eligible, never applied for and never offered: an opportunity (``eligibility.opportunity``), as ``screening.py``;
- a *near miss*: the rule waits on exactly one fact the resident can tell (``near_misses.py``): one question
  (``screening.question_asked``), not an offer;
- anything else: nothing.
It also records, per resident, the day their dates next move a fact the rules read (``triggers.ReviewCalendar``).

A page is read as columns and judged in columns as the administrator's run does (``population.read_page``,
``ProactiveJudge``), and what it finds is written in columns (one bulk statement per table).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import polars as pl
from sqlalchemy import Table, update

from services.eligibility import near_misses, vectorised
from services.eligibility.catalogue import Catalogue
from services.eligibility.determinations import Eligibility
from services.eligibility.fact_table import ROW
from services.eligibility.facts import Derived, FactCatalogue, FactLayers, derive, resolve
from services.eligibility.models import ScreeningQuestionRow, ScreeningRow
from services.eligibility.near_misses import NearMiss
from services.eligibility.population import RegistryPage, ahead, eligible_pairs, pairs, split_found
from services.eligibility.repository import Repository
from services.eligibility.screening import Finding, facts_read, opportunity_events, opportunity_rows
from services.eligibility.screening_records import Population, finish
from services.eligibility.triggers import ReviewCalendar
from shared.db import Database, bulk_insert
from shared.events import Localized, ScreeningQuestionAsked
from shared.outbox import EnvelopeTemplate, dashed, event_ids

QUESTIONS = cast(Table, ScreeningQuestionRow.__table__)
_ERROR = object()
_MISSING = object()


# ---------------------------------------------------------------------------------------------- judging


@dataclass
class Judgement:
    findings: list[Finding]
    near_misses: list[NearMiss]


@dataclass
class JudgedPage:
    """A page judged (:meth:`ProactiveJudge.judge_page`), in columns, each resident as 32 hex digits: ``found`` the
    eligible pairs (resident_id, program_code, amount), ``near`` the near misses (resident_id, miss: the index of
    the ``NearMiss`` in ``ProactiveJudge.misses``), ``reviews`` each resident's next review day (resident_id,
    review_on). ``sparse``: the residents are spread over every id (named, or due), not one range of ids."""

    ids: list[str]
    found: pl.DataFrame
    near: pl.DataFrame
    reviews: pl.DataFrame
    sparse: bool
    judgements: int  # residents x programs


class ProactiveJudge:
    """Judges residents against the proactive programs on one date, a page at a time, in columns: the page's base
    facts resolved in columns (``RegistryPage.table``: a consented department report, then the registry, then the
    resident's answers, as ``facts.resolve``), and every program's rule judged for the whole table by the
    vectorised engine (``vectorised.Judge``: derived facts and criteria as column expressions, the per-record engine
    for a program its compiler cannot translate — ``onestop catalogue check`` lists them — and for rows at risk of
    a CEL error). The administrator's run (``population.screened_pages``) reads and judges its pages the same way.
    The differential tests (``test_vectorised.py``, ``test_near_miss_columns.py``) hold it to the per-record
    engine. A near miss is told in columns too (``Judge`` with ``near_misses``: the one fact a program waiting on
    information asks for, and which criteria wait on it); where the columns cannot tell (a row or program judged per
    record) it is told per record, explained, as ``near_misses.near_miss`` does — that verdict kept per distinct
    tuple of the facts the rule reads and of what each missing fact would be asked as."""

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
        self.near: dict[tuple[Any, ...], Any] = {}
        self.awaited: dict[int, dict[tuple[Any, ...], int]] = {}
        self.read = frozenset(name for _, read in self.plans for name in read)
        # Every near miss told in this run, once each: a question's row and event say what its NearMiss says.
        self.misses: list[NearMiss] = []
        self._miss_index: dict[tuple[str, str, tuple[tuple[str, str], ...]], int] = {}
        self._column_misses: dict[tuple[str, str, int], int | None] = {}
        self.judged = 0
        self.evaluations = 0
        # Near misses told per record (the columns could not): how often the slow path was taken.
        self.near_misses_per_record = 0

    def judge_page(self, page: RegistryPage, reviews: ReviewCalendar, *, sparse: bool = False) -> JudgedPage:
        """Judge a page as read: its table resolved and judged in columns, and each resident's next review day.
        CPU only (no database): a run calls it in a worker thread, so the event loop serves requests meanwhile."""
        names = set(self.plan.base) | set(reviews.date_facts)
        table = page.table(self.catalogue, names, self.now)
        found, near = self.judge_table(table)
        review_on = reviews.next_reviews(table)
        reviewed = pl.DataFrame({"resident_id": page.ids, "review_on": review_on})
        return JudgedPage(page.ids, found, near, reviewed, sparse, table.height * len(self.plans))

    def judge_table(self, table: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Every resident of ``table`` (resident_id and base facts, a column each) against every program: the
        eligible pairs (resident_id, program_code, amount) and the near misses (resident_id, miss)."""
        judged = vectorised.Judge(
            self.catalogue, self.plan, table, criteria=False, near_misses=True, awaited_memo=self.awaited
        ).run()
        judged = judged.with_columns(table.get_column("resident_id"))
        codes = [code for code, _ in self.plans]
        found = eligible_pairs(judged, codes)
        near: list[pl.DataFrame] = []
        per_record: list[tuple[int, str]] = []
        for code in codes:
            waiting = judged.filter(pl.col(vectorised.outcome_column(code)) == vectorised.NEEDS_INFORMATION)
            if not waiting.height:
                continue
            by_record = pl.col(vectorised.near_miss_per_record_column(code)).fill_null(False)
            told = waiting.filter(~by_record & pl.col(vectorised.near_miss_column(code)).is_not_null())
            if told.height:
                kinds = told.select(
                    "resident_id",
                    pl.col(vectorised.near_miss_column(code)).alias("fact"),
                    pl.col(vectorised.waiting_column(code)).alias("waiting"),
                )
                # One NearMiss per distinct (fact, criteria waiting): a handful per program, however many residents.
                distinct = kinds.select("fact", "waiting").unique(maintain_order=True)
                index = [self._near_miss(code, fact, waiting) for fact, waiting in distinct.iter_rows()]
                mapped = distinct.with_columns(pl.Series("miss", index, dtype=pl.Int64()))
                near.append(
                    kinds.join(mapped, on=["fact", "waiting"], how="left")
                    .filter(pl.col("miss").is_not_null())
                    .select("resident_id", "miss")
                )
            per_record += [(row, code) for row in waiting.filter(by_record).get_column(ROW).to_list()]
        if per_record:
            near.append(self._near_misses_per_record(table, per_record))
        judged_near = pl.concat(near) if near else pl.DataFrame(schema={"resident_id": pl.String(), "miss": pl.Int64()})
        self.judged += table.height * len(self.plans)
        # Every judgement is made in columns (a few rows or programs by the per-record engine): none reuses another.
        self.evaluations = self.judged
        return found, judged_near

    def judge_many(self, people: Sequence[FactLayers]) -> list[Judgement]:
        """Every resident of ``people`` (in order) against every program, through :meth:`judge_table` (their layers
        resolved one by one, ``facts.resolve``): what the differential tests give the columns."""
        if not people:
            return []
        facts = self.catalogue.facts
        base = self.plan.base
        resolved = [resolve(facts, layers, self.now)[0] for layers in people]
        table = pl.DataFrame([{n: v.get(n) for n in base} for v in resolved], schema=base, orient="row")
        ids = [f"{i:032x}" for i in range(len(people))]
        found, near = self.judge_table(table.with_columns(pl.Series("resident_id", ids)))
        out = [Judgement([], []) for _ in people]
        for rid, code, amount in found.iter_rows():
            program, version = self.versions[code]
            spec = version.spec
            period = spec.amount.period if spec.amount is not None and amount is not None else None
            out[int(rid, 16)].findings.append(Finding(program, version.version, amount, period))
        for rid, miss in near.iter_rows():
            out[int(rid, 16)].near_misses.append(self.misses[miss])
        order = {code: at for at, (code, _) in enumerate(self.plans)}
        for judgement in out:
            judgement.findings.sort(key=lambda f: order[f.program.code])
            judgement.near_misses.sort(key=lambda m: order[m.program.code])
        return out

    def _index(self, miss: NearMiss | None) -> int | None:
        if miss is None:
            return None
        key = (miss.program.code, miss.fact, tuple(sorted(miss.why.items())))
        found = self._miss_index.get(key)
        if found is None:
            found = self._miss_index[key] = len(self.misses)
            self.misses.append(miss)
        return found

    def _near_miss(self, code: str, fact: str, waiting: int) -> int | None:
        """The near miss the columns found: the one fact the program waits on, if the resident can be asked it
        (``near_misses.near_miss``), and why, from the criteria still unknown."""
        key = (code, fact, waiting)
        if key in self._column_misses:
            return self._column_misses[key]
        fact_type = self.catalogue.facts.types.get(fact)
        miss = None
        if not (fact_type is None or fact_type.derived or fact_type.asked_of != "resident" or fact in self.unasked):
            program, version = self.versions[code]
            labels = [
                node.label
                for i, node in enumerate(version.rule.explained)
                if waiting >> i & 1 and node.label is not None
            ]
            miss = NearMiss(program, fact, near_misses.explain(program.name, labels))
        index = self._column_misses[key] = self._index(miss)
        return index

    def _near_misses_per_record(self, table: pl.DataFrame, wanted: Sequence[tuple[int, str]]) -> pl.DataFrame:
        """Near misses of rows or programs judged per record, told per record: the row's base facts as the
        registry layer (as ``vectorised.Judge`` judges such rows: where a fact came from changes no outcome)."""
        catalogue = self.catalogue
        names = [n for n in self.plan.base if n in table.columns]
        rows = sorted({row for row, _ in wanted})
        picked = table.with_row_index(ROW).filter(pl.col(ROW).is_in(rows)).select(ROW, "resident_id", *names)
        by_row = {r[ROW]: r for r in picked.iter_rows(named=True)}
        derived: dict[int, Derived] = {}
        out: list[tuple[str, int]] = []
        read_of = dict(self.plans)
        for row, code in wanted:
            values = by_row[row]
            if row not in derived:
                facts = {k: v for k, v in values.items() if k not in (ROW, "resident_id") and v is not None}
                derived[row] = derive(
                    catalogue.facts, catalogue.medians, self.as_of, FactLayers(registry=facts), self.now,
                    explain=False, districts=catalogue.districts,
                )  # fmt: skip
            index = self._index(self._near_miss_per_record(code, read_of[code], derived[row]))
            if index is not None:
                out.append((values["resident_id"], index))
        return pl.DataFrame(out, schema={"resident_id": pl.String(), "miss": pl.Int64()}, orient="row")

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


# ---------------------------------------------------------------------------------------------- one page


@dataclass
class PageCounts:
    screened: int = 0
    eligible_found: int = 0
    already_applied: int = 0
    already_notified: int = 0
    opportunities: int = 0
    questions: int = 0


async def record_page(
    repo: Repository,
    service: Eligibility,
    judge: ProactiveJudge,
    screening_id: uuid.UUID,
    judged: JudgedPage,
    now: dt.datetime,
) -> PageCounts:
    """Write what a judged page found, with its events, in the caller's (write) transaction. Who was erased, applied,
    told or asked is read here, in the transaction that writes: a resident erased or an application filed since the
    page was judged is never offered anything. A resident whose facts changed since is marked for the next
    incremental run (``triggers.queue``), so a judgement made a moment earlier is made again."""
    counts = PageCounts(screened=len(judged.ids))
    if not judged.ids:
        return counts
    page_ids = [uuid.UUID(i) for i in judged.ids]
    found, near, reviews = judged.found, judged.near, judged.reviews
    # A resident erased since the page was read is neither found nor asked anything (resident_data.py).
    erased = await repo.erased_among(page_ids)
    if erased:
        gone = pl.col("resident_id").is_in([e.hex for e in erased])
        found, near, reviews = found.filter(~gone), near.filter(~gone), reviews.filter(~gone)
        page_ids = [i for i in page_ids if i not in erased]
        if not page_ids:
            return counts
    only = page_ids if judged.sparse else None
    applied_rows, told_rows = await repo.judged_pairs(page_ids[0], page_ids[-1], only)
    applied, told = pairs(applied_rows), pairs(told_rows)
    asked = pairs(await repo.asked_between(page_ids[0], page_ids[-1], only), ("resident_id", "program_code", "fact"))
    was_applied, was_told, fresh = split_found(found, applied, told)
    counts.eligible_found, counts.already_applied, counts.already_notified = (
        found.height,
        was_applied.height,
        (was_told.height),
    )
    # Written in columns, one bulk statement each (``screening.opportunity_rows`` / ``opportunity_events``): the
    # same rows and, byte for byte, the same events as one model per finding (``test_screening_outbox.py``).
    if fresh.height:
        await repo.add_opportunities(opportunity_rows(fresh, judge.versions, screening_id, now))
        await service.outbox.emit_frames(
            repo.session, opportunity_events(service.outbox, fresh, judge.versions, screening_id, now)
        )
    # A question for a program the resident applied for or was told of, or already asked, is not asked again.
    kinds = pl.DataFrame(
        [(i, m.program.code, m.fact) for i, m in enumerate(judge.misses)],
        schema={"miss": pl.Int64(), "program_code": pl.String(), "fact": pl.String()},
        orient="row",
    )
    keys = ["resident_id", "program_code"]
    questions = (
        near.join(kinds, on="miss", how="left")
        .join(applied, on=keys, how="anti")
        .join(told, on=keys, how="anti")
        .join(asked, on=[*keys, "fact"], how="anti")
    )
    if questions.height:
        asked_rows, events = question_rows(service, judge.catalogue.facts, judge.misses, questions, screening_id, now)
        await bulk_insert(repo.session, QUESTIONS, asked_rows)
        await service.outbox.emit_frames(repo.session, events)
    await repo.record_reviews(
        [
            {"resident_id": uuid.UUID(rid), "review_on": day, "screened_on": judge.as_of}
            for rid, day in reviews.iter_rows()
        ]
    )
    counts.opportunities = fresh.height
    counts.questions = questions.height
    return counts


def question_rows(
    service: Eligibility,
    facts: FactCatalogue,
    misses: Sequence[NearMiss],
    questions: pl.DataFrame,
    screening_id: uuid.UUID,
    now: dt.datetime,
) -> tuple[pl.DataFrame, list[tuple[EnvelopeTemplate, pl.DataFrame]]]:
    """The ``screening_questions`` rows and their ``screening.question_asked`` events, in columns: one envelope
    template per near miss (program, fact and why: what the question says), the question and resident filled in
    per row. ``questions``: resident_id and miss (the index in ``misses``)."""
    moment = dt.datetime.now(dt.UTC)
    numbered = questions.with_columns(event_ids(questions.height).str.replace_all("-", "").alias("question_id"))
    rows = numbered.select(
        "question_id",
        pl.lit(screening_id.hex).alias("screening_id"),
        "resident_id",
        "program_code",
        "fact",
        pl.lit("open").alias("status"),
        pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias("asked_at"),
        pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("answered_at"),
    )
    events: list[tuple[EnvelopeTemplate, pl.DataFrame]] = []
    resident = dashed(pl.col("resident_id"))
    for (at,), group in numbered.group_by("miss", maintain_order=True):
        miss = misses[int(cast(int, at))]
        fact_type = facts.types[miss.fact]
        sample = ScreeningQuestionAsked(
            question_id=screening_id,  # a hole: each row's own
            screening_id=screening_id,
            resident_id=screening_id,  # a hole: each row's own
            program_code=miss.program.code,
            program_name=Localized(**miss.program.name),
            department=miss.program.attributes.department,
            fact=facts.missing_fact(miss.fact),
            choices=list(fact_type.enum) if fact_type.enum else None,
            why=Localized(**miss.why),
            asked_at=now,
        )
        template = service.outbox.template(sample, holes=["question_id", "resident_id"], time=moment)
        events.append(
            (
                template,
                group.select(
                    resident.alias("subject"), dashed(pl.col("question_id")).alias("question_id"),
                    resident.alias("resident_id"),
                ),
            )
        )  # fmt: skip
    return rows, events


async def screen_page(
    repo: Repository,
    service: Eligibility,
    judge: ProactiveJudge,
    reviews: ReviewCalendar,
    screening_id: uuid.UUID,
    page: RegistryPage,
    now: dt.datetime,
) -> PageCounts:
    """Judge a page read before and write what it finds, in the caller's transaction (a run judges outside any
    transaction, between a read-only one and a write: :func:`execute`)."""
    return await record_page(repo, service, judge, screening_id, judge.judge_page(page, reviews), now)


# ---------------------------------------------------------------------------------------------- a run


async def execute(
    db: Database,
    service: Eligibility,
    screening_id: uuid.UUID,
    population: Population,
    *,
    started: float,
    renew: Any = None,
) -> ScreeningRow:
    """Run a screening whose row is running, with residents to screen (``screenings.execute``), page by page (each
    page one transaction), to its end. ``renew`` (an awaitable factory) is called between pages to keep the
    scheduler's lease. A failure marks the run failed and is raised again; what earlier pages wrote stays."""
    batch = service.settings.screening_batch_size
    async with db.session() as session:
        repo = Repository(session)
        row = await repo.screening(screening_id)
        assert row is not None
        catalogue = await service.store.get(repo)
        as_of, codes = row.as_of, list(row.programs)
    judge = ProactiveJudge(catalogue, codes, as_of, dt.datetime.now(dt.UTC), service.settings.screening_unasked_facts)
    reviews = ReviewCalendar(catalogue, as_of, judge.read)

    async def judged_pages() -> AsyncIterator[tuple[int, JudgedPage]]:
        while True:
            # The page is read in a read-only unit of work and judged outside any (in a worker thread: the columns
            # release the interpreter, so requests and consumers go on meanwhile); only what it found is written, in
            # a short write transaction: the rules never run while the database's writer lock is held.
            async with db.read_session() as session:
                page = await population.next_page(Repository(session), batch)
            if page is None:
                return
            accounted, registry = page
            yield accounted, await judge_in_thread(judge, registry, reviews, sparse=population.sparse)

    # The next page read and judged while this one is written, where reading it does not depend on this one's
    # writes (an incremental run's next page is the marks this one's clears) and reads have connections of their own.
    pages = ahead(judged_pages()) if population.reads_ahead and db.reads() is not None else judged_pages()
    try:
        async for accounted, judged in pages:
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
                        judgements=ScreeningRow.judgements + judged.judgements,
                        evaluations=ScreeningRow.evaluations + judged.judgements,
                    )
                    .execution_options(synchronize_session=False)
                )
            if renew is not None:
                await renew()
            await asyncio.sleep(0)  # let the service's requests and consumers in between pages
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        await finish(db, service, screening_id, started, judge.judged, judge.evaluations, status="failed", error=error)
        raise
    return await finish(db, service, screening_id, started, judge.judged, judge.evaluations, status="completed")


async def judge_in_thread(
    judge: ProactiveJudge, page: RegistryPage, reviews: ReviewCalendar, *, sparse: bool
) -> JudgedPage:
    return await asyncio.to_thread(judge.judge_page, page, reviews, sparse=sparse)
