"""The rules engine: a criteria tree (``all``, ``any``, ``not``, leaves) whose leaves are single CEL expressions,
compiled once per rule version and combined with Kleene three-valued logic here.

CEL cannot say which part of a larger expression failed, so every leaf is its own compiled program, and the tree
around them is ours: each criterion reports passed / failed / unknown with the values it read, and only the facts that
could still change the outcome are asked for. A missing fact is never given a value (never 0, never false): a leaf
whose facts are all known runs against the context; one with missing facts runs against the known ones only, and is
unknown unless CEL's own logic makes the missing ones irrelevant (``false && x``). Nothing here uses Python's
``eval``. Definitions (named values such as a threshold) are substituted into the expressions that read them, and
evaluated separately only to show their values in the explanation.

Compilation also checks a version before it is accepted: unknown facts, unknown functions, type errors (each
expression is run against typed probe values of its facts, and comparisons with literals are checked against the
fact's type and allowed values), cycles between definitions, malformed trees.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from services.eligibility.facts import MISSING, RULE, Environment, FactCatalogue, FactType, cel_value, json_value
from services.eligibility.specs import CriterionSpec, VersionSpec

PASSED, FAILED, UNKNOWN = "passed", "failed", "unknown"
ELIGIBLE, INELIGIBLE, NEEDS_INFORMATION, NEEDS_REVIEW = "eligible", "ineligible", "needs_information", "needs_review"

MAX_DEPTH = 8
MAX_NODES = 200

_MACRO_BINDING = re.compile(r"\b(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")


class RuleInvalid(ValueError):
    """A rule version that cannot be accepted; ``errors`` name each field and the reason."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class RuleFailed(RuntimeError):
    """A rule raised while it was evaluated: the program needs a person to look."""


# ---------------------------------------------------------------------------------------------- compiled forms


_ABSORBING = frozenset({"_&&_", "_||_", "_?_:_"})


@dataclass(eq=False)
class Expression:
    source: str
    program: Any  # cel.Program
    facts: tuple[str, ...]  # every fact it reads, through the definitions it reads too
    defs: tuple[str, ...]  # the definitions it names
    # Whether a missing fact can be irrelevant to its result: only logical operators (&&, ||, ?:, and the macros
    # built on them) absorb one. Without them a missing fact makes the result unknown, with no need to run it.
    absorbs: bool = field(init=False)

    def __post_init__(self) -> None:
        self.absorbs = bool(_ABSORBING.intersection(self.program.functions()))


@dataclass(eq=False)
class Leaf:
    index: int
    id: str
    label: dict[str, str]
    legal_reference: str | None
    expression: Expression | None
    ref: str | None  # another program's code
    shown: tuple[str, ...] = ()  # what the explanation shows: facts and definitions, through definitions too
    shown_facts: tuple[str, ...] = ()
    shown_defs: tuple[str, ...] = ()


@dataclass(eq=False)
class Group:
    index: int
    kind: str  # all | any | not
    children: tuple[Node, ...]
    id: str | None
    label: dict[str, str] | None
    legal_reference: str | None


Node = Leaf | Group


@dataclass(eq=False)
class CompiledRule:
    root: Node
    size: int
    leaves: tuple[Leaf, ...]
    definitions: dict[str, Expression]  # in dependency order
    amount: Expression | None
    amount_period: str | None
    relevant_when: Expression | None
    refs: frozenset[str]
    facts_read: frozenset[str]
    # Set when a stored version no longer compiles (the fact catalogue changed under it): it then gives needs_review.
    error: str | None = None
    # The nodes children-first (for evaluating), and those the explanation lists, in reading order.
    postorder: tuple[Node, ...] = ()
    explained: tuple[Node, ...] = ()

    def __post_init__(self) -> None:
        post: list[Node] = []
        pre: list[Node] = []

        def walk(node: Node) -> None:
            if isinstance(node, Leaf):
                pre.append(node)
            else:
                if node.id is not None and node.label is not None:
                    pre.append(node)
                for child in node.children:
                    walk(child)
            post.append(node)

        walk(self.root)
        self.postorder, self.explained = tuple(post), tuple(pre)


# ---------------------------------------------------------------------------------------------- compiling


