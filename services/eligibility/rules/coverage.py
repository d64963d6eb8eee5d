"""Branch coverage of the catalogue (not of Python): which parts of each rule version the evaluations reached.

A :class:`CatalogueCoverage` is a recorder for ``evaluate.recording``: while it is installed, every explained
evaluation of a rule version reports the status of each criterion, and the recorder works out, against the same facts,

- which way each conditional (``a ? b : c``) of the criteria, definitions and amount went — the amount's only when the
  program was eligible (an amount is computed only then), a definition's when something reached reads it, a nested one
  only on the side its outer conditional took, one inside a macro (``xs.map(x, ...)``) for each element;
- for each *limit* — a comparison that orders a fact against a bound (``insured_days_18m >= 180``,
  ``recognised_income <= threshold``, ``child_birth_date >= timestamp(...)``) — whether it held and whether the
  case sat on its edge: one unit of the fact (one won, one day of the date it is derived from) would have turned it.
  A limit is covered when an edge case was seen on each side (180 and 179 insured days; the day of the 65th birthday
  and the day before). When turning it is refused by the facts' own derivation (a child is never born after the
  application date), that side cannot be reached, and the recorder says so with the reason.

The recorder is for tests and tools: the services never install one, and ``evaluate_rule`` then does one ``is None``
check more. Limits read the fact on one side only; the bound's side may read other facts and definitions, but a
reference figure (the median income for the household size) is never the subject of a limit."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cel

from services.eligibility.facts import DERIVATIONS, Environment, FactCatalogue, ReferenceTables, cel_value
from services.eligibility.income import Computed, ReferenceDataMissing
from services.eligibility.rules.compile import _inline
from services.eligibility.rules.evaluate import ProgramOutcome
from services.eligibility.rules.nodes import CompiledRule, Group, Leaf
from services.eligibility.rules.syntax import MACROS, ORDERING, Syntax, parse
from shared.events import CriterionStatus, Outcome

if TYPE_CHECKING:  # the catalogue builds on the rules engine, not the other way round
    from services.eligibility.catalogue import Catalogue, Program, RuleVersion

# Derived facts that are figures of reference tables: a rule compares a resident's fact against them, never them
# against a bound (a household one member larger is not "one unit" from a limit).
REFERENCE_FACTS = frozenset({"median_income"})
# Inputs of a derived fact that are no unit of it: one member more or less changes which incomes a household's total
# counts (the other members', the spouse's), not the total by one won.
NOT_UNITS = frozenset({"household_size"})

PASSING, FAILING = "passing", "failing"
_UNKNOWN = object()
_DAY = dt.timedelta(days=1)


# ---------------------------------------------------------------------------------------------- what a rule holds


@dataclass(eq=False)
class Limit:
    """A comparison of one variable (the subject) against a bound, in an expression of a version."""

    where: str  # rule.<criterion id> | definitions.<name> | amount
    node: Syntax
    # The variable one unit of which can turn it (a fact, or a macro's variable) and the side of the comparison it is
    # on (0 left, 1 right); usually one.
    subjects: tuple[tuple[str, int], ...]

    @property
    def text(self) -> str:
        return self.node.text


@dataclass
class LimitSeen:
    limit: Limit
    edges: set[str] = field(default_factory=set)  # PASSING / FAILING: an edge case seen on that side
    sides: set[str] = field(default_factory=set)  # sides seen at all (on the edge or not)
    refused: dict[str, str] = field(default_factory=dict)  # side -> why the facts cannot reach it
    bounds: set[str] = field(default_factory=set)  # the bound's values seen, for the report


@dataclass(eq=False)
class VersionPlan:
    """What one rule version holds that coverage asks about; built once per version."""

    code: str
    version: int
    rule: CompiledRule
    criteria: dict[int, str]  # node index -> criterion id (leaves, and groups with an id)
    roots: dict[str, Syntax]  # where -> syntax of each expression (criteria, definitions, amount)
    reads: dict[str, frozenset[str]]  # where -> the definitions it reads, directly or through others
    inlined: dict[str, str]  # definition -> its source with the definitions it reads substituted in
    facts_of: dict[str, frozenset[str]]  # definition -> the facts it reads (through definitions too)
    limits: dict[int, Limit]  # id(node) -> limit
    ternaries: dict[int, tuple[str, Syntax]]  # id(node) -> (where, node)
    unreadable: list[str]  # where: expressions this reader cannot follow (reported as gaps)
    first_day: dt.date | None  # the day it replaced another version (a case should be judged on it)
    last_day: dt.date | None  # its last day, when it ends or another replaces it


@dataclass
class VersionCoverage:
    plan: VersionPlan
    outcomes: set[str] = field(default_factory=set)
    criteria: dict[str, set[str]] = field(default_factory=dict)
    branches: dict[int, set[bool]] = field(default_factory=dict)
    limits: dict[int, LimitSeen] = field(default_factory=dict)
    days: set[dt.date] = field(default_factory=set)
    cases: int = 0

    def gaps(self) -> list[str]:
        """What no evaluation reached, one line each (empty when the version is covered)."""
        plan = self.plan
        out: list[str] = []
        label = f"v{plan.version}"
        if not self.cases:
            return [f"{label}: no case is judged by this version"]
        for outcome in (Outcome.ELIGIBLE, Outcome.INELIGIBLE):
            if outcome not in self.outcomes:
                out.append(f"{label}: no case is {outcome}")
        refused_criteria = self._unreachable_criteria()
        for criterion, statuses in self.criteria.items():
            for wanted in (CriterionStatus.PASSED, CriterionStatus.FAILED):
                if wanted not in statuses and (criterion, wanted) not in refused_criteria:
                    out.append(f"{label}: criterion {criterion} is never {wanted}")
        for key, (where, node) in plan.ternaries.items():
            seen = self.branches.get(key, set())
            for branch, name in ((True, "then"), (False, "else")):
                if branch not in seen:
                    out.append(f"{label}: {where}: `{node.text}` never takes its {name} branch")
        for key, limit in plan.limits.items():
            limit_seen = self.limits.get(key)
            for side in (PASSING, FAILING):
                if limit_seen is not None and side in limit_seen.edges:
                    continue
                if limit_seen is not None and side in limit_seen.refused and side not in limit_seen.sides:
                    continue
                bound = f" (bound {', '.join(sorted(limit_seen.bounds))})" if limit_seen and limit_seen.bounds else ""
                out.append(f"{label}: {limit.where}: `{limit.text}` has no case on its edge on the {side} side{bound}")
        for where in plan.unreadable:
            out.append(f"{label}: {where}: this expression cannot be analysed for coverage")
        if plan.first_day is not None and plan.first_day not in self.days:
            out.append(f"{label}: no case on its first day, {plan.first_day.isoformat()}")
        if plan.last_day is not None and plan.last_day not in self.days:
            out.append(f"{label}: no case on its last day, {plan.last_day.isoformat()}")
        return out

    def _unreachable_criteria(self) -> set[tuple[str, str]]:
        """A criterion that is one limit cannot take the status of a side its facts cannot reach."""
        out: set[tuple[str, str]] = set()
        for key, limit in self.plan.limits.items():
            seen = self.limits.get(key)
            if seen is None or not limit.where.startswith("rule.") or self.plan.roots[limit.where] is not limit.node:
                continue
            criterion = limit.where.removeprefix("rule.")
            if PASSING in seen.refused and PASSING not in seen.sides:
                out.add((criterion, CriterionStatus.PASSED))
            if FAILING in seen.refused and FAILING not in seen.sides:
                out.add((criterion, CriterionStatus.FAILED))
        return out


def plan_version(code: str, version: int, rule: CompiledRule, facts: FactCatalogue, *, first_day: dt.date | None,
                 last_day: dt.date | None) -> VersionPlan:  # fmt: skip
    criteria: dict[int, str] = {}
    sources: dict[str, str] = {}
    for node in rule.explained:
        if isinstance(node, Leaf):
            criteria[node.index] = node.id
            if node.expression is not None:
                sources[f"rule.{node.id}"] = node.expression.source
        elif isinstance(node, Group) and node.id is not None:
            criteria[node.index] = node.id
    inlined: dict[str, str] = {}
    facts_of: dict[str, frozenset[str]] = {}
    for name, expression in rule.definitions.items():  # in dependency order
        sources[f"definitions.{name}"] = expression.source
        inlined[name] = _inline(expression.source, inlined) or expression.source
        facts_of[name] = frozenset(expression.facts)
    if rule.amount is not None:
        sources["amount"] = rule.amount.source
    roots: dict[str, Syntax] = {}
    unreadable: list[str] = []
    for where, source in sources.items():
        tree = parse(source)
        if tree is None:
            unreadable.append(where)
        else:
            roots[where] = tree
    reads: dict[str, frozenset[str]] = {}
    for where, tree in roots.items():
        direct = tree.identifiers() & set(rule.definitions)
        closure = set(direct)
        for name in direct:
            closure |= _definitions_read(name, rule)
        reads[where] = frozenset(closure)
    limits: dict[int, Limit] = {}
    ternaries: dict[int, tuple[str, Syntax]] = {}
    # What can be one unit away: a number or a date (a fact of another type never is the subject of a limit).
    unordered = frozenset(n for n, t in facts.types.items() if t.type not in ("integer", "number", "date"))
    for where, tree in roots.items():
        _find(tree, where, frozenset(), rule, facts_of, unordered, limits, ternaries)
    return VersionPlan(code, version, rule, criteria, roots, reads, inlined, facts_of, limits, ternaries, unreadable,
                       first_day, last_day)  # fmt: skip


def _definitions_read(name: str, rule: CompiledRule) -> set[str]:
    out: set[str] = set()
    for inner in rule.definitions[name].defs:
        out.add(inner)
        out |= _definitions_read(inner, rule)
    return out


def _find(node: Syntax, where: str, bound: frozenset[str], rule: CompiledRule, facts_of: Mapping[str, frozenset[str]],
          unordered: frozenset[str], limits: dict[int, Limit],
          ternaries: dict[int, tuple[str, Syntax]]) -> None:  # fmt: skip
    if node.kind == "ternary":
        ternaries[id(node)] = (where, node)
    if node.kind == "relation" and node.op in ORDERING:
        left, right = (_variables(side, bound, rule, facts_of) for side in node.children)
        subjects = [
            (next(iter(mine)), side)
            for side, (mine, other) in enumerate(((left, right), (right, left)))
            if len(mine) == 1 and not mine & other and not mine & (REFERENCE_FACTS | unordered)
        ]
        if subjects:
            limits[id(node)] = Limit(where, node, tuple(subjects))
    if node.kind == "call" and node.op in MACROS and node.target is not None and node.children:
        _find(node.target, where, bound, rule, facts_of, unordered, limits, ternaries)
        variable = node.children[0]
        inner = bound | {variable.op} if variable.kind == "ident" else bound
        for child in node.children[1:]:
            _find(child, where, inner, rule, facts_of, unordered, limits, ternaries)
        return
    if node.target is not None:
        _find(node.target, where, bound, rule, facts_of, unordered, limits, ternaries)
    for child in node.children:
        _find(child, where, bound, rule, facts_of, unordered, limits, ternaries)


def _variables(node: Syntax, bound: frozenset[str], rule: CompiledRule,
               facts_of: Mapping[str, frozenset[str]]) -> set[str]:  # fmt: skip
    """The facts (through definitions) and macro variables a node reads."""
    out: set[str] = set()
    for name in node.identifiers():
        if name in rule.definitions:
            out |= facts_of[name]
        else:
            out.add(name)  # a fact, or a variable a macro around it binds (in ``bound``)
    return out


# ---------------------------------------------------------------------------------------------- the recorder


class CatalogueCoverage:
    """Records, per program version, what evaluations reached (see the module's doc). Install it with
    ``evaluate.recording(coverage)``; set :attr:`subject` to count only the evaluations of one program (a case of
    program A that requires program B evaluates B too, but does not test it)."""

    def __init__(self, versions: Iterable[VersionPlan], references: ReferenceTables) -> None:
        self.references = references
        self.versions: dict[int, VersionCoverage] = {id(p.rule): VersionCoverage(p) for p in versions}
        self.subject: str | None = None
        self._programs: dict[str, tuple[cel.Program, frozenset[str]] | None] = {}

    @classmethod
    def of(cls, catalogue: Catalogue) -> CatalogueCoverage:
        """Plans for every version of a :class:`~services.eligibility.catalogue.Catalogue`."""
        plans = []
        for program in catalogue.programs.values():
            for version in program.versions:
                if version.superseded:
                    continue
                first, last = _version_days(program, version)
                plans.append(
                    plan_version(
                        program.code, version.version, version.rule, catalogue.facts, first_day=first, last_day=last
                    )
                )
        return cls(plans, ReferenceTables(catalogue.medians, catalogue.districts, catalogue.facts.income))

    def by_program(self) -> dict[str, list[VersionCoverage]]:
        out: dict[str, list[VersionCoverage]] = {}
        for seen in self.versions.values():
            out.setdefault(seen.plan.code, []).append(seen)
        return out

    def gaps(self) -> dict[str, list[str]]:
        """Per program, what no evaluation reached (programs fully covered are left out)."""
        out: dict[str, list[str]] = {}
        for code, versions in sorted(self.by_program().items()):
            lines = [line for seen in sorted(versions, key=lambda s: s.plan.version) for line in seen.gaps()]
            if lines:
                out[code] = lines
        return out

    # ------------------------------------------------------------------ recording

    def record(self, rule: CompiledRule, env: Environment, statuses: Sequence[CriterionStatus] | None,
               outcome: ProgramOutcome) -> None:  # fmt: skip
        seen = self.versions.get(id(rule))
        if seen is None or statuses is None or (self.subject is not None and seen.plan.code != self.subject):
            return
        plan = seen.plan
        seen.cases += 1
        seen.outcomes.add(outcome.outcome)
        seen.days.add(env.application_date)
        for index, criterion in plan.criteria.items():
            seen.criteria.setdefault(criterion, set()).add(statuses[index])
        if outcome.error is not None:
            return
        reached = [w for w in plan.roots if w.startswith("rule.")]
        if outcome.outcome == Outcome.ELIGIBLE and "amount" in plan.roots:
            reached.append("amount")
        definitions = {d for w in reached for d in plan.reads.get(w, ())}
        reached += [f"definitions.{d}" for d in plan.rule.definitions if d in definitions]
        run = _Run(self, seen, env)
        for where in reached:
            tree = plan.roots.get(where)
            if tree is not None:
                run.visit(tree, [{}])

    def value_of(self, plan: VersionPlan, node: Syntax, env: Environment) -> Any:
        """The value of a piece of a version's expressions (a limit's bound, a condition) against ``env``; None when
        a fact it reads is missing or it fails."""
        value = _Run(self, self.versions[id(plan.rule)], env).value(node, {})
        return None if value is _UNKNOWN else value

    def program(self, source: str) -> tuple[cel.Program, frozenset[str]] | None:
        """A piece of an expression compiled on its own, with the variables it reads (cached)."""
        if source in self._programs:
            return self._programs[source]
        tree = parse(source)
        found: tuple[cel.Program, frozenset[str]] | None = None
        if tree is not None:
            with contextlib.suppress(Exception):  # a piece that does not compile alone is not followed
                found = (cel.compile(source), frozenset(tree.identifiers()))
        self._programs[source] = found
        return found


class _Run:
    """Following one evaluation's facts through the expressions it reached."""

    def __init__(self, coverage: CatalogueCoverage, seen: VersionCoverage, env: Environment) -> None:
        self.coverage = coverage
        self.seen = seen
        self.plan = seen.plan
        self.env = env

    def value(self, node: Syntax, scope: Mapping[str, Any]) -> Any:
        """The node's value against the facts and the macro variables of ``scope``; _UNKNOWN when a fact it reads is
        missing or it fails."""
        source = _inline(node.text, self.plan.inlined) if self.plan.inlined else node.text
        found = self.coverage.program(source or node.text)
        if found is None:
            return _UNKNOWN
        program, names = found
        known = self.env.cel_values
        values = {}
        for name in names:
            if name in scope:
                values[name] = scope[name]
            elif name in known:
                values[name] = known[name]
            else:
                return _UNKNOWN
        try:
            return program.execute(values)
        except Exception:
            return _UNKNOWN

    def visit(self, node: Syntax, scopes: list[dict[str, Any]]) -> None:
        if node.kind == "ternary":
            condition, then, otherwise = node.children
            self.visit(condition, scopes)
            taken: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
            for scope in scopes:
                value = self.value(condition, scope)
                if isinstance(value, bool):
                    self.seen.branches.setdefault(id(node), set()).add(value)
                    taken[value].append(scope)
            if taken[True]:
                self.visit(then, taken[True])
            if taken[False]:
                self.visit(otherwise, taken[False])
            return
        limit = self.plan.limits.get(id(node))
        if limit is not None:
            for scope in scopes:
                self.limit(limit, scope)
        if node.kind == "call" and node.op in MACROS and node.target is not None and node.children:
            self.visit(node.target, scopes)
            variable = node.children[0].op
            inner = []
            for scope in scopes:
                items = self.value(node.target, scope)
                if isinstance(items, list | tuple | dict):
                    inner += [{**scope, variable: item} for item in items]
            if inner:
                for child in node.children[1:]:
                    self.visit(child, inner)
            return
        if node.target is not None:
            self.visit(node.target, scopes)
        for child in node.children:
            self.visit(child, scopes)

    def limit(self, limit: Limit, scope: Mapping[str, Any]) -> None:
        result = self.value(limit.node, scope)
        if not isinstance(result, bool):
            return
        side = PASSING if result else FAILING
        other = FAILING if result else PASSING
        seen = self.seen.limits.setdefault(id(limit.node), LimitSeen(limit))
        seen.sides.add(side)
        for subject, side_index in limit.subjects:
            bound = self.value(limit.node.children[1 - side_index], scope)
            if bound is not _UNKNOWN:
                seen.bounds.add(_shown(bound))
            refusals = []
            for moved in self.one_unit_away(subject, scope):
                if isinstance(moved, str):
                    refusals.append(moved)
                    continue
                turned = self.value(limit.node, {**scope, subject: moved})
                if isinstance(turned, bool) and turned != result:
                    seen.edges.add(side)
                    return
            # On the bound itself, and the facts refuse the move past it (a child's age in days is never -1): this is
            # the edge of what can be, and the other side cannot be reached.
            if refusals and bound is not _UNKNOWN and self.value(limit.node.children[side_index], scope) == bound:
                seen.edges.add(side)
                seen.refused.setdefault(other, refusals[0])
                return

    def one_unit_away(self, name: str, scope: Mapping[str, Any]) -> list[Any]:
        """The subject's values one unit away, as CEL values: one won, one day; for a derived fact, applying a day
        earlier or later, or one day (unit) of each input it is derived from — both, since they differ around
        month ends and 29 February. A text instead where the facts' derivation refuses the move (why it cannot be)."""
        if name in scope:
            return _neighbours(scope[name])
        values = self.env.values
        if name not in values:
            return []
        derivation = DERIVATIONS.get(name)
        if derivation is None:
            return [cel_value(v) for v in _neighbours(values[name])]
        out: list[Any] = []
        day = self.env.application_date
        for moved_day in (day - _DAY, day + _DAY):  # the day before or after: how a deadline is met
            try:
                out.append(cel_value(_plain(derivation.compute(dict(values), moved_day, self.coverage.references))))
            except KeyError:  # a fact it would need then is not known: no neighbour this way
                continue
            except (ValueError, ReferenceDataMissing) as exc:
                out.append(f"applied on {moved_day.isoformat()}: {exc}")
        for source in (*derivation.inputs, *derivation.optional):
            if source not in values or source in DERIVATIONS or source in NOT_UNITS:
                continue
            current = values[source]
            alternatives: list[Any] = []
            if isinstance(current, tuple):
                for i, item in enumerate(current):
                    alternatives += [(*current[:i], moved, *current[i + 1 :]) for moved in _neighbours(item)]
            else:
                alternatives = _neighbours(current)
            for alternative in alternatives:
                changed = dict(values)
                changed[source] = alternative
                try:
                    out.append(cel_value(_plain(derivation.compute(changed, day, self.coverage.references))))
                except KeyError:
                    continue
                except (ValueError, ReferenceDataMissing) as exc:
                    out.append(f"{source} = {_shown(alternative)}: {exc}")
        return out


def _plain(value: Any) -> Any:
    """A derived value without its workings."""
    return value.value if isinstance(value, Computed) else value


def _neighbours(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [value - 1, value + 1]
    if isinstance(value, dt.date):  # a date or a timestamp
        return [value - _DAY, value + _DAY]
    return []


def _shown(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def _version_days(program: Program, version: RuleVersion) -> tuple[dt.date | None, dt.date | None]:
    """The day ``version`` replaced another one (None when nothing was in force the day before), and its last day
    when it ends or another replaces it (None when it runs on)."""
    start = version.effective_from
    first = start if program.version_on(start - _DAY) is not None and program.version_on(start) is version else None
    ends = [v.effective_from - _DAY for v in program.versions if not v.superseded and v.effective_from > start]
    if version.effective_to is not None:
        ends.append(version.effective_to)
    last = min(ends) if ends else None
    if last is not None and program.version_on(last) is not version:
        last = None
    return first, last
