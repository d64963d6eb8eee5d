"""Polars lazy frames against DuckDB SQL for the vectorised screening (a measurement, not a test), as recorded in
services/eligibility/rules/vectorise.py: one million rows, 30 programs of 5 criteria each (sums, integer division,
conditionals whose unknown condition stays unknown, 10 % missing values), each criterion's status, each program's
outcome (Kleene AND) and amount as columns, the result materialised (Arrow for DuckDB).

DuckDB is not a dependency of the platform; run this with it added for the run:
``.venv/bin/uv run --with duckdb python bench/columnar_engines.py``."""

from __future__ import annotations

import os
import random
import time
from typing import Any

import polars as pl

N = 1_000_000
PROGRAMS, CRITERIA, COLUMNS = 30, 5, 20


def table() -> pl.DataFrame:
    base = pl.select(pl.int_range(N).alias("i"))
    frame = base.select([(pl.col("i").hash(seed=k) % 5_000_000).cast(pl.Int64).alias(f"f{k}") for k in range(COLUMNS)])
    return frame.with_columns(
        [pl.when((pl.col(c).hash(seed=99) % 10) == 0).then(None).otherwise(pl.col(c)).alias(c) for c in frame.columns]
    )


def programs() -> list[list[tuple[int, int, int, bool]]]:
    rng = random.Random(2)
    out = []
    for _ in range(PROGRAMS):
        leaves = []
        for _ in range(CRITERIA):
            a, b = rng.sample(range(COLUMNS), 2)
            leaves.append((a, b, rng.randint(0, 5_000_000), rng.random() < 0.3))
        out.append(leaves)
    return out


def polars_leaf(a: int, b: int, k: int, conditional: bool) -> pl.Expr:
    if conditional:
        c = pl.col(f"f{a}") > k
        value = pl.when(c.is_null()).then(None).when(c).then(pl.col(f"f{b}") * 2).otherwise(pl.col(f"f{b}") // 3)
        return value <= k
    return (pl.col(f"f{a}") + pl.col(f"f{b}") * 12 // 100) <= k


def run_polars(frame: pl.DataFrame, plan: list[list[tuple[int, int, int, bool]]]) -> Any:
    leaves = [polars_leaf(*x).alias(f"p{i}_l{j}") for i, ls in enumerate(plan) for j, x in enumerate(ls)]
    outs = []
    for i, ls in enumerate(plan):
        outcome = pl.col(f"p{i}_l0")
        for j in range(1, len(ls)):
            outcome = outcome & pl.col(f"p{i}_l{j}")
        outs += [
            outcome.alias(f"p{i}"),
            pl.when(outcome.fill_null(False)).then(pl.col(f"f{i % COLUMNS}") * 10).alias(f"a{i}"),
        ]
    return frame.lazy().with_columns(leaves).with_columns(outs).drop(frame.columns).collect()


def sql_leaf(a: int, b: int, k: int, conditional: bool) -> str:
    if conditional:
        return f"(CASE WHEN f{a} IS NULL THEN NULL WHEN f{a} > {k} THEN f{b}*2 ELSE f{b}//3 END) <= {k}"
    return f"(f{a} + f{b}*12//100) <= {k}"


def run_duckdb(connection: Any, plan: list[list[tuple[int, int, int, bool]]]) -> Any:
    inner, outer = [], []
    for i, ls in enumerate(plan):
        for j, x in enumerate(ls):
            inner.append(f"{sql_leaf(*x)} AS p{i}_l{j}")
            outer.append(f"p{i}_l{j}")
        both = " AND ".join(f"p{i}_l{j}" for j in range(len(ls)))
        outer += [f"({both}) AS p{i}", f"CASE WHEN ({both}) THEN f{i % COLUMNS}*10 END AS a{i}"]
    query = f"SELECT {', '.join(outer)} FROM (SELECT *, {', '.join(inner)} FROM frame)"  # noqa: S608
    return connection.sql(query).to_arrow_table()


def main() -> None:
    frame, plan = table(), programs()
    print(f"{N:,} rows, {PROGRAMS} programs x {CRITERIA} criteria; load average {os.getloadavg()[0]:.1f}")
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        run_polars(frame, plan)
        timings.append(time.perf_counter() - started)
    print(f"Polars {pl.__version__} lazy frames: {', '.join(f'{t:.2f}' for t in timings)} s")
    try:
        import duckdb  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("DuckDB: not installed (see the docstring)")
        return
    connection = duckdb.connect()
    connection.register("frame", frame.to_arrow())
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        run_duckdb(connection, plan)
        timings.append(time.perf_counter() - started)
    print(f"DuckDB {duckdb.__version__} SQL: {', '.join(f'{t:.2f}' for t in timings)} s")


if __name__ == "__main__":
    main()