class _Compiler:
    def __init__(self, facts: FactCatalogue, programs: Collection[str], own_code: str | None) -> None:
        self.facts = facts
        self.programs = programs
        self.own_code = own_code
        self.errors: list[dict[str, str]] = []
        self.definitions: dict[str, Expression] = {}
        self.definition_types: dict[str, str | None] = {}
        self.probes = [_probe_values(facts, 0), _probe_values(facts, 1)]
        self.index = 0
        self.ids: set[str] = set()
        self.leaves: list[Leaf] = []
        self.refs: set[str] = set()
        # Each definition's source with the definitions it reads substituted in (see _inline).
        self.inlined: dict[str, str] = {}

    def error(self, path: str, message: str, kind: str = "invalid") -> None:
        self.errors.append({"field": path, "message": message, "type": kind})

    # ------------------------------------------------------------------ expressions

    def expression(self, source: str, path: str, *, allow_defs: bool = True) -> Expression | None:
        try:
            program = cel.compile(source)
        except Exception as exc:  # the CEL parser's own message says where
            self.error(path, f"not a valid CEL expression: {_first_line(exc)}", "syntax")
            return None
        bound = set(_MACRO_BINDING.findall(source))
        facts: list[str] = []
        defs: list[str] = []
        for name in program.variables():
            if name in self.facts:
                facts.append(name)
            elif allow_defs and name in self.definitions:
                defs.append(name)
            elif name in bound:
                continue
            elif allow_defs and name in self.definition_types:  # defined, but not (yet) compiled: a cycle or error
                defs.append(name)
            else:
                self.error(path, f"reads unknown fact '{name}'", "unknown_fact")
                return None
        return Expression(source, program, tuple(facts), tuple(defs))

    def executable(self, expression: Expression, path: str) -> Expression | None:
        """The expression as it runs: definitions substituted in, so it reads facts only and runs against the CEL
        context built once per evaluation (binding a definition's value into that context would make CEL convert
        the whole context again for the next expression)."""
        if not expression.defs:
            return expression
        if any(d not in self.definitions for d in expression.defs):
            return None  # a broken or cyclic definition, already reported
        source = _inline(expression.source, self.inlined)
        if source is None:
            self.error(path, "cannot substitute the definitions it reads (unusual literal syntax?)", "syntax")
            return None
        if set(_MACRO_BINDING.findall(expression.source)) & set(expression.defs):
            self.error(path, "a comprehension variable must not have the name of a definition", "invalid")
            return None
        try:
            program = cel.compile(source)
        except Exception as exc:  # pragma: no cover - substituting parenthesised expressions keeps it valid
            self.error(path, f"not a valid CEL expression once definitions are substituted: {_first_line(exc)}")
            return None
        facts = dict.fromkeys(expression.facts)
        for d in expression.defs:
            facts.update(dict.fromkeys(self.definitions[d].facts))
        return Expression(expression.source, program, tuple(facts), expression.defs)

    def probe(self, expression: Expression, path: str, *, want: str | None) -> str | None:
        """Run the expression against typed probe values; returns the CEL type of its result (None if unknown)."""
        result_type: str | None = None
        for probe in self.probes:
            try:
                value = expression.program.execute(probe)
            except TypeError as exc:
                self.error(path, f"type error: {_first_line(exc)}", "type_error")
                return None
            except RuntimeError as exc:
                if "Undefined variable or function" in str(exc):
                    self.error(path, f"calls an unknown function: {_first_line(exc)}", "unknown_function")
                    return None
                continue  # a runtime error that depends on the values (an index out of range, ...)
            except Exception:  # noqa: S112 - division by zero, overflow: the values', not the types' fault
                continue
            result_type = _cel_type(value)
            if want == "bool" and result_type != "boolean":
                self.error(path, f"must give true or false, but gives {result_type}", "type_error")
                return None
            if want == "int" and result_type != "integer":
                self.error(
                    path, f"must give a whole number of KRW, but gives {result_type} (use int(...))", "type_error"
                )
                return None
        types: dict[str, str] = {n: self.facts[n].type for n in expression.facts}
        types.update({n: self.definition_types.get(n) or "" for n in expression.defs})
        enums = {n: self.facts[n].enum for n in expression.facts if self.facts[n].enum}
        for message in _literal_comparison_problems(expression.source, types, enums):
            self.error(path, message, "type_error")
        return result_type

    # ------------------------------------------------------------------ definitions

    def compile_definitions(self, definitions: Mapping[str, str]) -> None:
        for name in definitions:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
                self.error(f"definitions.{name}", "must be a lower-case name (a-z, 0-9, _)")
            elif name in self.facts:
                self.error(f"definitions.{name}", "must not have the name of a fact")
            self.definition_types[name] = None
        compiled: dict[str, Expression] = {}
        for name, source in definitions.items():
            expression = self.expression(source, f"definitions.{name}")
            if expression is not None:
                compiled[name] = expression
        order = _topological({n: e.defs for n, e in compiled.items()}, lambda cycle: self._cycle(cycle))
        for name in order:
            runnable = self.executable(compiled[name], f"definitions.{name}")
            if runnable is None:
                continue
            self.definitions[name] = runnable
            self.inlined[name] = _inline(runnable.source, self.inlined) or runnable.source
            self.definition_types[name] = self.probe(runnable, f"definitions.{name}", want=None)

    def _cycle(self, cycle: list[str]) -> None:
        self.error(f"definitions.{cycle[0]}", f"definitions form a cycle: {' -> '.join(cycle)}", "cycle")

    # ------------------------------------------------------------------ the tree

    def node(self, spec: CriterionSpec, path: str, depth: int) -> Node | None:
        if depth > MAX_DEPTH:
            self.error(path, f"the criteria tree is deeper than {MAX_DEPTH} levels", "malformed")
            return None
        if self.index >= MAX_NODES:
            self.error(path, f"a rule has at most {MAX_NODES} criteria", "malformed")
            return None
        kinds = [
            k
            for k, v in (("expr", spec.expr), ("program", spec.program), ("all", spec.all_), ("any", spec.any_),
                         ("not", spec.not_))
            if v is not None
        ]  # fmt: skip
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            self.error(
                path, f"a criterion has exactly one of expr, program, all, any, not (found: {found})", "malformed"
            )
            return None
        kind = kinds[0]
        index = self.index
        self.index += 1
        if spec.id is not None:
            if spec.id in self.ids:
                self.error(f"{path}.id", f"the criterion id '{spec.id}' is used twice", "duplicate")
            self.ids.add(spec.id)
        label = spec.label.model_dump() if spec.label else None
        if kind in ("expr", "program", "not") and (spec.id is None or label is None):
            what = "a leaf criterion" if kind != "not" else "a 'not' criterion"
            self.error(path, f"{what} needs an id and a label (ko, en) to explain itself", "malformed")
            return None
        if kind == "expr":
            assert spec.expr is not None
            assert spec.id is not None
            assert label is not None
            parsed = self.expression(spec.expr, f"{path}.expr")
            expression = self.executable(parsed, f"{path}.expr") if parsed is not None else None
            if expression is None:
                return None
            self.probe(expression, f"{path}.expr", want="bool")
            leaf = Leaf(index, spec.id, label, spec.legal_reference, expression, None)
            self.leaves.append(leaf)
            return leaf
        if kind == "program":
            assert spec.program is not None
            assert spec.id is not None
            assert label is not None
            if spec.program == self.own_code:
                self.error(f"{path}.program", "a program cannot require itself", "cycle")
                return None
            if spec.program not in self.programs:
                self.error(f"{path}.program", f"there is no program '{spec.program}'", "unknown_program")
                return None
            self.refs.add(spec.program)
            leaf = Leaf(index, spec.id, label, spec.legal_reference, None, spec.program)
            self.leaves.append(leaf)
            return leaf
        if kind == "not":
            assert spec.not_ is not None
            child = self.node(spec.not_, f"{path}.not", depth + 1)
            children: tuple[Node, ...] = (child,) if child is not None else ()
        else:
            items = spec.all_ if kind == "all" else spec.any_
            assert items is not None
            built = [self.node(c, f"{path}.{kind}[{i}]", depth + 1) for i, c in enumerate(items)]
            children = tuple(c for c in built if c is not None)
        return Group(index, kind, children, spec.id, label, spec.legal_reference)


