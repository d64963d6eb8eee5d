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
from functools import reduce
from typing import Any

import polars as pl

from services.eligibility.catalogue import Catalogue, RuleVersion
from services.eligibility.fact_table import (
    FALLBACK,
    ROW,
    DerivedTable,
    asked_inputs,
    base_schema,
    column_type,
    derivation_inputs,
    derive_table,
)
from services.eligibility.facts import FactLayers, cel_value
from services.eligibility.rules.evaluate import awaited
from services.eligibility.rules.nodes import Expression, Leaf, Node
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


def near_miss_column(code: str) -> str:
    """The one fact a program waiting on information asks for (null when it asks for none or several)."""
    return f"{code}.near_miss"


def waiting_column(code: str) -> str:
    """The explained criteria still unknown, as bits (bit i: ``rule.explained[i]``), for a near miss's reason."""
    return f"{code}.waiting"


def near_miss_per_record_column(code: str) -> str:
    """Whether the near miss must be told per record: the columns cannot say which facts the rule waits on."""
    return f"{code}.near_miss_per_record"


def _node_column(code: str, node: Node) -> str:
    return f"{code}:#{node.index}"


def _awaited_column(code: str, node: Node) -> str:
    return f"{code}:#{node.index}.awaited"


def _absorbing(expression: Expression) -> bool:
    """Whether which of its missing facts the criterion waits on is for CEL to tell (``evaluate.awaited``)."""
    return expression.absorbs and bool(expression.probes)


