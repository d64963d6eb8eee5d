"""Compiling a rule version into columnar expressions (Polars) over a table of residents' facts: the same criteria
tree as ``evaluate.py``, judged for a whole population at once.

Every criterion becomes a Boolean column where null means *unknown*: Polars' ``&``, ``|`` and ``~`` follow Kleene's
three-valued logic, as the per-record engine's groups do, and a comparison or a sum with a missing fact is null as a
CEL expression with an undefined variable is unknown. A conditional (``c ? a : b``) with an unknown condition is
unknown, never the ``else`` branch (``when`` would take it: the compiled form tests for null first).

What a column cannot say, the per-record engine still decides: for each program the compiled form carries a *risk*
mask, the rows on which CEL could raise an error rather than give a value (an integer overflow, a division by zero).
Which operand's error CEL reports, and whether ``&&`` absorbs it, is for CEL to say; those rows (none, on any real
registry: the bounds are worked out from the population's own minimum and maximum of each column) go to the
per-record engine. A construct this compiler does not know (a macro, a list index, a double, a duration ...) raises
:class:`Unvectorisable` naming it, and the whole program is judged per record (``onestop catalogue check`` lists such
programs).

Why Polars and not DuckDB: measured on this 2-core machine (load average about 9 from other work, Polars 2.1.0,
DuckDB 2.0.1), one million rows, 30 programs of 5 criteria (comparisons, sums, conditionals, 10 % nulls), each
criterion's status, each program's outcome and amount as columns: Polars lazy frames 0.5-1.6 s (1.1-3.6 s in the
noisiest runs), DuckDB SQL over the same Arrow table 3.8-5.0 s with the criteria in a subquery (7.7-11 s without),
Arrow result included. Polars was 4-7x faster and keeps every expression a Python object we compose, with no SQL text
to build. ``bench/columnar_engines.py`` repeats the measurement.
"""

from __future__ import annotations

import ast
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, reduce
from typing import Any

import polars as pl

from services.eligibility.rules.nodes import CompiledRule, Expression, Group, Leaf, Node
from services.eligibility.rules.syntax import Syntax
from services.eligibility.rules.syntax import parse as parse_syntax

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# A list of literals up to this long is tested as equalities, a longer one by lookup.
_SHORT_LIST = 8
# An arithmetic result this close to the 64-bit limits is checked row by row (as a float: a margin for its rounding).
_NEAR_LIMIT = 9.0e18

# The column kind of each fact type; a fact of another type (number, list) is read by no vectorised expression.
KINDS = {"integer": "int", "boolean": "bool", "string": "string", "date": "date"}
DTYPES: dict[str, pl.DataType] = {"int": pl.Int64(), "bool": pl.Boolean(), "string": pl.String(), "date": pl.Date()}


class Unvectorisable(ValueError):
    """A rule (or expression) the columnar compiler cannot translate faithfully; the message says what."""


Bounds = tuple[float, float]


@dataclass
class Compiled:
    """A compiled sub-expression: its column, its kind, bounds for an integer, and the rows where CEL could raise."""

    expr: pl.Expr
    kind: str
    bounds: Bounds | None = None
    risks: list[pl.Expr] = field(default_factory=list)
    constant: Any = None
    is_constant: bool = False


@dataclass(frozen=True)
class Columns:
    """What the compiler knows of the table: each fact's kind and the bounds of each integer column (from the data;
    a column absent from the table is all missing)."""

    kinds: Mapping[str, str]
    bounds: Mapping[str, Bounds]
    present: frozenset[str]

    def fact(self, name: str) -> Compiled:
        kind = self.kinds.get(name)
        if kind is None:
            raise Unvectorisable(f"reads {name}, a fact of a type no column holds")
        if name not in self.present:
            return Compiled(pl.lit(None, dtype=DTYPES[kind]), kind, (0, 0))
        return Compiled(pl.col(name), kind, self.bounds.get(name) if kind == "int" else None)


