"""Evaluating a compiled rule against one resident's facts, with Kleene three-valued logic: each criterion is passed,
failed or unknown, a group is decided as soon as one member decides it (an ``all`` with a failed member, an ``any``
with a passed one), and only the facts that could still change the outcome are asked for. Never raises: a rule that
fails at evaluation gives ``needs_review``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.eligibility.facts import MISSING, RULE, Environment, json_value
from services.eligibility.rules.nodes import CompiledRule, Expression, Leaf, Node, first_line
from shared.events import CriterionStatus, Outcome

# Short names for the hot loops below (a module global, not an attribute of the enum class each time).
PASSED, FAILED, UNKNOWN = CriterionStatus.PASSED, CriterionStatus.FAILED, CriterionStatus.UNKNOWN
ELIGIBLE, INELIGIBLE = Outcome.ELIGIBLE, Outcome.INELIGIBLE
NEEDS_INFORMATION, NEEDS_REVIEW = Outcome.NEEDS_INFORMATION, Outcome.NEEDS_REVIEW


class RuleFailed(RuntimeError):
    """A rule raised while it was evaluated: the program needs a person to look."""


@dataclass(slots=True)
class ProgramOutcome:
    """The result of one program's rule for one environment, before it becomes a ProgramDetermination."""

    outcome: Outcome
    amount: int | None = None
    criteria: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str | None = None


_UNSET = object()
_UNDEFINED = re.compile(r"Undefined variable or function: '([A-Za-z_][A-Za-z0-9_]*)'")
_UNKNOWN_VALUE = object()

RefResolver = Callable[[str], ProgramOutcome]


