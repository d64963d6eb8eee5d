"""Screening a population a page at a time through the vectorised path: each page of consenting residents is read
from the registry projection as columns (``Repository.registry_page``), resolved into the registry table
(``fact_table.registry_table``), judged in columns (``vectorised.Judge``), and handed to the caller with the
(resident, program) pairs found eligible and those already applied for or told of. The runs that start by
themselves (``screening_runs.py``) read and resolve their pages through the same ``read_page`` and
``RegistryPage.table``, and find their eligible pairs with the same ``eligible_pairs``.

A page is large (``screening_page_size``, 200,000 by default): the columns do the same work for a thousand residents
or a hundred thousand, so fewer, larger pages are cheaper; memory grows with the page (about 1 GB for 200,000
residents with every proactive program's outcome)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import polars as pl
from sqlalchemy.ext.asyncio import AsyncSession

from services.eligibility.catalogue import Catalogue
from services.eligibility.fact_table import ROW, registry_table
from services.eligibility.repository import Repository
from services.eligibility.vectorised import ELIGIBLE, Judge, Plan, amount_column, outcome_column, plan

ONLY_BATCH = 10_000
T = TypeVar("T")


def with_rows(facts: pl.DataFrame, ids: Sequence[str]) -> pl.DataFrame:
    """The department facts of ``Repository.registry_page`` (one row per fact), each with its resident's row in
    ``ids`` (``__resident``; facts of residents not in ``ids`` are left out)."""
    rows_of = pl.DataFrame({"resident_id": list(ids)}, schema={"resident_id": pl.String()}).with_row_index("__resident")
    return facts.join(rows_of, on="resident_id", how="inner").select(
        "__resident", "id", "name", "value", "department", "observed_at", "valid_until"
    )


@dataclass
class RegistryPage:
    """A page of consenting residents as read (``read_page``): the residents, their department facts (one row per
    fact) and what they declared in answer to screening questions, all as columns; ``ids`` the residents' ids (32 hex
    digits) in order."""

    ids: list[str]
    people: pl.DataFrame
    facts: pl.DataFrame
    answers: pl.DataFrame

    def table(self, catalogue: Catalogue, names: Iterable[str], now: dt.datetime) -> pl.DataFrame:
        """The page's base facts ``names``, resolved in columns (``fact_table.registry_table``), one row per
        resident in ``ids``' order."""
        return registry_table(self.people, with_rows(self.facts, self.ids), catalogue.facts, names, now, self.answers)


async def read_page(
    repo: Repository,
    after: str | None,
    limit: int,
    only: Sequence[uuid.UUID] | None = None,
    *,
    due: dt.date | None = None,
) -> RegistryPage:
    """Up to ``limit`` consenting residents after ``after`` (``only``: of these alone; ``due``: whose review day has
    come), with their department facts and answers: a few queries, no value a Python object of its own."""
    people, facts = await repo.registry_page(after, limit, only, due=due)
    ids: list[str] = people.get_column("resident_id").to_list()
    if ids:
        first, last = uuid.UUID(ids[0]), uuid.UUID(ids[-1])
        # Residents spread over every id (named ones, or those due) have their own answers read, not the range's.
        sparse = only is not None or due is not None
        answers = await repo.declared_answers(first, last, [uuid.UUID(i) for i in ids] if sparse else None)
    else:
        answers = pl.DataFrame(schema={"resident_id": pl.String(), "name": pl.String(), "value": pl.String()})
    return RegistryPage(ids, people, facts, answers)


def eligible_pairs(judged: pl.DataFrame, codes: Iterable[str]) -> pl.DataFrame:
    """The (resident_id, program_code, amount) found eligible in ``judged`` (``vectorised.Judge``'s outcomes with
    a ``resident_id`` column), program by program."""
    return pl.concat(
        [
            judged.filter(pl.col(outcome_column(c)) == ELIGIBLE).select(
                "resident_id", pl.lit(c).alias("program_code"), pl.col(amount_column(c)).alias("amount")
            )
            for c in codes
        ]
        or [pl.DataFrame(schema={"resident_id": pl.String(), "program_code": pl.String(), "amount": pl.Int64()})]
    )


def pairs(rows: Sequence[Any], columns: Sequence[str] = ("resident_id", "program_code")) -> pl.DataFrame:
    """Rows of (resident, ...) as columns, the resident as 32 hex digits."""
    return pl.DataFrame(
        [(r[0].hex if isinstance(r[0], uuid.UUID) else str(r[0]).replace("-", ""), *r[1:]) for r in rows],
        schema=dict.fromkeys(columns, pl.String()),
        orient="row",
    )


