"""Reading the shape of a CEL expression: the CEL binding compiles and runs expressions but exposes no syntax tree,
and proving the catalogue needs one — which conditionals (``a ? b : c``) an expression holds and which comparisons of
a fact with a limit (``fact <= N``). This is a small recursive-descent parser of CEL's grammar over the tokens of
``lint.tokenize``; it never evaluates anything, and an expression it cannot read gives ``None`` (CEL's own compiler
stays the judge of what is valid).

Each node keeps the tokens it spans, so its source can be rebuilt (tokens joined by spaces) and compiled on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from services.eligibility.rules.lint import tokenize

# Comparisons that order their operands: the limits and deadlines of a rule.
ORDERING = frozenset({"<", "<=", ">", ">="})
MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
# Macros whose first argument names a variable bound to each element of the list they are called on.
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})

_RELATIONS = frozenset({"<", "<=", ">", ">=", "==", "!=", "in"})


@dataclass(eq=False)
class Syntax:
    """A node: ``kind`` is one of ternary, or, and, relation, arithmetic, unary, call, select, index, list, map,
    literal, ident. ``op`` is the operator (or the called function's name, the selected field's name, the
    identifier). ``target`` is the receiver of a member call (``x.size()``, ``xs.map(...)``)."""

    kind: str
    op: str
    children: tuple[Syntax, ...]
    tokens: tuple[str, ...] = field(repr=False)
    target: Syntax | None = None

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def walk(self) -> Iterator[Syntax]:
        yield self
        if self.target is not None:
            yield from self.target.walk()
        for child in self.children:
            yield from child.walk()

    def identifiers(self, bound: frozenset[str] = frozenset()) -> set[str]:
        """The variables this node reads (facts, definitions, or variables of macros around it), not those its
        own macros bind."""
        out: set[str] = set()
        _identifiers(self, bound, out)
        return out


def _identifiers(node: Syntax, bound: frozenset[str], out: set[str]) -> None:
    if node.kind == "ident":
        if node.op not in bound:
            out.add(node.op)
        return
    if node.kind == "call" and node.op in MACROS and node.target is not None and node.children:
        _identifiers(node.target, bound, out)
        variable = node.children[0]
        inner = bound | {variable.op} if variable.kind == "ident" else bound
        for child in node.children[1:]:
            _identifiers(child, inner, out)
        return
    if node.kind == "call" and node.op == "has":
        for child in node.children:  # has(x.f): reads x
            _identifiers(child, bound, out)
        return
    if node.target is not None:
        _identifiers(node.target, bound, out)
    for child in node.children:
        _identifiers(child, bound, out)


class _Unreadable(ValueError):
    pass


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.kinds = [k for k, _ in tokens]
        self.texts = [t for _, t in tokens]
        self.pos = 0

    def peek(self, offset: int = 0) -> str | None:
        i = self.pos + offset
        return self.texts[i] if i < len(self.texts) else None

    def kind(self) -> str | None:
        return self.kinds[self.pos] if self.pos < len(self.kinds) else None

    def take(self, expected: str | None = None) -> str:
        text = self.peek()
        if text is None or (expected is not None and text != expected):
            raise _Unreadable(f"expected {expected!r} at token {self.pos}, found {text!r}")
        self.pos += 1
        return text

    def node(
        self, kind: str, op: str, start: int, children: tuple[Syntax, ...] = (), target: Syntax | None = None
    ) -> Syntax:
        return Syntax(kind, op, children, tuple(self.texts[start : self.pos]), target)

    # expr = or ["?" or ":" expr]
    def expr(self) -> Syntax:
        start = self.pos
        condition = self.or_()
        if self.peek() != "?":
            return condition
        self.take("?")
        then = self.or_()
        self.take(":")
        otherwise = self.expr()
        return self.node("ternary", "?:", start, (condition, then, otherwise))

    def or_(self) -> Syntax:
        return self._chain("or", "||", self.and_)

    def and_(self) -> Syntax:
        return self._chain("and", "&&", self.relation)

    def _chain(self, kind: str, op: str, operand: Callable[[], Syntax]) -> Syntax:
        start = self.pos
        left = operand()
        while self.peek() == op:
            self.take(op)
            right = operand()
            left = self.node(kind, op, start, (left, right))
        return left

    def relation(self) -> Syntax:
        start = self.pos
        left = self.addition()
        while self.peek() in _RELATIONS:
            op = self.take()
            right = self.addition()
            left = self.node("relation", op, start, (left, right))
        return left

    def addition(self) -> Syntax:
        return self._arithmetic(("+", "-"), self.multiplication)

    def multiplication(self) -> Syntax:
        return self._arithmetic(("*", "/", "%"), self.unary)

    def _arithmetic(self, ops: tuple[str, ...], operand: Callable[[], Syntax]) -> Syntax:
        start = self.pos
        left = operand()
        while self.peek() in ops:
            op = self.take()
            right = operand()
            left = self.node("arithmetic", op, start, (left, right))
        return left

    def unary(self) -> Syntax:
        start = self.pos
        if self.peek() in ("!", "-"):
            op = self.take()
            operand = self.unary()
            return self.node("unary", op, start, (operand,))
        return self.member()

    def member(self) -> Syntax:
        start = self.pos
        node = self.primary()
        while self.peek() in (".", "["):
            if self.take() == ".":
                if self.kind() != "id":
                    raise _Unreadable("a field or method name must follow '.'")
                name = self.take()
                if self.peek() == "(":
                    node = self.node("call", name, start, self.arguments(), target=node)
                else:
                    node = self.node("select", name, start, (), target=node)
            else:
                index = self.expr()
                self.take("]")
                node = self.node("index", "[]", start, (index,), target=node)
        return node

    def arguments(self) -> tuple[Syntax, ...]:
        self.take("(")
        out: list[Syntax] = []
        while self.peek() != ")":
            out.append(self.expr())
            if self.peek() == ",":
                self.take(",")
            elif self.peek() != ")":
                raise _Unreadable("expected ',' or ')' in the arguments")
        self.take(")")
        return tuple(out)

    def primary(self) -> Syntax:
        start = self.pos
        text, kind = self.peek(), self.kind()
        if text is None:
            raise _Unreadable("the expression ends too early")
        if text == "(":
            self.take("(")
            inner = self.expr()
            self.take(")")
            return inner
        if text == "[":
            self.take("[")
            items: list[Syntax] = []
            while self.peek() != "]":
                items.append(self.expr())
                if self.peek() == ",":
                    self.take(",")
                elif self.peek() != "]":
                    raise _Unreadable("expected ',' or ']' in a list")
            self.take("]")
            return self.node("list", "[]", start, tuple(items))
        if text == "{":
            self.take("{")
            entries: list[Syntax] = []
            while self.peek() != "}":
                entries.append(self.expr())
                self.take(":")
                entries.append(self.expr())
                if self.peek() == ",":
                    self.take(",")
                elif self.peek() != "}":
                    raise _Unreadable("expected ',' or '}' in a map")
            self.take("}")
            return self.node("map", "{}", start, tuple(entries))
        if kind in ("str", "num"):
            self.take()
            return self.node("literal", text, start)
        if kind == "id":
            self.take()
            if text in ("true", "false", "null"):
                return self.node("literal", text, start)
            if self.peek() == "(":
                return self.node("call", text, start, self.arguments())
            return self.node("ident", text, start)
        raise _Unreadable(f"unexpected {text!r}")


def parse(source: str) -> Syntax | None:
    """The syntax tree of a CEL expression, or None when this reader cannot follow it."""
    tokens = tokenize(source)
    if not tokens:
        return None
    parser = _Parser(tokens)
    try:
        node = parser.expr()
    except _Unreadable:
        return None
    if parser.pos != len(tokens):
        return None
    return node