def compile_version(
    spec: VersionSpec,
    facts: FactCatalogue,
    programs: Collection[str],
    *,
    own_code: str | None = None,
    prefix: str = "",
) -> CompiledRule:
    """Compile (and check) one rule version; raises :class:`RuleInvalid` naming every problem's field."""
    compiler = _Compiler(facts, programs, own_code)
    if spec.effective_to is not None and spec.effective_to < spec.effective_from:
        compiler.error("effective_to", "must not be before effective_from")
    compiler.compile_definitions(spec.definitions)
    root = compiler.node(spec.rule, "rule", 1)
    amount = None
    if spec.amount is not None:
        parsed = compiler.expression(spec.amount.expr, "amount.expr")
        amount = compiler.executable(parsed, "amount.expr") if parsed is not None else None
        if amount is not None:
            compiler.probe(amount, "amount.expr", want="int")
    relevant_when = None
    if spec.relevant_when is not None:
        relevant_when = compiler.expression(spec.relevant_when, "relevant_when", allow_defs=False)
        if relevant_when is not None:
            compiler.probe(relevant_when, "relevant_when", want="bool")
    if compiler.errors or root is None:
        errors = compiler.errors or [{"field": "rule", "message": "the rule is empty", "type": "malformed"}]
        for error in errors:
            error["field"] = f"{prefix}{error['field']}"
        raise RuleInvalid(errors)
    leaves = tuple(compiler.leaves)
    definitions = compiler.definitions
    for leaf in leaves:
        if leaf.expression is not None:
            leaf.shown = _shown(leaf.expression, definitions)
            leaf.shown_facts = tuple(n for n in leaf.shown if n not in definitions)
            leaf.shown_defs = tuple(n for n in leaf.shown if n in definitions)
    read: set[str] = set()
    for expression in (*(leaf.expression for leaf in leaves), *definitions.values(), amount):
        if expression is not None:
            read.update(expression.facts)
    return CompiledRule(
        root=root,
        size=compiler.index,
        leaves=leaves,
        definitions=definitions,
        amount=amount,
        amount_period=spec.amount.period if spec.amount else None,
        relevant_when=relevant_when,
        refs=frozenset(compiler.refs),
        facts_read=frozenset(read),
    )


