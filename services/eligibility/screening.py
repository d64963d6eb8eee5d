"""Proactive screening: find residents (who consented to it) eligible for programs they never applied to.

The bulk path is vectorised (``population.py``): residents are read a large page at a time with their department
facts, applications and earlier findings in a few queries, resolved into a table of facts, and every program's rule is
judged for the whole page in columns (``vectorised.py``), with the per-record engine only for what columns cannot
decide. :class:`Screener` (one resident at a time, once per distinct profile) is the per-record path, kept for
judging residents one by one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from services.eligibility.catalogue import Catalogue, Evaluation, Program, RuleVersion
from services.eligibility.determinations import Eligibility
from services.eligibility.facts import FactLayers, derive
from services.eligibility.models import ResidentRow, ScreeningRow
from services.eligibility.population import Reads, screened_pages
from services.eligibility.repository import Repository, registry_of, reported_of
from services.eligibility.schemas import ScreeningIn, ScreeningOut
from services.eligibility.screening_records import requested_programs, screening_out
from shared.events import EligibilityOpportunity, Localized, Outcome
from shared.outbox import EnvelopeTemplate, Outbox, dashed
from shared.problems import NotFound

_ERROR = object()


@dataclass(frozen=True)
class Finding:
    program: Program
    version: int
    amount: int | None
    period: Any


def facts_read(catalogue: Catalogue, codes: Sequence[str], day: dt.date) -> tuple[str, ...]:
    """Every fact the rules in force on ``day`` read, through the programs they require too."""
    read: set[str] = set()
    seen: set[str] = set()
    stack = list(codes)
    while stack:
        code = stack.pop()
        if code in seen:
            continue
        seen.add(code)
        program = catalogue.programs.get(code)
        version = program.version_on(day) if program is not None else None
        if version is None:
            continue
        read |= version.rule.facts_read
        stack.extend(version.rule.refs)
    return tuple(sorted(read))


class Screener:
    """Judges one population against a fixed set of programs on one date.

    A program's outcome depends only on the values of the facts its rule reads (through the programs it requires
    too), so each program keeps the outcome per distinct tuple of those values: a resident whose tuple was judged
    before costs a dictionary lookup, and the CEL context is built only for a resident with something new."""

    def __init__(self, catalogue: Catalogue, codes: Sequence[str], as_of: dt.date, now: dt.datetime) -> None:
        self.catalogue = catalogue
        self.as_of = as_of
        self.now = now
        self.plans: list[tuple[str, tuple[str, ...], dict[tuple[Any, ...], Finding | None]]] = []
        for code in codes:
            program = catalogue.programs.get(code)
            if program is not None and program.version_on(as_of) is not None:
                self.plans.append((code, facts_read(catalogue, [code], as_of), {}))
        self.judged = 0  # residents x programs
        self.evaluations = 0  # programs actually evaluated

    def findings(self, layers: FactLayers) -> list[Finding]:
        catalogue = self.catalogue
        derived = derive(
            catalogue.facts,
            catalogue.medians,
            self.as_of,
            layers,
            self.now,
            explain=False,
            districts=catalogue.districts,
        )
        values, errors = derived.values, derived.errors
        evaluation: Evaluation | None = None
        found: list[Finding] = []
        for code, read, memo in self.plans:
            # None marks a missing fact (no fact is ever None); an error is told apart from a missing fact.
            if errors:
                key = tuple(_ERROR if n in errors else values.get(n) for n in read)
            else:
                key = tuple(map(values.get, read))
            try:
                finding = memo[key]
            except KeyError:
                if evaluation is None:
                    evaluation = Evaluation(catalogue, derived.environment(), explain=False)
                result = evaluation.result(code)
                self.evaluations += 1
                finding = None
                if result is not None and result.outcome.outcome == Outcome.ELIGIBLE:
                    amount = result.outcome.amount
                    spec = result.version.spec
                    period = spec.amount.period if spec.amount is not None and amount is not None else None
                    finding = Finding(result.program, result.version.version, amount, period)
                memo[key] = finding
            if finding is not None:
                found.append(finding)
        self.judged += len(self.plans)
        return found


def layers_of(row: ResidentRow, reported: Sequence[Any]) -> FactLayers:
    return FactLayers(registry=registry_of(row), reported=reported_of(reported), consents=row.consents or {})


async def run_screening(
    repo: Repository,
    service: Eligibility,
    *,
    codes: Sequence[str],
    as_of: dt.date,
    actor: str,
    now: dt.datetime,
    batch_size: int,
    max_residents: int,
    residents: Sequence[uuid.UUID] | None = None,
    reads: Reads | None = None,
) -> ScreeningRow:
    """Screen every consenting resident (``residents``: these alone, e.g. those whose facts changed) for ``codes`` on
    ``as_of``, through the vectorised path; the opportunities and their events are written in this transaction.
    ``reads``: read-only units of work beside it (``Database.read_session``), on which the next page is read while
    this one is judged and written (``population.screened_pages``)."""
    catalogue = await service.store.get(repo)
    row = ScreeningRow(
        screening_id=uuid.uuid4(),
        requested_by=actor,
        as_of=as_of,
        programs=list(codes),
        status="running",
        residents_screened=0,
        judgements=0,
        evaluations=0,
        eligible_found=0,
        already_applied=0,
        already_notified=0,
        opportunities=0,
        started_at=now,
    )
    repo.session.add(row)
    await repo.session.flush()
    started = time.perf_counter()
    outbox = service.outbox
    versions = catalogue.versions_on(as_of)
    judged_codes = [c for c in codes if c in versions]
    pages = screened_pages(
        repo,
        catalogue,
        codes,
        as_of,
        now,
        page_size=service.settings.screening_page_size,
        max_residents=max_residents,
        only=residents,
        reads=reads,
    )
    async for page in pages:
        row.eligible_found += page.found.height
        row.already_applied += page.applied.height
        row.already_notified += page.told.height
        if page.fresh.height:
            # The page's opportunities and their events, one bulk statement each (their rows made ``batch_size`` at a
            # time), in this transaction: the same guarantee as Outbox.emit, without a round trip or an object per
            # event; one envelope template per program for the whole page.
            fresh = page.fresh
            await repo.add_opportunities(opportunity_rows(fresh, versions, row.screening_id, now), piece=batch_size)
            events = opportunity_events(outbox, fresh, versions, row.screening_id, now)
            await outbox.emit_frames(repo.session, events, piece=batch_size)
            row.opportunities += fresh.height
        row.residents_screened += page.residents
        row.judgements += page.residents * len(judged_codes)
        await asyncio.sleep(0)  # let the event loop breathe between pages
    # Every judgement is made in columns (a few rows or programs by the per-record engine): none reuses another.
    row.evaluations = row.judgements
    row.status = "completed"
    row.finished_at = dt.datetime.now(dt.UTC)
    row.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return row


def opportunity_rows(
    fresh: pl.DataFrame, versions: Mapping[str, tuple[Program, RuleVersion]], screening_id: uuid.UUID, now: dt.datetime
) -> pl.DataFrame:
    """The ``opportunities`` rows of found pairs (resident_id as 32 hex digits, program_code, amount), as columns."""
    return fresh.select(
        pl.lit(screening_id.hex).alias("screening_id"),
        "resident_id",
        "program_code",
        pl.col("program_code")
        .replace_strict({c: v.version for c, (_, v) in versions.items()}, return_dtype=pl.Int32)
        .alias("rule_version"),
        pl.col("amount").cast(pl.Int64),
        pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias("found_at"),
    )


def opportunity_events(
    outbox: Outbox,
    fresh: pl.DataFrame,
    versions: Mapping[str, tuple[Program, RuleVersion]],
    screening_id: uuid.UUID,
    now: dt.datetime,
) -> list[tuple[EnvelopeTemplate, pl.DataFrame]]:
    """The ``eligibility.opportunity`` events of found pairs, in columns: one envelope template per program and
    whether an amount is known (what the event says of the program, its department and the amount's period), the
    resident and the amount filled in per row — the same envelopes, field for field, as one
    ``EligibilityOpportunity`` per pair through ``Outbox.emit_many`` (``test_screening_outbox.py``)."""
    moment = dt.datetime.now(dt.UTC)
    resident = dashed(pl.col("resident_id"))
    parts: list[tuple[EnvelopeTemplate, pl.DataFrame]] = []
    keyed = fresh.with_columns(pl.col("amount").is_not_null().alias("__amount"))
    for (code, with_amount), group in keyed.group_by("program_code", "__amount", maintain_order=True):
        program, version = versions[str(code)]
        sample = EligibilityOpportunity(
            screening_id=screening_id,
            resident_id=screening_id,  # a hole: each row's own
            program_code=str(code),
            program_name=Localized(**program.name),
            department=program.attributes.department,
            amount=0 if with_amount else None,  # a hole where known
            amount_period=version.amount_period if with_amount else None,
            found_at=now,
        )
        holes = ["resident_id", "amount"] if with_amount else ["resident_id"]
        template = outbox.template(sample, holes=holes, time=moment)
        columns = [resident.alias("subject"), resident.alias("resident_id")]
        if with_amount:
            columns.append(pl.col("amount").cast(pl.Int64).cast(pl.String).alias("amount"))
        parts.append((template, group.select(columns)))
    return parts


async def start_screening(
    repo: Repository,
    service: Eligibility,
    request: ScreeningIn,
    *,
    actor: str,
    now: dt.datetime,
    reads: Reads | None = None,
) -> ScreeningOut:
    """Screen by the programs a request names, or every proactive program in force on its date (default: today)."""
    as_of, codes = await requested_programs(repo, service, request)
    metrics = service.screening_metrics
    try:
        row = await run_screening(
            repo,
            service,
            codes=codes,
            as_of=as_of,
            actor=actor,
            now=now,
            batch_size=service.settings.screening_batch_size,
            max_residents=service.settings.screening_max_residents,
            reads=reads,
        )
    except Exception:
        if metrics is not None:
            metrics.failed()
        raise
    if metrics is not None:
        metrics.finished(row)
    return screening_out(row)


async def screening_report(repo: Repository, screening_id: uuid.UUID) -> ScreeningOut:
    row = await repo.screening(screening_id)
    if row is None:
        raise NotFound(f"No screening {screening_id}.")
    return screening_out(row)