# A mask of explained criteria fits in an unsigned 64-bit column: a rule explaining more is told per record.
_MAX_WAITING = 64


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

    def __init__(
        self,
        catalogue: Catalogue,
        plan: Plan,
        table: pl.DataFrame,
        *,
        criteria: bool = True,
        near_misses: bool = False,
        awaited_memo: dict[int, dict[tuple[Any, ...], int]] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.plan = plan
        self.criteria = criteria
        self.near_misses = near_misses
        # Which facts an absorbing criterion waits on, per distinct tuple of its facts' values (``_with_awaited``):
        # ``awaited_memo`` may be shared by the judges of one run.
        self._awaited: set[str] = set()
        self._awaited_memo: dict[int, dict[tuple[Any, ...], int]] = awaited_memo if awaited_memo is not None else {}
        self.table = table.with_row_index(ROW) if ROW not in table.columns else table
        self.versions = catalogue.versions_on(plan.day)
        self.per_record = dict(plan.per_record)
        derived = {f for f in plan.facts if catalogue.facts[f].derived}
        # A fact missing for every row is read as a typed null, as a fact without a column is: what reads it folds
        # into a constant instead of a pass over the rows (in a registry, many department facts are missing for a
        # whole page). The same result: every expression is element-wise.
        blank = _blank(self.table) - {ROW}
        self.derived: DerivedTable = derive_table(
            self.table.lazy().drop(sorted(blank)), catalogue.facts, catalogue.medians, catalogue.districts, plan.day,
            derived,
        )  # fmt: skip
        self.frame = self.derived.frame.collect()
        # The columns the rules read: the derived facts missing for every row are left out too.
        self.present = frozenset(self.frame.columns) - _blank(self.frame)
        self.rules: dict[str, VectorRule] = {}
        self._fallback = pl.col(FALLBACK) if self.frame.get_column(FALLBACK).any() else pl.lit(False)
        self._compile()

    def _columns(self) -> Columns:
        kinds: dict[str, str] = {}
        for name, fact in self.catalogue.facts.types.items():
            kind = KINDS.get(fact.type)
            if kind is not None:
                kinds[name] = kind
        ints = [n for n in self.frame.columns if kinds.get(n) == "int" and n in self.present]
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
        return Columns(kinds, bounds, self.present)

    def _compile(self) -> None:
        columns = self._columns()
        # A derivation that failed on no row needs no test of it in every criterion reading the fact.
        errors = {
            name: pl.col(column) for name, column in self.derived.failed.items() if self.frame.get_column(column).any()
        }

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
            (compiled.risk | self._fallback).alias(risk_column(code)),
        ]
        if self.criteria:
            for node in compiled.rule.explained:
                out.append(compiled.statuses[node.index].alias(criterion_column(code, node)))
        if self.near_misses:
            # Every node's status as a column of its own: the near-miss columns read them many times.
            out += [compiled.statuses[n.index].alias(_node_column(code, n)) for n in compiled.rule.postorder]
        return out

    def run(self) -> pl.DataFrame:
        """One row per resident (``ROW`` as in the table): each program's outcome code and amount, with
        ``criteria`` each explained criterion's status, and with ``near_misses`` each program's near miss."""
        frame = (self._with_awaited(self.frame) if self.near_misses else self.frame).lazy()
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
        if self.near_misses:
            frame = frame.with_columns(self._near_miss_columns())
        keep = [ROW]
        for code in self.plan.order:
            if code in self.rules:
                keep += [outcome_column(code), amount_column(code), risk_column(code)]
                if self.criteria:
                    keep += [criterion_column(code, n) for n in self.rules[code].rule.explained]
                if self.near_misses:
                    keep += [near_miss_column(code), waiting_column(code), near_miss_per_record_column(code)]
        result = frame.select(keep).collect()
        return self._per_record(result)

    # ------------------------------------------------------------------ near misses (near_misses.py) in columns

    def _with_awaited(self, frame: pl.DataFrame) -> pl.DataFrame:
        """For each criterion that can absorb a missing fact (``&&``, ``||``, ``?:``), which of its facts it waits on,
        as bits (bit i: ``expression.facts[i]``): where two or more are missing, as ``evaluate.awaited`` finds them
        with CEL and stand-ins — once per distinct tuple of the values of its facts, kept for the whole run — and
        where fewer are, the missing ones."""
        added: list[pl.Series] = []
        self._awaited = set()
        for code in self.plan.order:
            if code not in self.rules:
                continue
            for leaf in self.rules[code].rule.leaves:
                expression = leaf.expression
                if expression is None or not _absorbing(expression) or len(expression.facts) > _MAX_WAITING:
                    continue
                facts = expression.facts
                names = [f for f in facts if f in frame.columns]
                missing_bits = pl.sum_horizontal(
                    [
                        (pl.col(f).is_null() if f in frame.columns else pl.lit(True)).cast(pl.UInt64)
                        * pl.lit(1 << i, dtype=pl.UInt64)
                        for i, f in enumerate(facts)
                    ]
                )
                # (beside the row index, so that a constant — none of its facts has a column — is one per row)
                bits = frame.select(ROW, missing_bits.alias("bits")).get_column("bits")
                doubtful = frame.select(
                    ROW,
                    (pl.sum_horizontal([(pl.col(f).is_null() if f in frame.columns else pl.lit(True)).cast(pl.UInt32)
                                        for f in facts]) >= 2).alias("doubtful"),
                ).get_column("doubtful")  # fmt: skip
                rows = doubtful.arg_true()
                if len(rows):
                    seen = self._awaited_memo.setdefault(id(expression), {})
                    values = frame.select(pl.col(names).gather(rows)).rows()
                    found = []
                    for known in values:
                        key = tuple(tuple(v) if isinstance(v, list) else v for v in known)
                        mask = seen.get(key)
                        if mask is None:
                            present = {n: cel_value(v) for n, v in zip(names, known, strict=True) if v is not None}
                            waits = awaited(expression, present, [f for f in facts if f not in present])
                            mask = seen[key] = sum(1 << i for i, f in enumerate(facts) if f in waits)
                        found.append(mask)
                    bits = bits.scatter(rows, pl.Series(found, dtype=pl.UInt64))
                name = _awaited_column(code, leaf)
                added.append(bits.alias(name))
                self._awaited.add(name)
        return frame.with_columns(added) if added else frame

    def _near_miss_columns(self) -> list[pl.Expr]:
        """Per program, the facts its rule waits on, as the explained per-record evaluation collects them
        (``RuleRun.collect_missing``): descending from the root through unknown nodes only, an unknown criterion
        waits on the facts it reads that are missing — a missing derived fact on the base facts it asks for instead
        (``fact_table.asked_inputs``) — and one requiring a program on what that program waits on. Kept as one
        Boolean column per base fact ("asked"), so the union of several criteria is exact; a program waits on one
        fact where exactly one is asked. Where CEL itself must tell which of two or more missing facts an absorbing
        criterion waits on (``RuleRun._awaited`` runs it with stand-ins), or the row was judged per record, the
        near miss is told per record."""
        columns = self.present

        def col(name: str) -> pl.Expr:
            return pl.col(name) if name in columns else pl.lit(None, dtype=column_type(self.catalogue.facts, name))

        def missing(name: str) -> pl.Expr:
            return pl.col(name).is_null() if name in columns else pl.lit(True)

        asked_instead: dict[str, list[tuple[str, pl.Expr]]] = {}
        waits: dict[str, tuple[dict[str, pl.Expr], pl.Expr]] = {}
        out: list[pl.Expr] = []
        for code in self.plan.order:
            if code not in self.rules:
                continue
            compiled = self.rules[code]
            asked: dict[int, dict[str, pl.Expr]] = {}
            unsure: dict[int, pl.Expr] = {}
            for node in compiled.rule.postorder:
                unknown = pl.col(_node_column(code, node)).is_null()
                found: dict[str, list[pl.Expr]] = {}
                doubts: list[pl.Expr] = []
                if isinstance(node, Leaf) and node.ref is not None:
                    required, doubt = waits[node.ref]
                    for fact, flag in required.items():
                        found.setdefault(fact, []).append(flag)
                    doubts.append(doubt | pl.col(risk_column(node.ref)))
                elif isinstance(node, Leaf):
                    assert node.expression is not None
                    expression = node.expression
                    awaited_column = _awaited_column(code, node)
                    for i, fact in enumerate(expression.facts):
                        # Whether the criterion waits on the fact: it is missing (and, when two or more of its
                        # facts are, CEL reaches it with stand-ins: ``_with_awaited``).
                        if awaited_column in self._awaited:
                            waits_on = (pl.col(awaited_column) & pl.lit(1 << i, dtype=pl.UInt64)) != 0
                        else:
                            waits_on = missing(fact)
                        if not self.catalogue.facts[fact].derived:
                            found.setdefault(fact, []).append(waits_on)
                            continue
                        failed = self.derived.failed.get(fact)
                        broken = pl.col(failed) if failed is not None else pl.lit(False)
                        # A derivation that failed is asked for as itself (it is not among ``asks``).
                        found.setdefault(fact, []).append(waits_on & broken)
                        if fact not in asked_instead:
                            asked_instead[fact] = asked_inputs(fact, col)
                        for base, needed in asked_instead[fact]:
                            found.setdefault(base, []).append(waits_on & ~broken & needed & missing(base))
                    if _absorbing(expression) and len(expression.facts) > _MAX_WAITING:
                        count = pl.sum_horizontal([missing(f).cast(pl.UInt32) for f in expression.facts])
                        doubts.append(count >= 2)
                else:
                    for child in node.children:
                        for fact, flag in asked[child.index].items():
                            found.setdefault(fact, []).append(flag)
                        doubts.append(unsure[child.index])
                asked[node.index] = {f: unknown & reduce(lambda a, b: a | b, flags) for f, flags in found.items()}
                unsure[node.index] = unknown & _any_of(doubts)
            root = compiled.rule.root.index
            waits[code] = (asked[root], unsure[root])
            flags = list(asked[root].items())
            count = pl.sum_horizontal([f.cast(pl.UInt32) for _, f in flags]) if flags else pl.lit(0)
            one = pl.coalesce([pl.when(f).then(pl.lit(name)) for name, f in flags]) if flags else pl.lit(None)
            waiting_on_information = pl.col(outcome_column(code)) == NEEDS_INFORMATION
            explained = compiled.rule.explained
            mask: pl.Expr = pl.lit(0, dtype=pl.UInt64)
            if explained and len(explained) <= _MAX_WAITING:
                mask = pl.sum_horizontal(
                    [
                        pl.col(_node_column(code, n)).is_null().cast(pl.UInt64) * pl.lit(1 << i, dtype=pl.UInt64)
                        for i, n in enumerate(explained)
                    ]
                )
            per_record = unsure[root] | pl.col(risk_column(code)) | pl.lit(len(explained) > _MAX_WAITING)
            out += [
                pl.when(waiting_on_information & (count == 1)).then(one).otherwise(pl.lit(None, dtype=pl.String))
                .cast(pl.String).alias(near_miss_column(code)),
                mask.alias(waiting_column(code)),
                (waiting_on_information & per_record).alias(near_miss_per_record_column(code)),
            ]  # fmt: skip
        return out

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
                if self.near_misses:
                    self._put(updates, near_miss_column(code), row, None)
                    self._put(updates, near_miss_per_record_column(code), row, outcome == Outcome.NEEDS_INFORMATION)
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
            if self.near_misses:
                names += [
                    (near_miss_column(code), pl.String()),
                    (waiting_column(code), pl.UInt64()),
                    (near_miss_per_record_column(code), pl.Boolean()),
                ]
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


def _blank(frame: pl.DataFrame) -> set[str]:
    """The columns missing (null) on every row of ``frame`` (none, when it has no rows)."""
    if not frame.height:
        return set()
    counts = frame.null_count().row(0, named=True)
    return {name for name, count in counts.items() if count == frame.height}


def _any_of(exprs: list[pl.Expr]) -> pl.Expr:
    if not exprs:
        return pl.lit(False)
    return reduce(lambda a, b: a | b, exprs)


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