def broken_rule(message: str) -> CompiledRule:
    """A stand-in for a stored version that no longer compiles: every evaluation of it needs a person."""
    return CompiledRule(
        root=Group(0, "all", (), None, None, None),
        size=1,
        leaves=(),
        definitions={},
        amount=None,
        amount_period=None,
        relevant_when=None,
        refs=frozenset(),
        facts_read=frozenset(),
        error=message,
    )


def _shown(expression: Expression, definitions: Mapping[str, Expression]) -> tuple[str, ...]:
    """The facts an expression reads (through its definitions too), then the definitions, for the explanation."""
    out: dict[str, None] = dict.fromkeys(expression.facts)
    for name in expression.defs:
        out.update(dict.fromkeys(_shown(definitions[name], definitions)))
        out[name] = None
    return tuple(out)


def _inline(source: str, inlined: Mapping[str, str]) -> str | None:
    """``source`` with each definition it names replaced by its (already inlined) expression in parentheses."""
    tokens = _tokens(source)
    if tokens is None:
        return None
    out = []
    for i, (kind, text) in enumerate(tokens):
        before = tokens[i - 1][1] if i > 0 else None
        after = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if kind == "id" and text in inlined and before != "." and after != "(":
            out.append(f"({inlined[text]})")
        else:
            out.append(text)
    return " ".join(out)


def _topological(graph: Mapping[str, tuple[str, ...]], on_cycle: Callable[[list[str]], None]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            on_cycle([*trail[trail.index(name) :], name])
            return
        state[name] = 1
        for dep in graph.get(name, ()):
            if dep in graph:
                visit(dep, [*trail, name])
        state[name] = 2
        order.append(name)

    for name in graph:
        visit(name, [])
    return order


def find_cycle(graph: Mapping[str, Collection[str]]) -> list[str] | None:
    """A cycle in a directed graph (program -> programs it requires), or None."""
    found: list[list[str]] = []
    _topological({k: tuple(v) for k, v in graph.items()}, found.append)
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------- probes and lint


_PROBE_DATES = (dt.date(2020, 1, 1), dt.date(2021, 6, 15))


def _probe_of_kind(kind: str | None, fact: FactType | None, n: int) -> Any:
    if kind == "integer":
        return (7, 3)[n]
    if kind == "number":
        return (7.5, 2.5)[n]
    if kind == "boolean":
        return (True, False)[n]
    if kind == "string":
        if fact is not None and fact.enum:
            return fact.enum[0] if n == 0 else fact.enum[-1]
        return ("a", "b")[n]
    if kind == "date":
        return cel_value(_PROBE_DATES[n])
    if kind == "list":
        item = _probe_of_kind(fact.items if fact else None, None, n)
        return [item, item] if n == 0 else [item]
    return None


def _probe_values(facts: FactCatalogue, n: int) -> dict[str, Any]:
    return {name: _probe_of_kind(t.type, t, n) for name, t in facts.types.items()}


def _cel_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dt.datetime):
        return "date"
    if isinstance(value, dt.timedelta):
        return "duration"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null"
    return type(value).__name__


