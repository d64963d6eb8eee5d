"""Screening a population a page at a time through the vectorised path: each page of consenting residents is read
from the registry projection as columns (``Repository.registry_page``), resolved into the registry table
(``fact_table.registry_table``), judged in columns (``vectorised.Judge``), and handed to the caller with the
(resident, program) pairs found eligible and those already applied for or told of.

A page is large (``screening_page_size``, 200,000 by default): the columns do the same work for a thousand residents
or a hundred thousand, so fewer, larger pages are cheaper; memory grows with the page (about 1 GB for 200,000
residents with every proactive program's outcome)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from services.eligibility.catalogue import Catalogue
from services.eligibility.fact_table import ROW, registry_table
from services.eligibility.repository import Repository
from services.eligibility.vectorised import ELIGIBLE, Judge, Plan, amount_column, outcome_column, plan

ONLY_BATCH = 10_000


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
    """``found`` as (already applied for, already told of, fresh): each pair in exactly one."""
    keys = ["resident_id", "program_code"]
    was_applied = found.join(applied, on=keys, how="semi")
    rest = found.join(was_applied, on=keys, how="anti")
    was_told = rest.join(told, on=keys, how="semi")
    return was_applied, was_told, rest.join(was_told, on=keys, how="anti")


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
) -> AsyncIterator[ScreenedPage]:
    """The pages of consenting residents (``only``: of these alone), judged."""
    chosen: Plan = plan(catalogue, codes, as_of)
    judged_codes = chosen.codes
    after: str | None = None
    screened = 0
    # Residents named one by one are read a batch at a time (a query names at most ONLY_BATCH of them).
    batches = [sorted(only)[i : i + ONLY_BATCH] for i in range(0, len(only), ONLY_BATCH)] if only is not None else []
    while screened < max_residents:
        batch: Sequence[uuid.UUID] | None = None
        if only is not None:
            if not batches:
                return
            batch = batches.pop(0)
        page = await read_page(
            repo, None if batch is not None else after, min(page_size, max_residents - screened), batch
        )
        if not page.ids:
            if batch is not None:
                continue
            return
        ids = page.ids
        judged = Judge(catalogue, chosen, page.table(catalogue, chosen.base, now), criteria=False).run()
        with_ids = judged.with_columns(pl.Series("resident_id", ids)).drop(ROW)
        found = eligible_pairs(with_ids, judged_codes)
        page_ids = [uuid.UUID(i) for i in ids]
        applied_rows, told_rows = await repo.judged_pairs(page_ids[0], page_ids[-1], page_ids if batch else None)
        applied, told, fresh = split_found(found, pairs(applied_rows), pairs(told_rows))
        yield ScreenedPage(ids, with_ids, found, applied, told, fresh)
        screened += len(ids)
        after = ids[-1]
