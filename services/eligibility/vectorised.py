"""Vectorised judgement: every resident of a fact table against a set of programs, one column per criterion.

The table (``fact_table``) holds the base facts; the derived facts are added as columns; each program's rule version
in force on the day is compiled into Polars expressions (``rules/vectorise.py``) and the whole plan runs as one lazy
query. What the columns cannot decide goes to the per-record engine (``catalogue.evaluate``), the same one a single
application uses: a program the compiler cannot translate (for every row), and the rows at risk of a CEL error or
beyond 64-bit arithmetic (for that program). The result is the same as judging each resident one by one — the
differential tests hold it to that — at a small fraction of the cost.

Outcomes are small integers (:data:`OUTCOME_CODES`); a criterion's status is a Boolean, null for unknown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from services.eligibility.catalogue import Catalogue, RuleVersion
from services.eligibility.fact_table import FALLBACK, ROW, DerivedTable, base_schema, derivation_inputs, derive_table
from services.eligibility.facts import FactLayers
from services.eligibility.rules.nodes import Leaf, Node
from services.eligibility.rules.vectorise import KINDS, Columns, Unvectorisable, VectorRule, compile_rule
from shared.events import CriterionStatus, Outcome

OUTCOME_CODES: dict[Outcome, int] = {
    Outcome.ELIGIBLE: 0,
    Outcome.INELIGIBLE: 1,
    Outcome.NEEDS_INFORMATION: 2,
    Outcome.NEEDS_REVIEW: 3,
}
OUTCOMES = {code: outcome for outcome, code in OUTCOME_CODES.items()}
ELIGIBLE, INELIGIBLE, NEEDS_INFORMATION, NEEDS_REVIEW = (OUTCOME_CODES[o] for o in Outcome)
_STATUS = {CriterionStatus.PASSED: True, CriterionStatus.FAILED: False, CriterionStatus.UNKNOWN: None}


def outcome_column(code: str) -> str:
    return code


def amount_column(code: str) -> str:
    return f"{code}.amount"


def risk_column(code: str) -> str:
    return f"{code}.per_record"


def criterion_column(code: str, node: Node) -> str:
    return f"{code}.{node.id}"


def reads(catalogue: Catalogue, codes: Iterable[str], day: dt.date) -> tuple[list[str], set[str]]:
    """The programs to judge on ``day`` (those ``codes`` name and those they require, required ones first) and every
    fact their rules read."""
    versions = catalogue.versions_on(day)
    order: list[str] = []
    seen: set[str] = set()
    facts: set[str] = set()

    def visit(code: str, trail: frozenset[str]) -> None:
        if code in seen or code in trail or code not in versions:
            return
        rule = versions[code][1].rule
        for ref in sorted(rule.refs):
            visit(ref, trail | {code})
        seen.add(code)
        order.append(code)
        facts.update(rule.facts_read)

    for code in codes:
        visit(code, frozenset())
    return order, facts


@dataclass
class Plan:
    """What judging ``codes`` on ``day`` takes: the programs in the order they must be judged, the base facts to read,
    and the programs the compiler cannot translate (with the reason), judged per record."""

    day: dt.date
    codes: list[str]
    order: list[str]
    facts: set[str]
    base: dict[str, pl.DataType]
    per_record: dict[str, str] = field(default_factory=dict)


def plan(catalogue: Catalogue, codes: Sequence[str], day: dt.date) -> Plan:
    order, facts = reads(catalogue, codes, day)
    derived = {f for f in facts if catalogue.facts[f].derived}
    base_names = {f for f in facts if not catalogue.facts[f].derived} | derivation_inputs(derived)
    return Plan(day, [c for c in codes if c in order], order, facts, base_schema(catalogue.facts, base_names))


def unvectorisable(catalogue: Catalogue, day: dt.date, codes: Sequence[str] | None = None) -> dict[str, str]:
    """The programs (in force on ``day``) the columnar compiler cannot translate, with the reason: ``onestop catalogue
    check`` lists them. Compiled against an empty table, which has every fact's column type."""
    chosen = list(codes) if codes is not None else catalogue.in_force(day)
    p = plan(catalogue, chosen, day)
    empty = pl.DataFrame(schema=p.base)
    judged = Judge(catalogue, p, empty, criteria=False)
    return judged.per_record