class RuleRun:
    """One evaluation of one compiled rule against one environment."""

    __slots__ = ("defs", "env", "errors", "leaf_missing", "refs", "rule", "statuses")

    def __init__(self, rule: CompiledRule, env: Environment, refs: RefResolver) -> None:
        self.rule = rule
        self.env = env
        self.refs = refs
        self.statuses: list[CriterionStatus] = [UNKNOWN] * rule.size
        self.leaf_missing: dict[int, list[str]] = {}
        self.defs: dict[str, Any] = {}
        self.errors: list[str] = []

    # ------------------------------------------------------------------ values

    def definition(self, name: str) -> Any:
        """A definition's value, for the explanation (criteria run with definitions substituted in); or
        _UNKNOWN_VALUE when it depends on a missing fact."""
        value = self.defs.get(name, _UNSET)
        if value is not _UNSET:
            return value
        expression = self.rule.definitions[name]
        try:
            value = self.run(expression, self._unknown_inputs(expression))
        except RuleFailed:
            raise
        except Exception as exc:
            raise RuleFailed(f"definition {name}: {first_line(exc)}") from exc
        self.defs[name] = value
        return value

    def _unknown_inputs(self, expression: Expression) -> list[str]:
        env = self.env
        if env.errors:
            for f in expression.facts:
                if f in env.errors:
                    raise RuleFailed(f"{f}: {env.errors[f]}")
        values = env.values
        return [f for f in expression.facts if f not in values]

    def run(self, expression: Expression, missing: list[str]) -> Any:
        """Run an expression. With every fact it reads known, against the context built once for all rules. With
        some missing, against the known ones only: CEL's logic absorbs an undefined input that cannot change the
        result (``false && x`` is false, ``true ? a : x`` is a) and fails on one that could, which is then unknown —
        the three-valued reading, inside one expression too. A missing fact is never given a value."""
        if not missing:
            return expression.program.execute(self.env.context)
        if not expression.absorbs:
            return _UNKNOWN_VALUE
        cel_values = self.env.cel_values
        known = {f: cel_values[f] for f in expression.facts if f in cel_values}
        try:
            return expression.program.execute(known)
        except RuntimeError as exc:
            if "Undefined variable" in str(exc):
                return _UNKNOWN_VALUE
            raise

    # ------------------------------------------------------------------ the tree

    def leaf(self, leaf: Leaf) -> CriterionStatus:
        expression = leaf.expression
        if expression is None:
            return self._required_program(leaf)
        env = self.env
        if env.errors:
            self._unknown_inputs(expression)  # raises for a fact whose derivation failed
        values = env.values
        for fact in expression.facts:
            if fact not in values:
                break
        else:  # every fact known: the common, fast path
            try:
                result = expression.program.execute(env.context)
            except Exception as exc:
                raise RuleFailed(f"{leaf.id}: {first_line(exc)}") from exc
            if result is True:
                return PASSED
            if result is False:
                return FAILED
            raise RuleFailed(f"{leaf.id}: gave {result!r}, not true or false")
        missing = [f for f in expression.facts if f not in values]
        try:
            result = self.run(expression, missing)
        except Exception as exc:
            raise RuleFailed(f"{leaf.id}: {first_line(exc)}") from exc
        if result is True:
            return PASSED
        if result is False:
            return FAILED
        if result is _UNKNOWN_VALUE:
            self.leaf_missing[leaf.index] = self._awaited(expression, missing)
            return UNKNOWN
        raise RuleFailed(f"{leaf.id}: gave {result!r}, not true or false")

    def _awaited(self, expression: Expression, missing: list[str]) -> list[str]:
        return awaited(expression, self.env.cel_values, missing)

    def _required_program(self, leaf: Leaf) -> CriterionStatus:
        assert leaf.ref is not None
        outcome = self.refs(leaf.ref)
        if outcome.outcome == NEEDS_REVIEW:
            raise RuleFailed(f"{leaf.id}: program {leaf.ref} needs review ({outcome.error})")
        if outcome.outcome == ELIGIBLE:
            return PASSED
        if outcome.outcome == INELIGIBLE:
            return FAILED
        self.leaf_missing[leaf.index] = list(outcome.missing)
        return UNKNOWN

    def explain(self, out: list[dict[str, Any]]) -> CriterionStatus:
        """Evaluate every criterion (no short-cut, so each reports its status), children before their group, then
        record the explanation in reading order. This is the per-application hot path, hence the inlined common
        case: a leaf whose facts are all known runs straight against the shared context."""
        rule = self.rule
        statuses = self.statuses
        env = self.env
        values = env.values
        context = env.context
        # A fact whose derivation failed (a table not in force that day) fails the criteria that read it, in the slow
        # path; the others keep the fast one.
        errors = env.errors
        for node in rule.postorder:
            if node.__class__ is Leaf:
                status = None
                expression = node.expression
                if expression is not None and (not errors or errors.keys().isdisjoint(expression.facts)):
                    for fact in expression.facts:
                        if fact not in values:
                            if not expression.absorbs:  # a missing fact and no logic to absorb it: unknown
                                self.leaf_missing[node.index] = [f for f in expression.facts if f not in values]
                                status = UNKNOWN
                            break
                    else:
                        try:
                            result = expression.program.execute(context)
                        except Exception:
                            result = None  # the slow path below runs it again and reports the error
                        if result is True:
                            status = PASSED
                        elif result is False:
                            status = FAILED
                if status is None:
                    try:
                        status = self.leaf(node)
                    except RuleFailed as exc:
                        self.errors.append(str(exc))
                        status = UNKNOWN
            else:
                kind = node.kind  # type: ignore[union-attr]
                members = node.children  # type: ignore[union-attr]
                if kind == "not":
                    child = statuses[members[0].index] if members else UNKNOWN
                    status = FAILED if child == PASSED else PASSED if child == FAILED else UNKNOWN
                else:
                    stop = FAILED if kind == "all" else PASSED
                    status = PASSED if kind == "all" else FAILED
                    for member in members:
                        result = statuses[member.index]
                        if result == stop:
                            status = stop
                            break
                        if result == UNKNOWN:
                            status = UNKNOWN
            statuses[node.index] = status
        json, where = env.json, env.sources
        for node in rule.explained:
            status = statuses[node.index]
            if node.__class__ is Leaf:
                if status is UNKNOWN or node.shown_defs or node.ref is not None:
                    out.append(self._criterion(node, status))
                    continue
                shown_values = {}
                shown_sources = {}
                try:
                    for name in node.shown_facts:  # a loop, not comprehensions: no frame per criterion
                        shown_values[name] = json[name]
                        shown_sources[name] = where[name]
                except KeyError:  # a fact is missing
                    out.append(self._criterion(node, status))
                    continue
                criterion = {
                    "id": node.id,
                    "label": node.label,
                    "legal_reference": node.legal_reference,
                    "status": status,
                    "values": shown_values,
                    "sources": shown_sources,
                }
                if env.workings:
                    self._add_workings(criterion, node.shown_facts)
                out.append(criterion)
            else:
                out.append(
                    {
                        "id": node.id,
                        "label": node.label,
                        "legal_reference": node.legal_reference,
                        "status": status,
                        "values": {},
                        "sources": {},
                    }
                )
        return statuses[rule.root.index]

    def decide(self, node: Node) -> CriterionStatus:
        """Outcome only, short-cutting like Kleene logic allows (the bulk path)."""
        if isinstance(node, Leaf):
            return self.leaf(node)
        kind = node.kind
        if kind == "not":
            child = self.decide(node.children[0])
            return FAILED if child == PASSED else PASSED if child == FAILED else UNKNOWN
        seen_unknown = False
        stop = FAILED if kind == "all" else PASSED
        for member in node.children:
            status = self.decide(member)
            if status == stop:
                return stop
            if status == UNKNOWN:
                seen_unknown = True
        if seen_unknown:
            return UNKNOWN
        return PASSED if kind == "all" else FAILED

    def _criterion(self, leaf: Leaf, status: CriterionStatus) -> dict[str, Any]:
        env = self.env
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        if leaf.ref is not None:
            key = f"program:{leaf.ref}"
            values[key] = self.refs(leaf.ref).outcome
            sources[key] = RULE
        else:
            json, where = env.json, env.sources
            for name in leaf.shown_facts:
                values[name] = json.get(name)
                sources[name] = where.get(name, MISSING)
            for name in leaf.shown_defs:
                try:
                    value = self.definition(name)
                except RuleFailed as exc:
                    self.errors.append(str(exc))
                    value = _UNKNOWN_VALUE
                values[name] = None if value is _UNKNOWN_VALUE else json_value(value)
                sources[name] = RULE
        criterion = {
            "id": leaf.id,
            "label": leaf.label,
            "legal_reference": leaf.legal_reference,
            "status": status,
            "values": values,
            "sources": sources,
        }
        if env.workings:
            self._add_workings(criterion, leaf.shown_facts)
        return criterion

    def _add_workings(self, criterion: dict[str, Any], shown: tuple[str, ...]) -> None:
        """The computation of each derived figure the criterion shows, line by line (only when there is one)."""
        workings = self.env.workings
        found = {name: workings[name] for name in shown if name in workings}
        if found:
            criterion["workings"] = found

    def collect_missing(self, node: Node, out: dict[str, None]) -> None:
        """Descend only into unknown nodes: a determined node (an ``all`` with a failed child, an ``any`` with a
        passed one) needs nothing more, so its unknown children are not asked for."""
        if self.statuses[node.index] != UNKNOWN:
            return
        if node.__class__ is Leaf:
            missing = self.leaf_missing.get(node.index, ())
            if node.ref is not None:
                out.update(dict.fromkeys(missing))
            else:
                asks = self.env.asks
                for name in missing:
                    out.update(dict.fromkeys(asks.get(name, (name,))))
            return
        for child in node.children:  # type: ignore[union-attr]
            self.collect_missing(child, out)

    def amount(self) -> int | None:
        expression = self.rule.amount
        if expression is None:
            return None
        try:
            value = self.run(expression, self._unknown_inputs(expression))
        except RuleFailed:
            raise
        except Exception as exc:
            raise RuleFailed(f"amount: {first_line(exc)}") from exc
        if value is _UNKNOWN_VALUE:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RuleFailed(f"amount: gave {value!r}, not a number")
        return int(value)


