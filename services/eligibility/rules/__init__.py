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

Three jobs, three modules: ``compile`` (the tree and its expressions, into ``nodes``), ``lint`` (probing, literal
comparisons, cycles) and ``evaluate``. The names below are the engine's public face.
"""

from services.eligibility.rules.compile import MAX_DEPTH, MAX_NODES, RuleInvalid, broken_rule, compile_version
from services.eligibility.rules.evaluate import ProgramOutcome, RuleFailed, evaluate_rule, is_relevant
from services.eligibility.rules.lint import find_cycle
from services.eligibility.rules.nodes import CompiledRule, Expression, Group, Leaf, Node

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "CompiledRule",
    "Expression",
    "Group",
    "Leaf",
    "Node",
    "ProgramOutcome",
    "RuleFailed",
    "RuleInvalid",
    "broken_rule",
    "compile_version",
    "evaluate_rule",
    "find_cycle",
    "is_relevant",
]