class Judge:
    """Judges one table of residents: builds the columns, then calls the per-record engine where it must."""

    def __init__(self, catalogue: Catalogue, plan: Plan, table: pl.DataFrame, *, criteria: bool = True) -> None:
        self.catalogue = catalogue
        self.plan = plan
        self.criteria = criteria
        self.table = table.with_row_index(ROW) if ROW not in table.columns else table
        self.versions = catalogue.versions_on(plan.day)
        self.per_record = dict(plan.per_record)
        derived = {f for f in plan.facts if catalogue.facts[f].derived}
        self.derived: DerivedTable = derive_table(
            self.table.lazy(), catalogue.facts, catalogue.medians, catalogue.districts, plan.day, derived
        )
        self.frame = self.derived.frame.collect()
        self.rules: dict[str, VectorRule] = {}
        self._compile()

    def _columns(self) -> Columns:
        kinds: dict[str, str] = {}
        for name, fact in self.catalogue.facts.types.items():
            kind = KINDS.get(fact.type)
            if kind is not None:
                kinds[name] = kind
        ints = [n for n in self.frame.columns if kinds.get(n) == "int"]
        bounds: dict[str, tuple[float, float]] = {}
        if ints and self.frame.height:
            stats = self.frame.select(
                *[pl.col(n).min().alias(f"{n}.min") for n in ints], *[pl.col(n).max().alias(f"{n}.max") for n in ints]
            ).row(0, named=True)
            for n in ints:
                lo, hi = stats[f"{n}.min"], stats[f"{n}.max"]
                bounds[n] = (lo, hi) if lo is not None else (0, 0)
        else:
            bounds = {n: (0, 0) for n in ints}
        return Columns(kinds, bounds, frozenset(self.frame.columns))

    def _compile(self) -> None:
        columns = self._columns()
        errors = {name: pl.col(column) for name, column in self.derived.failed.items()}

        def outcome_of(code: str) -> tuple[pl.Expr, pl.Expr]:
            if code in self.per_record:
                raise Unvectorisable(f"requires {code}, which is judged per record")
            if code not in self.rules:
                raise Unvectorisable(f"requires {code}, which has no rule in force on {self.plan.day.isoformat()}")
            return pl.col(outcome_column(code)), pl.col(risk_column(code))

        for code in self.plan.order:
            if code in self.per_record:
                continue
            rule = self.versions[code][1].rule
            try:
                self.rules[code] = compile_rule(
                    rule, columns, errors, outcome_of, eligible=ELIGIBLE, ineligible=INELIGIBLE,
                    needs_review=NEEDS_REVIEW, prefix=f"{code}:",
                )  # fmt: skip
            except Unvectorisable as exc:
                self.per_record[code] = str(exc)

    # ------------------------------------------------------------------ running

    def _program_columns(self, code: str, compiled: VectorRule) -> list[pl.Expr]:
        root = compiled.statuses[compiled.rule.root.index]
        failed = compiled.failed | (root.fill_null(False) & compiled.amount_failed)
        outcome = (
            pl.when(failed)
            .then(pl.lit(NEEDS_REVIEW, dtype=pl.UInt8))
            .when(root)
            .then(pl.lit(ELIGIBLE, dtype=pl.UInt8))
            .when(~root)
            .then(pl.lit(INELIGIBLE, dtype=pl.UInt8))
            .otherwise(pl.lit(NEEDS_INFORMATION, dtype=pl.UInt8))
        )
        amount = (
            pl.when(outcome == ELIGIBLE).then(compiled.amount) if compiled.amount is not None else pl.lit(None)
        ).cast(pl.Int64)
        out = [
            outcome.alias(outcome_column(code)),
            amount.alias(amount_column(code)),
            (compiled.risk | pl.col(FALLBACK)).alias(risk_column(code)),
        ]
        if self.criteria:
            for node in compiled.rule.explained:
                out.append(compiled.statuses[node.index].alias(criterion_column(code, node)))
        return out

    def run(self) -> pl.DataFrame:
        """One row per resident (``ROW`` as in the table): each program's outcome code and amount, and with
        ``criteria`` each explained criterion's status."""
        frame = self.frame.lazy()
        depth = max((len(r.stages) for r in self.rules.values()), default=0)
        for k in range(depth):
            frame = frame.with_columns([e for r in self.rules.values() if k < len(r.stages) for e in r.stages[k]])
        done: set[str] = set()
        pending = [c for c in self.plan.order if c in self.rules]
        while pending:
            # Programs whose required programs have their columns already: one stage.
            stage = [c for c in pending if all(r in done for r in self.rules[c].refs.values())]
            if not stage:  # pragma: no cover - reads() orders required programs first and refuses cycles
                raise RuntimeError(f"programs require each other: {pending}")
            frame = frame.with_columns([e for c in stage for e in self._program_columns(c, self.rules[c])])
            done.update(stage)
            pending = [c for c in pending if c not in done]
        keep = [ROW]
        for code in self.plan.order:
            if code in self.rules:
                keep += [outcome_column(code), amount_column(code), risk_column(code)]
                if self.criteria:
                    keep += [criterion_column(code, n) for n in self.rules[code].rule.explained]
        result = frame.select(keep).collect()
        return self._per_record(result)

    # ------------------------------------------------------------------ the per-record engine where it must

    def _per_record(self, result: pl.DataFrame) -> pl.DataFrame:
        codes = [c for c in self.plan.order if c in self.versions]
        vector = [c for c in codes if c in self.rules]
        whole = [c for c in codes if c not in self.rules]
        if vector:
            risky = pl.any_horizontal([pl.col(risk_column(c)) for c in vector])
            rows = result.filter(risky)
        else:
            rows = result.clear()
        if whole:
            rows = result
        if not rows.height and not whole:
            return result.drop([risk_column(c) for c in vector])
        patch_rows = rows.get_column(ROW).to_list()
        risky_by_row: dict[int, set[str]] = {}
        if vector and rows.height:
            flags = rows.select([ROW, *[risk_column(c) for c in vector]]).iter_rows()
            for flagged in flags:
                risky_by_row[flagged[0]] = {c for c, flag in zip(vector, flagged[1:], strict=True) if flag}
        wanted = [(row, whole + sorted(risky_by_row.get(row, ()))) for row in patch_rows]
        judged = self._evaluate_rows(wanted)
        updates: dict[str, tuple[list[int], list[Any]]] = {}
        for (row, chosen), results in zip(wanted, judged, strict=True):
            for code in chosen:
                outcome, amount, statuses = results[code]
                self._put(updates, outcome_column(code), row, OUTCOME_CODES[outcome])
                self._put(updates, amount_column(code), row, amount)
                if self.criteria:
                    for node in self.versions[code][1].rule.explained:
                        self._put(updates, criterion_column(code, node), row, statuses.get(node.id or ""))
        out = result.drop([risk_column(c) for c in vector])
        height = out.height
        new_columns = []
        for code in whole:
            version = self.versions[code][1]
            names: list[tuple[str, pl.DataType]] = [
                (outcome_column(code), pl.UInt8()),
                (amount_column(code), pl.Int64()),
            ]
            if self.criteria:
                names += [(criterion_column(code, n), pl.Boolean()) for n in version.rule.explained]
            for name, dtype in names:
                new_columns.append(pl.Series(name, [None] * height, dtype=dtype))
        if new_columns:
            out = out.with_columns(new_columns)
        replaced = []
        for name, (rows_at, values) in updates.items():
            series: pl.Series = out.get_column(name)
            replaced.append(series.scatter(rows_at, pl.Series(values, dtype=series.dtype)))
        return out.with_columns(replaced) if replaced else out

    @staticmethod
    def _put(updates: dict[str, tuple[list[int], list[Any]]], name: str, row: int, value: Any) -> None:
        rows_at, values = updates.setdefault(name, ([], []))
        rows_at.append(row)
        values.append(value)

    def _evaluate_rows(
        self, wanted: Sequence[tuple[int, Sequence[str]]]
    ) -> list[dict[str, tuple[Outcome, int | None, dict[str, bool | None]]]]:
        """The per-record engine, for each row the programs given, on the row's base facts (as the registry layer:
        where a fact came from does not change an outcome)."""
        if not wanted:
            return []
        names = [n for n in self.plan.base if n in self.table.columns]
        picked = self.table.select([ROW, *names]).filter(pl.col(ROW).is_in([r for r, _ in wanted]))
        by_row = {r[ROW]: r for r in picked.iter_rows(named=True)}
        now = dt.datetime.combine(self.plan.day, dt.time(12), tzinfo=dt.UTC)
        out = []
        for row, codes in wanted:
            values = {k: v for k, v in by_row[row].items() if k != ROW and v is not None}
            env = self.catalogue.environment(self.plan.day, FactLayers(registry=values), now)
            judged: dict[str, tuple[Outcome, int | None, dict[str, bool | None]]] = {}
            for result in self.catalogue.evaluate(env, codes):
                statuses = {c["id"]: _STATUS[c["status"]] for c in result.outcome.criteria}
                judged[result.program.code] = (result.outcome.outcome, result.outcome.amount, statuses)
            out.append(judged)
        return out