def awaited(expression: Expression, cel_values: Mapping[str, Any], missing: list[str]) -> list[str]:
    """Of an unknown leaf's missing facts, those its result waits on whatever the others turn out to be: CEL runs
    with the known facts, and each missing fact it stops at is given a stand-in value in turn; a fact reached
    with both sets of stand-ins is awaited. A fact the known ones make irrelevant (the spouse's income when there
    is no spouse, the monthly rent of a jeonse tenant) is never reached, so never asked; one that only some
    answers to the others would make relevant (the spouse's pension, before whether there is a spouse is known)
    waits for those answers. Never empty: all of them if none is singled out. ``cel_values``: the facts known, as CEL
    sees them (the columnar near misses call it once per distinct tuple of the facts the criterion reads)."""
    if len(missing) < 2 or not expression.probes:
        return missing
    known = {f: cel_values[f] for f in expression.facts if f in cel_values}
    reached: list[set[str]] = []
    for probe in expression.probes:
        trial = dict(known)
        names: set[str] = set()
        for _ in range(len(missing)):
            try:
                expression.program.execute(trial)
            except RuntimeError as exc:
                found = _UNDEFINED.search(str(exc))
                name = found.group(1) if found else None
                if name is None or name not in probe or name in trial:
                    return missing
                names.add(name)
                trial[name] = probe[name]
                continue
            except Exception:  # the stand-ins' fault (a division by zero ...), not the facts'
                break
            break
        reached.append(names)
    waited = set.intersection(*reached) or set.union(*reached)
    return [f for f in missing if f in waited] or missing