_TOKEN = re.compile(
    r"""\s*(?:(?P<str>(?:[rR][bB]?|[bB][rR]?)?(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''"""
    r"""|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'))"""
    r"""|(?P<num>0[xX][0-9a-fA-F]+[uU]?|\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)"""
    r"""|(?P<id>[A-Za-z_][A-Za-z0-9_]*)"""
    r"""|(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:()\[\]{},.]))"""
)
_OPEN = {None, "(", "&&", "||", ",", "?", ":", "["}
_CLOSE = {None, ")", "&&", "||", ",", "?", ":", "]"}


def _tokens(source: str) -> list[tuple[str, str]] | None:
    out: list[tuple[str, str]] = []
    pos = 0
    source = source.rstrip()
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None or match.end() == pos:
            return None
        kind = match.lastgroup or "op"
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def _literal(token: tuple[str, str]) -> tuple[str, Any] | None:
    kind, text = token
    if kind == "str":
        prefix = text[: len(text) - len(text.lstrip("rRbB"))]
        if "b" in prefix.lower():
            return None  # bytes
        body = text[len(prefix) :]
        quote = 3 if body[:3] in ('"""', "'''") else 1
        return "string", body[quote:-quote]
    if kind == "num":
        decimal = not text.lower().startswith("0x") and any(c in text for c in ".eE")
        return ("number", text) if decimal else ("integer", text)
    if kind == "id" and text in ("true", "false"):
        return "boolean", text
    if kind == "id" and text == "null":
        return "null", text
    return None


def _literal_comparison_problems(
    source: str, types: Mapping[str, str], enums: Mapping[str, tuple[str, ...] | None]
) -> list[str]:
    """CEL answers ``x == "a"`` with false when ``x`` is a number instead of refusing it, so comparisons of a fact with
    a literal (and ``in`` lists of literals) are checked against the fact's type and allowed values here."""
    tokens = _tokens(source)
    if tokens is None:
        return []
    problems: list[str] = []

    def at(i: int) -> str | None:
        return tokens[i][1] if 0 <= i < len(tokens) else None

    def name_at(i: int) -> str | None:
        if not 0 <= i < len(tokens):
            return None
        kind, text = tokens[i]
        if kind != "id" or text not in types or at(i - 1) == "." or at(i + 1) in (".", "("):
            return None
        return text

    def check(name: str, literal: tuple[str, Any]) -> None:
        fact_type = types[name]
        lit_type, value = literal
        numeric = {"integer", "number"}
        if fact_type in numeric and lit_type in numeric:
            return
        if fact_type == lit_type:
            allowed = enums.get(name)
            if lit_type == "string" and allowed and value not in allowed:
                problems.append(f"'{value}' is not one of the values of {name}: {', '.join(allowed)}")
            return
        if fact_type in ("", "list", "duration"):
            return
        problems.append(f"compares {name} ({fact_type}) with {value} ({lit_type}): this is never true")

    for i, (_kind, op) in enumerate(tokens):
        # Only operands that are single tokens between operators of lower precedence are checked.
        if op in ("==", "!=") and at(i - 2) in _OPEN and at(i + 2) in _CLOSE and 1 <= i < len(tokens) - 1:
            left_name, right_name = name_at(i - 1), name_at(i + 1)
            left_literal, right_literal = _literal(tokens[i - 1]), _literal(tokens[i + 1])
            if left_name and right_literal:
                check(left_name, right_literal)
            if right_name and left_literal:
                check(right_name, left_literal)
            if left_name and right_name and left_name != right_name:
                a, b = types[left_name], types[right_name]
                if a and b and a != b and not {a, b} <= {"integer", "number"}:
                    problems.append(f"compares {left_name} ({a}) with {right_name} ({b}): this is never true")
        if op == "in" and at(i + 1) == "[" and at(i - 2) in _OPEN:
            name = name_at(i - 1)
            if not name:
                continue
            j = i + 2
            while j < len(tokens):
                literal = _literal(tokens[j])
                if literal is None or at(j + 1) not in (",", "]"):
                    break
                check(name, literal)
                if at(j + 1) == "]":
                    break
                j += 2
    return problems


