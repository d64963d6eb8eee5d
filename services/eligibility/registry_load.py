"""Filling eligibility's registry projection from a synthetic registry (``onestop registry load``): each resident as
``resident.updated`` and ``consent.changed`` would have left them (the ``residents`` row), and the department facts
as ``facts.reported`` would have (one report per resident and department). Bulk: a chunk of residents at a time,
through the driver's own bulk path — ``executemany`` on SQLite, ``COPY`` on PostgreSQL — in one transaction.
The values are written as SQLAlchemy writes them (a UUID as 32 hex digits on SQLite, timestamps in UTC), so the
service reads them as if its consumers had."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import polars as pl
from sqlalchemy import Index, Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.eligibility.models import DepartmentFactRow, ResidentRow
from services.eligibility.synthetic import DEPARTMENT_FACTS

CHUNK = 100_000
RESIDENT_COLUMNS = ["resident_id", "registry_version", "birth_date", "district_code", "household", "vulnerability",
                    "preferred_language", "registry_updated_at", "consent_version", "consents", "consent_changed_at",
                    "proactive_screening"]  # fmt: skip
FACT_COLUMNS = ["report_id", "resident_id", "name", "value", "department", "source", "observed_at", "valid_until",
                "reported_at"]  # fmt: skip
DEPARTMENTS = sorted(set(DEPARTMENT_FACTS.values()))


class RegistryNotEmpty(RuntimeError):
    """The projection holds residents already (load with ``replace`` to start again)."""


@dataclass
class Loaded:
    residents: int
    facts: int
    seconds: float


def _json_text(column: str, dtype: pl.DataType) -> pl.Expr:
    """A fact value as ``FactCatalogue.coerce_json`` stores it (JSON text)."""
    if dtype == pl.Boolean:
        return pl.when(pl.col(column)).then(pl.lit("true")).otherwise(pl.lit("false"))
    if dtype == pl.String:
        return pl.format('"{}"', pl.col(column))
    return pl.col(column).cast(pl.String)


def _resident_rows(chunk: pl.DataFrame) -> pl.DataFrame:
    household = pl.format("[{}]", pl.col("household").list.eval(pl.element().struct.json_encode()).list.join(","))
    vulnerability = pl.format("[{}]", pl.col("vulnerability").list.eval(pl.format('"{}"', pl.element())).list.join(","))
    consents = pl.format("{{{}}}", pl.col("consents").list.eval(pl.format('"{}": true', pl.element())).list.join(", "))
    return chunk.select(
        "resident_id",
        pl.lit(1).alias("registry_version"),
        "birth_date",
        "district_code",
        household.alias("household"),
        vulnerability.alias("vulnerability"),
        "preferred_language",
        pl.lit(1).alias("consent_version"),
        consents.alias("consents"),
        "proactive_screening",
    )


def _fact_rows(chunk: pl.DataFrame) -> pl.DataFrame:
    parts = []
    for name, department in DEPARTMENT_FACTS.items():
        if name not in chunk.columns:
            continue
        # One report per resident and department: its id is the resident's with the department in its first byte.
        index = DEPARTMENTS.index(department)
        parts.append(
            chunk.filter(pl.col(name).is_not_null()).select(
                pl.format(
                    "{}{}", pl.lit(f"{index:02x}"), pl.col("resident_id").str.replace_all("-", "").str.slice(2)
                ).alias("report_id"),
                "resident_id",
                pl.lit(name).alias("name"),
                _json_text(name, chunk.schema[name]).alias("value"),
                pl.lit(department).alias("department"),
                pl.lit(f"synthetic:{department}").alias("source"),
            )
        )
    return pl.concat(parts)


async def load_registry(
    session: AsyncSession, path: Path, *, now: dt.datetime, replace: bool = False, chunk: int = CHUNK
) -> Loaded:
    """Load ``path`` (``residents.parquet`` of ``onestop registry generate``) into the session's database. Refuses a
    projection that holds residents already unless ``replace`` (which empties residents and department facts)."""
    import time

    started = time.perf_counter()
    existing = await session.scalar(select(func.count()).select_from(ResidentRow))
    if existing and not replace:
        raise RegistryNotEmpty(f"the registry projection holds {existing} residents already")
    if replace:
        await session.execute(delete(DepartmentFactRow))
        await session.execute(delete(ResidentRow))
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    postgres = connection.dialect.name == "postgresql"
    # The department facts' indexes are built once after the load (sorted, in one pass) rather than kept up to date
    # fact by fact: tens of millions of inserts in random resident order into a B-tree larger than the cache.
    indexes = [i for i in cast(Table, DepartmentFactRow.__table__).indexes if _on(i, connection.dialect.name)]
    for index in indexes:
        await connection.run_sync(index.drop)
    # In the order of residents' ids, each resident's facts together: a screening reads its pages by id range, and a
    # page's residents and facts are then neighbours on disk (on PostgreSQL a page's facts were spread over most of
    # the table's pages, read again for every page).
    frame = pl.read_parquet(path).sort("resident_id")
    total = frame.height
    residents = facts = 0
    for offset in range(0, total, chunk):
        part = frame.slice(offset, chunk)
        people = _resident_rows(part)
        reported = _fact_rows(part).sort("resident_id", maintain_order=True)
        if postgres:
            await _copy(driver, people, reported, now)
        else:
            await _executemany(driver, people, reported, now)
        residents += people.height
        facts += reported.height
    for index in indexes:
        await connection.run_sync(index.create)
    return Loaded(residents, facts, time.perf_counter() - started)


def _on(index: Index, dialect: str) -> bool:
    only = getattr(index, "_ddl_if", None)
    return only is None or only.dialect in (None, dialect)


def _sqlite_moment(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


async def _executemany(driver: Any, people: pl.DataFrame, reported: pl.DataFrame, now: dt.datetime) -> None:
    moment = _sqlite_moment(now)
    rows = people.select(
        pl.col("resident_id").str.replace_all("-", ""),
        "registry_version",
        pl.col("birth_date").dt.strftime("%Y-%m-%d"),
        "district_code",
        "household",
        "vulnerability",
        "preferred_language",
        pl.lit(moment).alias("registry_updated_at"),
        "consent_version",
        "consents",
        pl.lit(moment).alias("consent_changed_at"),
        pl.col("proactive_screening").cast(pl.Int8),
    ).rows()
    marks = ", ".join("?" * len(RESIDENT_COLUMNS))
    await driver.executemany(f"INSERT INTO residents ({', '.join(RESIDENT_COLUMNS)}) VALUES ({marks})", rows)  # noqa: S608
    facts = reported.select(
        "report_id",
        pl.col("resident_id").str.replace_all("-", ""),
        "name",
        "value",
        "department",
        "source",
        pl.lit(moment).alias("observed_at"),
        pl.lit(None, dtype=pl.String).alias("valid_until"),
        pl.lit(moment).alias("reported_at"),
    ).rows()
    marks = ", ".join("?" * len(FACT_COLUMNS))
    await driver.executemany(f"INSERT INTO department_facts ({', '.join(FACT_COLUMNS)}) VALUES ({marks})", facts)  # noqa: S608


async def _copy(driver: Any, people: pl.DataFrame, reported: pl.DataFrame, now: dt.datetime) -> None:
    moment = now.astimezone(dt.UTC)
    chosen = people.select(
        "resident_id", "registry_version", "birth_date", "district_code", "household", "vulnerability",
        "preferred_language", "consent_version", "consents", "proactive_screening",
    )  # fmt: skip
    rows = [
        (uuid.UUID(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], moment, r[7], r[8], moment, r[9])
        for r in chosen.iter_rows()
    ]
    await driver.copy_records_to_table("residents", records=rows, columns=RESIDENT_COLUMNS)
    facts = [
        (uuid.UUID(report), uuid.UUID(rid), name, value, department, source, moment, None, moment)
        for report, rid, name, value, department, source in reported.iter_rows()
    ]
    await driver.copy_records_to_table("department_facts", records=facts, columns=FACT_COLUMNS)