class Recorder(Protocol):
    """Told of every evaluation while installed (``recording``): the catalogue's branch coverage in tests
    (rules/coverage.py). ``statuses`` (by node index) are given for explained evaluations only: the bulk path
    short-cuts, so the criteria it did not reach have no status."""

    def record(
        self,
        rule: CompiledRule,
        env: Environment,
        statuses: Sequence[CriterionStatus] | None,
        outcome: ProgramOutcome,
    ) -> None: ...


_recorder: Recorder | None = None


@contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """Install ``recorder`` for the block. Never installed by the services: evaluating then costs one check more."""
    global _recorder
    previous, _recorder = _recorder, recorder
    try:
        yield recorder
    finally:
        _recorder = previous


def evaluate_rule(rule: CompiledRule, env: Environment, refs: RefResolver, *, explain: bool = True) -> ProgramOutcome:
    """Evaluate one rule version. Never raises: a rule that fails at evaluation gives ``needs_review``."""
    if rule.error is not None:
        return ProgramOutcome(NEEDS_REVIEW, error=rule.error)
    run = RuleRun(rule, env, refs)
    criteria: list[dict[str, Any]] = []
    try:
        status = run.explain(criteria) if explain else run.decide(rule.root)
        if run.errors:
            raise RuleFailed("; ".join(run.errors))
        if status == PASSED:
            outcome = ProgramOutcome(ELIGIBLE, run.amount() if rule.amount is not None else None, criteria)
        elif status == FAILED:
            outcome = ProgramOutcome(INELIGIBLE, None, criteria)
        else:
            missing: dict[str, None] = {}
            if explain:
                run.collect_missing(rule.root, missing)
            outcome = ProgramOutcome(NEEDS_INFORMATION, None, criteria, list(missing))
    except RuleFailed as exc:
        outcome = ProgramOutcome(NEEDS_REVIEW, None, criteria, [], str(exc)[:1000])
    except Exception as exc:  # anything else a rule can do wrong must not stop the other programs
        outcome = ProgramOutcome(NEEDS_REVIEW, None, criteria, [], f"{type(exc).__name__}: {first_line(exc)}")
    if _recorder is not None:
        _recorder.record(rule, env, run.statuses if explain else None, outcome)
    return outcome


def is_relevant(rule: CompiledRule, env: Environment) -> bool:
    """Whether a program outside the application's life event applies too (its ``relevant_when`` is true)."""
    expression = rule.relevant_when
    if expression is None or any(f not in env.values for f in expression.facts):
        return False
    try:
        return expression.program.execute(env.context) is True
    except Exception:
        return False
