"""Compiling a rule version: each leaf's CEL expression once, the definitions substituted into the expressions that
read them (in dependency order), the criteria tree checked for shape (one kind per criterion, ids and labels to
explain itself, depth and size limits), and every expression linted (see lint.py). A version that cannot be accepted
raises :class:`RuleInvalid` naming every problem's field."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import cel

from services.eligibility.facts import FactCatalogue
from services.eligibility.rules.lint import probe_expression, probe_values, tokenize, topological
from services.eligibility.rules.nodes import CompiledRule, Expression, Group, Leaf, Node, first_line
from services.eligibility.specs import CriterionSpec, VersionSpec

MAX_DEPTH = 8
MAX_NODES = 200

_MACRO_BINDING = re.compile(r"\b(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")


class RuleInvalid(ValueError):
    """A rule version that cannot be accepted; ``errors`` name each field and the reason."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class _Compiler:
    def __init__(self, facts: FactCatalogue, programs: Collection[str], own_code: str | None) -> None:
        self.facts = facts
        self.programs = programs
        self.own_code = own_code
        self.errors: list[dict[str, str]] = []
        self.definitions: dict[str, Expression] = {}
        self.definition_types: dict[str, str | None] = {}
        self.probes = [probe_values(facts, 0), probe_values(facts, 1)]
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
            self.error(path, f"not a valid CEL expression: {first_line(exc)}", "syntax")
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
            self.error(path, f"not a valid CEL expression once definitions are substituted: {first_line(exc)}")
            return None
        facts = dict.fromkeys(expression.facts)
        for d in expression.defs:
            facts.update(dict.fromkeys(self.definitions[d].facts))
        return Expression(expression.source, program, tuple(facts), expression.defs)

    def probe(self, expression: Expression, path: str, *, want: str | None) -> str | None:
        """Lint the expression (see probe_expression); returns the CEL type of its result (None if unknown)."""
        result_type, problems = probe_expression(expression, self.probes, self.facts, self.definition_types, want=want)
        for message, kind in problems:
            self.error(path, message, kind)
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
        order = topological({n: e.defs for n, e in compiled.items()}, lambda cycle: self._cycle(cycle))
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
            facts_read = leaf.expression.facts
            leaf.expression.probes = tuple({f: probe[f] for f in facts_read} for probe in compiler.probes)
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
    tokens = tokenize(source)
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