def _literal(node: Syntax) -> Compiled:
    text = node.op
    if text in ("true", "false"):
        value = text == "true"
        return Compiled(pl.lit(value), "bool", constant=value, is_constant=True)
    if text == "null":
        raise Unvectorisable("a null literal")
    if text[:1].isdigit():
        lower = text.lower()
        if lower.endswith("u") or "." in text or ("e" in lower and not lower.startswith("0x")):
            raise Unvectorisable(f"the literal {text} (only whole int64 numbers are vectorised)")
        number = int(text, 0)
        if not INT64_MIN <= number <= INT64_MAX:
            raise Unvectorisable(f"the literal {text} is beyond int64")
        return Compiled(pl.lit(number, dtype=pl.Int64), "int", (number, number), constant=number, is_constant=True)
    prefix = text[: len(text) - len(text.lstrip("rRbB"))]
    if "b" in prefix.lower() or "\\N" in text:
        raise Unvectorisable(f"the literal {text}")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise Unvectorisable(f"the literal {text}") from exc
    if not isinstance(value, str):
        raise Unvectorisable(f"the literal {text}")
    return Compiled(pl.lit(value, dtype=pl.String), "string", constant=value, is_constant=True)


def _timestamp(node: Syntax) -> Compiled:
    if len(node.children) != 1 or node.children[0].kind != "literal" or node.target is not None:
        raise Unvectorisable("timestamp() of something other than a text literal")
    text = _literal(node.children[0]).constant
    if not isinstance(text, str):
        raise Unvectorisable("timestamp() of something other than a text literal")
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Unvectorisable(f"timestamp('{text}')") from exc
    if moment.tzinfo is None or moment.utcoffset() != dt.timedelta(0) or moment.time() != dt.time(0):
        # A date fact is midnight UTC in CEL; only such instants compare with a date column exactly.
        raise Unvectorisable(f"timestamp('{text}') is not midnight UTC")
    day = moment.date()
    return Compiled(pl.lit(day, dtype=pl.Date), "date", constant=day, is_constant=True)


@lru_cache(maxsize=4096)
def parse(source: str) -> Syntax | None:
    """The syntax tree of an expression, read once per process (the trees are only read, never changed)."""
    return parse_syntax(source)


def _interval(op: str, a: Bounds, b: Bounds) -> Bounds:
    if op == "+":
        return a[0] + b[0], a[1] + b[1]
    if op == "-":
        return a[0] - b[1], a[1] - b[0]
    products = [x * y for x in a for y in b]
    return min(products), max(products)


def _union(*bounds: Bounds | None) -> Bounds | None:
    known = [b for b in bounds if b is not None]
    if len(known) != len(bounds):
        return None
    return min(b[0] for b in known), max(b[1] for b in known)