@dataclass
class ScreenedPage:
    """One page: how many residents, every program's outcome per resident (``judged``, in ``ids``' order; outcome
    codes of ``vectorised.OUTCOME_CODES``), and the eligible pairs (resident_id, program_code, amount) split into
    those to tell and those already applied for or told of."""

    ids: list[str]  # 32 hex digits each
    judged: pl.DataFrame
    found: pl.DataFrame
    applied: pl.DataFrame
    told: pl.DataFrame
    fresh: pl.DataFrame

    @property
    def residents(self) -> int:
        return len(self.ids)


def split_found(found: pl.DataFrame, applied: pl.DataFrame, told: pl.DataFrame) -> tuple[pl.DataFrame, ...]:
    """``found`` as (already applied for, already told of, fresh): each pair in exactly one. The fresh pairs by
    resident and program, the order of the opportunities' unique index: pages come in the order of residents' ids,
    so the index grows at its end instead of taking each row on a random page."""
    keys = ["resident_id", "program_code"]
    was_applied = found.join(applied, on=keys, how="semi")
    rest = found.join(was_applied, on=keys, how="anti")
    was_told = rest.join(told, on=keys, how="semi")
    return was_applied, was_told, rest.join(was_told, on=keys, how="anti").sort(keys)


Reads = Callable[[], AbstractAsyncContextManager[AsyncSession]]


async def ahead(items: AsyncIterator[T], depth: int = 1) -> AsyncIterator[T]:
    """``items``, produced in a task of their own up to ``depth`` ahead of the consumer: a stage of a pipeline (the
    next page read while this one is judged, the next judged while this one is written). An error in the task is
    raised here, in order; leaving early stops the task."""
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue(maxsize=depth)

    async def produce() -> None:
        try:
            async for item in items:
                await queue.put((True, item))
        except Exception as exc:
            await queue.put((False, exc))
            return
        await queue.put((False, None))

    task = asyncio.create_task(produce())
    try:
        while True:
            more, item = await queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def screened_pages(
    repo: Repository,
    catalogue: Catalogue,
    codes: Sequence[str],
    as_of: dt.date,
    now: dt.datetime,
    *,
    page_size: int,
    max_residents: int,
    only: Sequence[uuid.UUID] | None = None,
    reads: Reads | None = None,
) -> AsyncIterator[ScreenedPage]:
    """The pages of consenting residents (``only``: of these alone), judged. Judging runs in a worker thread (the
    columns release the interpreter). With ``reads`` (read-only units of work on connections of their own) the
    pages are a pipeline: the next page is read while this one is judged, and judged while the caller writes this
    one's findings on ``repo``; without, each is read on ``repo`` when the one before was written."""
    chosen: Plan = plan(catalogue, codes, as_of)

    async def read_pages() -> AsyncIterator[tuple[RegistryPage, bool]]:
        after: str | None = None
        screened = 0
        # Residents named one by one are read a batch at a time (a query names at most ONLY_BATCH of them).
        batches = [sorted(only)[i : i + ONLY_BATCH] for i in range(0, len(only), ONLY_BATCH)] if only else []
        while screened < max_residents:
            batch: Sequence[uuid.UUID] | None = None
            if only is not None:
                if not batches:
                    return
                batch = batches.pop(0)
            limit = min(page_size, max_residents - screened)
            if reads is None:
                page = await read_page(repo, None if batch is not None else after, limit, batch)
            else:
                async with reads() as session:
                    page = await read_page(Repository(session), None if batch is not None else after, limit, batch)
            if not page.ids:
                if batch is not None:
                    continue
                return
            yield page, batch is not None
            screened += len(page.ids)
            after = page.ids[-1]

    def judge(page: RegistryPage) -> tuple[pl.DataFrame, pl.DataFrame]:
        judged = Judge(catalogue, chosen, page.table(catalogue, chosen.base, now), criteria=False).run()
        with_ids = judged.with_columns(pl.Series("resident_id", page.ids)).drop(ROW)
        return with_ids, eligible_pairs(with_ids, chosen.codes)

    async def judged_pages() -> AsyncIterator[tuple[RegistryPage, bool, pl.DataFrame, pl.DataFrame]]:
        pages = ahead(read_pages()) if reads is not None else read_pages()
        async for page, named in pages:
            yield (page, named, *await asyncio.to_thread(judge, page))

    stages = ahead(judged_pages()) if reads is not None else judged_pages()
    async for page, named, with_ids, found in stages:
        page_ids = [uuid.UUID(i) for i in page.ids]
        applied_rows, told_rows = await repo.judged_pairs(page_ids[0], page_ids[-1], page_ids if named else None)
        applied, told, fresh = split_found(found, pairs(applied_rows), pairs(told_rows))
        yield ScreenedPage(page.ids, with_ids, found, applied, told, fresh)
