"""Checking a rule version before it is accepted, beyond what CEL's compiler refuses: each expression is run against
typed probe values of its facts (type errors, unknown functions, a result of the wrong type); comparisons of a fact
with a literal are checked against the fact's type and allowed values (CEL answers them with false instead of
refusing them); and definitions, or programs, that depend on each other in a cycle are found."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from services.eligibility.facts import FactCatalogue, FactType, cel_value
from services.eligibility.rules.nodes import Expression, first_line

# A problem found: (message, kind) — the kind is the ``type`` of the problem+json error.
Problem = tuple[str, str]


def probe_expression(
    expression: Expression,
    probes: list[dict[str, Any]],
    facts: FactCatalogue,
    definition_types: Mapping[str, str | None],
    *,
    want: str | None,
) -> tuple[str | None, list[Problem]]:
    """Run the expression against typed probe values; returns the CEL type of its result (None if unknown) and the
    problems found."""
    result_type: str | None = None
    for values in probes:
        try:
            value = expression.program.execute(values)
        except TypeError as exc:
            return None, [(f"type error: {first_line(exc)}", "type_error")]
        except RuntimeError as exc:
            if "Undefined variable or function" in str(exc):
                return None, [(f"calls an unknown function: {first_line(exc)}", "unknown_function")]
            continue  # a runtime error that depends on the values (an index out of range, ...)
        except Exception:  # noqa: S112 - division by zero, overflow: the values', not the types' fault
            continue
        result_type = _cel_type(value)
        if want == "bool" and result_type != "boolean":
            return None, [(f"must give true or false, but gives {result_type}", "type_error")]
        if want == "int" and result_type != "integer":
            return None, [(f"must give a whole number of KRW, but gives {result_type} (use int(...))", "type_error")]
    types: dict[str, str] = {n: facts[n].type for n in expression.facts}
    types.update({n: definition_types.get(n) or "" for n in expression.defs})
    enums = {n: facts[n].enum for n in expression.facts if facts[n].enum}
    return result_type, [(m, "type_error") for m in literal_comparison_problems(expression.source, types, enums)]


# ---------------------------------------------------------------------------------------------- probe values


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


def probe_values(facts: FactCatalogue, n: int) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------- CEL tokens and literals


_TOKEN = re.compile(
    r"""\s*(?:(?P<str>(?:[rR][bB]?|[bB][rR]?)?(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''"""
    r"""|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'))"""
    r"""|(?P<num>0[xX][0-9a-fA-F]+[uU]?|\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)"""
    r"""|(?P<id>[A-Za-z_][A-Za-z0-9_]*)"""
    r"""|(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:()\[\]{},.]))"""
)
_OPEN = {None, "(", "&&", "||", ",", "?", ":", "["}
_CLOSE = {None, ")", "&&", "||", ",", "?", ":", "]"}


def tokenize(source: str) -> list[tuple[str, str]] | None:
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


def literal_comparison_problems(
    source: str, types: Mapping[str, str], enums: Mapping[str, tuple[str, ...] | None]
) -> list[str]:
    """CEL answers ``x == "a"`` with false when ``x`` is a number instead of refusing it, so comparisons of a fact with
    a literal (and ``in`` lists of literals) are checked against the fact's type and allowed values here."""
    tokens = tokenize(source)
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


# ---------------------------------------------------------------------------------------------- cycles


def topological(graph: Mapping[str, tuple[str, ...]], on_cycle: Callable[[list[str]], None]) -> list[str]:
    """The names in dependency order (each after what it depends on); every cycle met is passed to ``on_cycle``."""
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
    topological({k: tuple(v) for k, v in graph.items()}, found.append)
    return found[0] if found else None