def judge(
    catalogue: Catalogue, codes: Sequence[str], day: dt.date, table: pl.DataFrame, *, criteria: bool = True
) -> pl.DataFrame:
    """Judge every row of ``table`` (base facts, one column per fact; see ``fact_table.base_schema``) against
    ``codes`` on ``day``."""
    return Judge(catalogue, plan(catalogue, codes, day), table, criteria=criteria).run()


def version_of(catalogue: Catalogue, code: str, day: dt.date) -> RuleVersion | None:
    found = catalogue.versions_on(day).get(code)
    return found[1] if found is not None else None


def explained_nodes(version: RuleVersion) -> Mapping[str, Node]:
    return {n.id: n for n in version.rule.explained if n.id is not None}


def is_leaf(node: Node) -> bool:
    return isinstance(node, Leaf)


def check_catalogue(catalogue: Catalogue) -> list[tuple[str, int, dt.date, str]]:
    """Every rule version (not superseded) the columnar compiler cannot translate: (program, version, the first
    day it is in force, why). Those programs are screened per record (correct, a few hundred times slower)."""
    found: dict[tuple[str, int], tuple[dt.date, str]] = {}
    days = sorted({v.effective_from for p in catalogue.programs.values() for v in p.versions if not v.superseded})
    for day in days:
        versions = catalogue.versions_on(day)
        for code, reason in unvectorisable(catalogue, day).items():
            version = versions[code][1].version
            found.setdefault((code, version), (day, reason))
    return [(code, version, day, reason) for (code, version), (day, reason) in sorted(found.items())]