class ExpressionCompiler:
    """Translates CEL syntax trees into Polars expressions over :class:`Columns`; definitions are compiled where they
    are named (the per-record engine substitutes them into the expression's text the same way)."""

    def __init__(self, columns: Columns, definitions: Mapping[str, str], prefix: str = "") -> None:
        self.columns = columns
        self.definitions = definitions
        self.prefix = prefix
        self._definitions: dict[str, Compiled] = {}
        self._active: set[str] = set()
        # Each definition becomes a column of its own, made before the expressions that read it (a definition read
        # twice, or by another definition, would otherwise be copied into the plan each time: housing_benefit's grow
        # to thousands of nodes). ``stages[k]``: the columns that read only facts and columns of earlier stages.
        self.stages: list[list[pl.Expr]] = []
        self._stage: dict[str, int] = {}
        self._compiled: dict[str, Compiled] = {}

    def source(self, source: str) -> Compiled:
        tree = parse(source)
        if tree is None:
            raise Unvectorisable(f"cannot read the expression {source!r}")
        return self.node(tree)

    def definition(self, name: str) -> Compiled:
        """The definition as a column (its risks are the rule's: see ``compile_rule``)."""
        found = self._definitions.get(name)
        if found is not None:
            return found
        if name in self._active:
            raise Unvectorisable(f"the definition {name} depends on itself")
        self._active.add(name)
        try:
            compiled = self.source(self.definitions[name])
            reads = [d for d in self.definitions if d in self._stage and d in _identifiers(self.definitions[name])]
        finally:
            self._active.discard(name)
        stage = 1 + max((self._stage[d] for d in reads), default=-1)
        while len(self.stages) <= stage:
            self.stages.append([])
        column = f"{self.prefix}{name}"
        self.stages[stage].append(compiled.expr.alias(column))
        self._stage[name] = stage
        self._compiled[name] = compiled
        found = Compiled(pl.col(column), compiled.kind, compiled.bounds, list(compiled.risks))
        self._definitions[name] = found
        return found

    def node(self, node: Syntax) -> Compiled:
        handler = _HANDLERS.get(node.kind)
        if handler is None:
            raise Unvectorisable(f"{node.kind} ({node.text})")
        return handler(self, node)

    # ------------------------------------------------------------------ handlers

    def ident(self, node: Syntax) -> Compiled:
        if node.op in self.definitions:
            return self.definition(node.op)
        return self.columns.fact(node.op)

    def ternary(self, node: Syntax) -> Compiled:
        condition, then, otherwise = (self.node(c) for c in node.children)
        if condition.kind != "bool":
            raise Unvectorisable(f"a condition that is not true or false ({node.children[0].text})")
        if then.kind != otherwise.kind:
            raise Unvectorisable(f"a conditional whose branches differ in type ({node.text})")
        dtype = DTYPES[then.kind]
        expr = (
            pl.when(condition.expr.is_null())
            .then(pl.lit(None, dtype=dtype))
            .when(condition.expr)
            .then(then.expr)
            .otherwise(otherwise.expr)
        )
        return Compiled(
            expr,
            then.kind,
            _union(then.bounds, otherwise.bounds) if then.kind == "int" else None,
            [*condition.risks, *then.risks, *otherwise.risks],
        )

    def logical(self, node: Syntax) -> Compiled:
        left, right = (self.node(c) for c in node.children)
        if left.kind != "bool" or right.kind != "bool":
            raise Unvectorisable(f"{node.op} of something other than true or false ({node.text})")
        expr = left.expr & right.expr if node.op == "&&" else left.expr | right.expr
        return Compiled(expr, "bool", risks=[*left.risks, *right.risks])

    def relation(self, node: Syntax) -> Compiled:
        if node.op == "in":
            return self._membership(node)
        left, right = (self.node(c) for c in node.children)
        if left.kind != right.kind:
            raise Unvectorisable(f"compares a {left.kind} with a {right.kind} ({node.text})")
        if left.kind == "bool" and node.op not in ("==", "!="):
            raise Unvectorisable(f"orders booleans ({node.text})")
        a, b = left.expr, right.expr
        expr = {
            "<": lambda: a < b,
            "<=": lambda: a <= b,
            ">": lambda: a > b,
            ">=": lambda: a >= b,
            "==": lambda: a == b,
            "!=": lambda: a != b,
        }[node.op]()
        return Compiled(expr, "bool", risks=[*left.risks, *right.risks])

    def _membership(self, node: Syntax) -> Compiled:
        item, collection = node.children
        left = self.node(item)
        if collection.kind != "list":
            raise Unvectorisable(f"'in' of something other than a list of literals ({node.text})")
        values = [self.node(c) for c in collection.children]
        if any(not v.is_constant or v.kind != left.kind for v in values):
            raise Unvectorisable(f"'in' a list that is not of literals of the same type ({node.text})")
        if left.kind not in ("int", "string", "bool"):
            raise Unvectorisable(f"'in' of a {left.kind} ({node.text})")
        if 0 < len(values) <= _SHORT_LIST:
            # A few equalities cost less than a hash lookup per row (half, for four district codes); null stays
            # null either way (Kleene's ``|`` of unknowns).
            expr = reduce(lambda a, b: a | b, [left.expr == v.expr for v in values])
            return Compiled(expr, "bool", risks=left.risks)
        listed = pl.Series([v.constant for v in values], dtype=DTYPES[left.kind])
        return Compiled(left.expr.is_in(listed.implode()), "bool", risks=left.risks)

    def arithmetic(self, node: Syntax) -> Compiled:
        left, right = (self.node(c) for c in node.children)
        if left.kind != "int" or right.kind != "int":
            raise Unvectorisable(f"arithmetic on {left.kind} and {right.kind} ({node.text})")
        a, b = left.expr, right.expr
        risks = [*left.risks, *right.risks]
        lb, rb = left.bounds, right.bounds
        if lb is None or rb is None:
            raise Unvectorisable(f"no bounds for {node.text}")  # pragma: no cover - every int has bounds
        op = node.op
        if op in ("+", "-", "*"):
            bounds = _interval(op, lb, rb)
            expr = a + b if op == "+" else a - b if op == "-" else a * b
            if bounds[0] < -_NEAR_LIMIT or bounds[1] > _NEAR_LIMIT:
                fa, fb = a.cast(pl.Float64), b.cast(pl.Float64)
                shadow = fa + fb if op == "+" else fa - fb if op == "-" else fa * fb
                risks.append(shadow.abs() > _NEAR_LIMIT)
                bounds = (max(bounds[0], INT64_MIN), min(bounds[1], INT64_MAX))
            return Compiled(expr, "int", bounds, risks)
        if op in ("/", "%"):
            if rb[0] <= 0 <= rb[1]:
                risks.append(b == 0)
            if lb[0] <= INT64_MIN and rb[0] <= -1 <= rb[1]:
                risks.append((a == INT64_MIN) & (b == -1))
            if rb[0] > 0 and op == "/":
                # A divisor positive on every row: truncating is flooring a dividend moved up by b - 1 where it is
                # negative (no overflow: it stays below b), and flooring itself where none is (the bounds say so).
                if lb[0] >= 0:
                    return Compiled(a // b, "int", (0, lb[1]), risks)
                adjusted = a + (a < 0).cast(pl.Int64) * (b - 1)
                return Compiled(adjusted // b, "int", (min(lb[0], 0), max(lb[1], 0)), risks)
            if rb[0] > 0 and lb[0] >= 0:  # op == "%": both non-negative, CEL's remainder and Polars' agree
                return Compiled(a % b, "int", (0, rb[1]), risks)
            # CEL truncates towards zero; Polars floors: adjust where the signs differ and a remainder is left.
            floor = a // b
            remainder = a - floor * b
            if op == "/":
                expr = pl.when((remainder != 0) & ((a < 0) != (b < 0))).then(floor + 1).otherwise(floor)
                big = max(abs(lb[0]), abs(lb[1]))
                bounds = (-big, big)
            else:
                expr = pl.when((remainder != 0) & ((a < 0) != (b < 0))).then(remainder - b).otherwise(remainder)
                big = max(abs(rb[0]), abs(rb[1]))
                bounds = (-big, big)
            return Compiled(expr, "int", bounds, risks)
        raise Unvectorisable(f"the operator {op}")  # pragma: no cover - the parser knows no other

    def unary(self, node: Syntax) -> Compiled:
        operand = self.node(node.children[0])
        if node.op == "!":
            if operand.kind != "bool":
                raise Unvectorisable(f"'!' of a {operand.kind}")
            return Compiled(~operand.expr, "bool", risks=operand.risks)
        if operand.kind != "int" or operand.bounds is None:
            raise Unvectorisable(f"'-' of a {operand.kind}")
        risks = list(operand.risks)
        if operand.bounds[0] <= INT64_MIN:
            risks.append(operand.expr == INT64_MIN)
        lo, hi = operand.bounds
        return Compiled(-operand.expr, "int", (-hi, -lo), risks)

    def call(self, node: Syntax) -> Compiled:
        if node.op == "timestamp" and node.target is None:
            return _timestamp(node)
        if node.op == "startsWith" and node.target is not None and len(node.children) == 1:
            target, prefix = self.node(node.target), self.node(node.children[0])
            if target.kind != "string" or not prefix.is_constant or prefix.kind != "string":
                raise Unvectorisable(f"startsWith of something other than a text literal ({node.text})")
            return Compiled(target.expr.str.starts_with(prefix.constant), "bool", risks=target.risks)
        if node.op == "int" and node.target is None and len(node.children) == 1:
            inner = self.node(node.children[0])
            if inner.kind == "int":
                return inner
        raise Unvectorisable(f"the function {node.op}() ({node.text})")


def _identifiers(source: str) -> set[str]:
    tree = parse(source)
    return tree.identifiers() if tree is not None else set()


_HANDLERS: dict[str, Callable[[ExpressionCompiler, Syntax], Compiled]] = {
    "literal": lambda c, n: _literal(n),
    "ident": ExpressionCompiler.ident,
    "ternary": ExpressionCompiler.ternary,
    "or": ExpressionCompiler.logical,
    "and": ExpressionCompiler.logical,
    "relation": ExpressionCompiler.relation,
    "arithmetic": ExpressionCompiler.arithmetic,
    "unary": ExpressionCompiler.unary,
    "call": ExpressionCompiler.call,
}


# ---------------------------------------------------------------------------------------------- a rule version


@dataclass
class VectorRule:
    """A rule version as columns: each node's status (Boolean, null = unknown; for a leaf reading a fact whose
    derivation failed, null too), whether a leaf's facts failed to derive (the program then needs review), the
    amount, and the rows only the per-record engine may judge. ``refs``: the programs whose outcome a leaf reads,
    by node index (their outcome columns must exist before this rule's columns are made)."""

    rule: CompiledRule
    statuses: dict[int, pl.Expr]
    failed: pl.Expr  # Boolean, never null: a criterion read a fact whose derivation failed
    amount: pl.Expr | None
    amount_failed: pl.Expr
    risk: pl.Expr  # Boolean, never null
    refs: dict[int, str]
    # The definitions' columns, in stages (each reads the columns of earlier stages).
    stages: list[list[pl.Expr]] = field(default_factory=list)


OutcomeOf = Callable[[str], tuple[pl.Expr, pl.Expr]]  # code -> (outcome code column, risk column)


def _any(exprs: list[pl.Expr]) -> pl.Expr:
    if not exprs:
        return pl.lit(False)
    return reduce(lambda a, b: a | b, (e.fill_null(False) for e in exprs))


def compile_rule(
    rule: CompiledRule,
    columns: Columns,
    errors: Mapping[str, pl.Expr],
    outcome_of: OutcomeOf,
    *,
    eligible: int,
    ineligible: int,
    needs_review: int,
    prefix: str = "",
) -> VectorRule:
    """Compile one rule version (its definitions become columns named ``prefix`` + name). ``errors``: per derived
    fact that can fail, its Boolean "failed" column.
    ``outcome_of``: the outcome column (and risk) of a program a leaf requires, already compiled."""
    if rule.error is not None:
        raise Unvectorisable("the stored version no longer compiles (it always needs review)")
    compiler = ExpressionCompiler(columns, {n: d.source for n, d in rule.definitions.items()}, prefix)
    statuses: dict[int, pl.Expr] = {}
    failures: list[pl.Expr] = []
    risks: list[pl.Expr] = []
    refs: dict[int, str] = {}

    def failed_inputs(expression: Expression) -> pl.Expr | None:
        found = [errors[f] for f in expression.facts if f in errors]
        return _any(found) if found else None

    for node in rule.postorder:
        if isinstance(node, Leaf):
            statuses[node.index] = _leaf(node, compiler, failed_inputs, failures, risks, refs, outcome_of, eligible,
                                         ineligible, needs_review)  # fmt: skip
        else:
            statuses[node.index] = _group(node, statuses)
    # The explanation shows each definition a criterion names, evaluated on its own: its errors count too.
    for name in rule.definitions:
        risks.extend(compiler.definition(name).risks)
    amount = None
    amount_failed: pl.Expr = pl.lit(False)
    if rule.amount is not None:
        compiled = compiler.source(rule.amount.source)
        if compiled.kind != "int":
            raise Unvectorisable("the amount is not a whole number")
        amount = compiled.expr
        risks.extend(compiled.risks)
        found = failed_inputs(rule.amount)
        if found is not None:
            amount_failed = found
    return VectorRule(rule, statuses, _any(failures), amount, amount_failed, _any(risks), refs, compiler.stages)


def _leaf(
    node: Leaf,
    compiler: ExpressionCompiler,
    failed_inputs: Callable[[Expression], pl.Expr | None],
    failures: list[pl.Expr],
    risks: list[pl.Expr],
    refs: dict[int, str],
    outcome_of: OutcomeOf,
    eligible: int,
    ineligible: int,
    needs_review: int,
) -> pl.Expr:
    if node.ref is not None:
        outcome, risk = outcome_of(node.ref)
        refs[node.index] = node.ref
        failures.append(outcome == needs_review)
        risks.append(risk)
        return (
            pl.when(outcome == eligible)
            .then(pl.lit(True))
            .when(outcome == ineligible)
            .then(pl.lit(False))
            .otherwise(pl.lit(None, dtype=pl.Boolean))
        )
    assert node.expression is not None
    compiled = compiler.source(node.expression.source)
    if compiled.kind != "bool":
        raise Unvectorisable(f"the criterion {node.id} does not give true or false")
    risks.extend(compiled.risks)
    failed = failed_inputs(node.expression)
    if failed is None:
        return compiled.expr
    failures.append(failed)
    return pl.when(failed).then(pl.lit(None, dtype=pl.Boolean)).otherwise(compiled.expr)


def _group(node: Group, statuses: Mapping[int, pl.Expr]) -> pl.Expr:
    members = [statuses[c.index] for c in node.children]
    if node.kind == "not":
        return ~members[0] if members else pl.lit(None, dtype=pl.Boolean)
    if not members:
        return pl.lit(node.kind == "all")
    if node.kind == "all":
        return reduce(lambda a, b: a & b, members)
    return reduce(lambda a, b: a | b, members)


def node_label(node: Node) -> str:
    return node.id if node.id is not None else f"#{node.index}"