def _first_line(exc: BaseException) -> str:
    """The useful part of an error: CEL appends long advice after its first sentence, and a parse error a picture."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
    for cut in (" CEL does not coerce", " Check that the variable", " Convert explicitly"):
        text = text.split(cut)[0]
    return text[:300] or type(exc).__name__


# ---------------------------------------------------------------------------------------------- evaluating


@dataclass(slots=True)
class ProgramOutcome:
    """The result of one program's rule for one environment, before it becomes a ProgramDetermination."""

    outcome: str
    amount: int | None = None
    criteria: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str | None = None


_UNSET = object()
_UNKNOWN_VALUE = object()

RefResolver = Callable[[str], ProgramOutcome]


class RuleRun:
    """One evaluation of one compiled rule against one environment."""

    __slots__ = ("defs", "env", "errors", "leaf_missing", "refs", "rule", "statuses")

    def __init__(self, rule: CompiledRule, env: Environment, refs: RefResolver) -> None:
        self.rule = rule
        self.env = env
        self.refs = refs
        self.statuses: list[str] = [UNKNOWN] * rule.size
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
            raise RuleFailed(f"definition {name}: {_first_line(exc)}") from exc
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

    def leaf(self, leaf: Leaf) -> str:
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
                raise RuleFailed(f"{leaf.id}: {_first_line(exc)}") from exc
            if result is True:
                return PASSED
            if result is False:
                return FAILED
            raise RuleFailed(f"{leaf.id}: gave {result!r}, not true or false")
        missing = [f for f in expression.facts if f not in values]
        try:
            result = self.run(expression, missing)
        except Exception as exc:
            raise RuleFailed(f"{leaf.id}: {_first_line(exc)}") from exc
        if result is True:
            return PASSED
        if result is False:
            return FAILED
        if result is _UNKNOWN_VALUE:
            self.leaf_missing[leaf.index] = missing
            return UNKNOWN
        raise RuleFailed(f"{leaf.id}: gave {result!r}, not true or false")

    def _required_program(self, leaf: Leaf) -> str:
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

    def explain(self, out: list[dict[str, Any]]) -> str:
        """Evaluate every criterion (no short-cut, so each reports its status), children before their group, then
        record the explanation in reading order. This is the per-application hot path, hence the inlined common
        case: a leaf whose facts are all known runs straight against the shared context."""
        rule = self.rule
        statuses = self.statuses
        env = self.env
        values = env.values
        context = env.context
        fast = not env.errors
        for node in rule.postorder:
            if node.__class__ is Leaf:
                status = None
                expression = node.expression
                if fast and expression is not None:
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
                out.append(
                    {
                        "id": node.id,
                        "label": node.label,
                        "legal_reference": node.legal_reference,
                        "status": status,
                        "values": shown_values,
                        "sources": shown_sources,
                    }
                )
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

    def decide(self, node: Node) -> str:
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

    def _criterion(self, leaf: Leaf, status: str) -> dict[str, Any]:
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
        return {
            "id": leaf.id,
            "label": leaf.label,
            "legal_reference": leaf.legal_reference,
            "status": status,
            "values": values,
            "sources": sources,
        }

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
            raise RuleFailed(f"amount: {_first_line(exc)}") from exc
        if value is _UNKNOWN_VALUE:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RuleFailed(f"amount: gave {value!r}, not a number")
        return int(value)


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
            return ProgramOutcome(ELIGIBLE, run.amount() if rule.amount is not None else None, criteria)
        if status == FAILED:
            return ProgramOutcome(INELIGIBLE, None, criteria)
        missing: dict[str, None] = {}
        if explain:
            run.collect_missing(rule.root, missing)
        return ProgramOutcome(NEEDS_INFORMATION, None, criteria, list(missing))
    except RuleFailed as exc:
        return ProgramOutcome(NEEDS_REVIEW, None, criteria, [], str(exc)[:1000])
    except Exception as exc:  # anything else a rule can do wrong must not stop the other programs
        return ProgramOutcome(NEEDS_REVIEW, None, criteria, [], f"{type(exc).__name__}: {_first_line(exc)}")


def is_relevant(rule: CompiledRule, env: Environment) -> bool:
    """Whether a program outside the application's life event applies too (its ``relevant_when`` is true)."""
    expression = rule.relevant_when
    if expression is None or any(f not in env.values for f in expression.facts):
        return False
    try:
        return expression.program.execute(env.context) is True
    except Exception:
        return False
