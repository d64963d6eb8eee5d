"""The compiled form of a rule version: a criteria tree of leaves (one CEL program each, or another program's
outcome) and groups (``all``, ``any``, ``not``), with the definitions and the amount beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    # Typed stand-in values of its facts (two sets), to find which missing facts an unknown result waits on.
    probes: tuple[dict[str, Any], ...] = field(default=(), compare=False)

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


def first_line(exc: BaseException) -> str:
    """The useful part of an error: CEL appends long advice after its first sentence, and a parse error a picture."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
    for cut in (" CEL does not coerce", " Check that the variable", " Convert explicitly"):
        text = text.split(cut)[0]
    return text[:300] or type(exc).__name__
