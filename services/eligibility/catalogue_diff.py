"""What changed in the catalogue between two dates: for each program, the rule version in force on each day and what
differs between them — new and ended programs, version numbers and dates, legal sources, definitions (thresholds),
criteria (their expressions, labels and legal references, added or removed), amounts, when the rule applies — and the
median income table the thresholds are a percentage of. Read from the YAML catalogue or from the database (the
truth once seeded, with the versions added through ``PUT /v1/programs/{code}``); ``onestop catalogue diff`` prints
it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from services.eligibility.catalogue import CatalogueFiles, ProgramData, version_in_force
from services.eligibility.facts import MedianIncomeTable
from services.eligibility.repository import Repository
from services.eligibility.rules.lint import tokenize
from services.eligibility.specs import CriterionSpec, VersionSpec

ChangeKind = Literal["new", "ended", "changed"]


@dataclass(frozen=True)
class VersionRef:
    """A stored or written version, as the catalogue's one rule of which version is in force reads it."""

    version: int
    effective_from: dt.date
    effective_to: dt.date | None
    superseded: bool
    spec: VersionSpec

    def span(self) -> str:
        end = f" to {self.effective_to.isoformat()}" if self.effective_to else ""
        return f"v{self.version} (from {self.effective_from.isoformat()}{end})"


@dataclass
class ProgramChange:
    code: str
    name: str
    department: str
    kind: ChangeKind
    before: VersionRef | None
    after: VersionRef | None
    lines: list[str] = field(default_factory=list)  # what differs, one statement each


@dataclass
class MedianChange:
    before: int | None  # the table's year
    after: int | None
    source: str | None
    lines: list[str] = field(default_factory=list)
    programs: list[str] = field(default_factory=list)  # whose rule in force on the second date reads it


@dataclass
class CatalogueDiff:
    first: dt.date
    second: dt.date
    programs: list[ProgramChange]
    unchanged: list[str]  # codes with the same version on both days
    medians: MedianChange | None

    def render(self, origin: str) -> str:
        out = [f"Catalogue changes from {self.first.isoformat()} to {self.second.isoformat()} ({origin})", ""]
        if self.medians is not None:
            m = self.medians
            before, after = (f"the {y} table" if y else "no table" for y in (m.before, m.after))
            out.append(f"기준 중위소득 (median income): {before} -> {after}")
            if m.source:
                out.append(f"  source: {m.source}")
            out += [f"  {line}" for line in m.lines]
            if m.programs:
                out.append(f"  thresholds that are a share of it move with it in: {', '.join(m.programs)}")
            out.append("")
        for change in self.programs:
            if change.kind == "new":
                head = f"new: {change.code} ({change.name}, {change.department}) {_span(change.after)}"
            elif change.kind == "ended":
                head = f"ended: {change.code} ({change.name}, {change.department}) {_span(change.before)}"
            else:
                head = f"{change.code} ({change.name}, {change.department}): {_span(change.before)} -> " + _span(
                    change.after
                )
            out.append(head)
            out += [f"  {line}" for line in change.lines]
            out.append("")
        counts = {kind: sum(1 for c in self.programs if c.kind == kind) for kind in ("changed", "new", "ended")}
        out.append(
            f"{counts['changed']} changed, {counts['new']} new, {counts['ended']} ended, "
            f"{len(self.unchanged)} unchanged"
        )
        return "\n".join(out) + "\n"


def _span(version: VersionRef | None) -> str:
    return version.span() if version is not None else "(none)"


# ---------------------------------------------------------------------------------------------- diffing


def diff_catalogue(
    programs: Iterable[ProgramData], medians: MedianIncomeTable, first: dt.date, second: dt.date
) -> CatalogueDiff:
    changes: list[ProgramChange] = []
    unchanged: list[str] = []
    on_median: list[str] = []
    for program in sorted(programs, key=lambda p: p.code):
        versions = [VersionRef(n, s.effective_from, s.effective_to, superseded, s) for n, s, superseded in
                    program.versions]  # fmt: skip
        before, after = version_in_force(versions, first), version_in_force(versions, second)
        if before is None and after is None:
            continue
        if after is not None and _reads(after.spec, "median_income"):
            on_median.append(program.code)
        name, department = program.attributes.name.ko, program.attributes.department.value
        if before is not None and after is not None and before.version == after.version:
            unchanged.append(program.code)
            continue
        if before is None:
            kind: ChangeKind = "new"
        elif after is None:
            kind = "ended"
        else:
            kind = "changed"
        change = ProgramChange(program.code, name, department, kind, before, after)
        if before is not None and after is not None:
            change.lines = list(diff_versions(before.spec, after.spec))
        changes.append(change)
    median_change = _medians(medians, first, second)
    if median_change is not None:
        median_change.programs = on_median
    return CatalogueDiff(first, second, changes, unchanged, median_change)


def _reads(spec: VersionSpec, name: str) -> bool:
    """Whether any expression of the version names ``name``."""
    sources = [*spec.definitions.values(), *(c.text for c in _criteria(spec.rule).values() if c.kind == "expr")]
    if spec.amount is not None:
        sources.append(spec.amount.expr)
    return any(("id", name) in (tokenize(source) or ()) for source in sources)


def _medians(medians: MedianIncomeTable, first: dt.date, second: dt.date) -> MedianChange | None:
    before, after = medians.in_force(first), medians.in_force(second)
    if before is after:
        return None
    change = MedianChange(
        before.year if before else None, after.year if after else None, after.source if after else None
    )
    sizes = sorted(set(before.amounts if before else {}) | set(after.amounts if after else {}))
    for size in sizes:
        old = before.amounts.get(size) if before else None
        new = after.amounts.get(size) if after else None
        if old != new:
            person = "person" if size == 1 else "persons"
            change.lines.append(f"{size} {person}: {_money(old)} -> {_money(new)}")
    return change


def diff_versions(before: VersionSpec, after: VersionSpec) -> Iterator[str]:
    """What differs between two versions of one program, one statement a line."""
    if before.source != after.source:
        yield f"source: {before.source}"
        yield f"     -> {after.source}"
    if before.effective_to != after.effective_to and after.effective_to is not None:
        yield f"ends on {after.effective_to.isoformat()}"
    yield from _named("definition", before.definitions, after.definitions)
    old_criteria, new_criteria = _criteria(before.rule), _criteria(after.rule)
    for key in [*old_criteria, *(k for k in new_criteria if k not in old_criteria)]:
        old, new = old_criteria.get(key), new_criteria.get(key)
        if old is None:
            assert new is not None
            yield f"criterion {key} added: {new.describe()}"
        elif new is None:
            yield f"criterion {key} removed (was {old.describe()})"
        else:
            yield from old.compare(new)
    old_amount = (before.amount.expr, before.amount.period) if before.amount else None
    new_amount = (after.amount.expr, after.amount.period) if after.amount else None
    if old_amount != new_amount:
        if old_amount is None:
            assert new_amount is not None
            yield f"amount added: `{new_amount[0]}` ({new_amount[1]})"
        elif new_amount is None:
            yield f"amount removed (was `{old_amount[0]}`, {old_amount[1]})"
        else:
            yield _changed("amount", old_amount[0], new_amount[0], f" ({old_amount[1]} -> {new_amount[1]})"
                           if old_amount[1] != new_amount[1] else "")  # fmt: skip
    old_ref = before.amount.legal_reference if before.amount else None
    new_ref = after.amount.legal_reference if after.amount else None
    if old_ref != new_ref and old_amount is not None and new_amount is not None:
        yield f"amount's legal reference: {old_ref or '(none)'} -> {new_ref or '(none)'}"
    if before.relevant_when != after.relevant_when:
        yield f"relevant when: `{before.relevant_when or '(never)'}` -> `{after.relevant_when or '(never)'}`"


def _named(what: str, before: dict[str, str], after: dict[str, str]) -> Iterator[str]:
    for name in [*before, *(n for n in after if n not in before)]:
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if old is None:
            yield f"{what} {name} added: `{new}`"
        elif new is None:
            yield f"{what} {name} removed (was `{old}`)"
        else:
            yield _changed(f"{what} {name}", old, new)


def _changed(what: str, old: str, new: str, suffix: str = "") -> str:
    figures = changed_figures(old, new)
    shown = f" (figures: {', '.join(f'{_money(a)} -> {_money(b)}' for a, b in figures)})" if figures else ""
    return f"{what}: `{old}` -> `{new}`{suffix}{shown}"


def changed_figures(old: str, new: str) -> list[tuple[int, int]]:
    """The numbers that changed when only numbers changed (a threshold updated for the year); else none."""
    a, b = tokenize(old), tokenize(new)
    if a is None or b is None or len(a) != len(b):
        return []
    out: list[tuple[int, int]] = []
    for (kind_a, text_a), (kind_b, text_b) in zip(a, b, strict=True):
        if text_a == text_b:
            continue
        if kind_a != "num" or kind_b != "num" or not text_a.isdigit() or not text_b.isdigit():
            return []
        pair = (int(text_a), int(text_b))
        if pair not in out:
            out.append(pair)
    return out


def _money(value: int | None) -> str:
    return "(none)" if value is None else f"{value:,}"


@dataclass(frozen=True)
class _Criterion:
    path: str  # where it sits: the kinds of the groups above it
    kind: str  # expr | program | all | any | not
    text: str  # the expression, the program required, or the members' ids
    label: tuple[str, str] | None
    legal_reference: str | None

    def describe(self) -> str:
        body = {"expr": f"`{self.text}`", "program": f"eligible for {self.text}"}.get(self.kind, f"{self.kind} of "
                                                                                         f"{self.text}")  # fmt: skip
        return f"{body} [{self.path}]"

    def compare(self, new: _Criterion) -> Iterator[str]:
        key = f"criterion {new.path.rsplit('/', 1)[-1]}"
        if (self.kind, self.text) != (new.kind, new.text):
            if self.kind == new.kind == "expr":
                yield _changed(key, self.text, new.text)
            elif self.kind == new.kind and self.kind in ("all", "any", "not"):
                yield f"{key} ({self.kind}): members {self.text} -> {new.text}"
            else:
                yield f"{key}: {self.describe()} -> {new.describe()}"
        elif self.path != new.path:
            yield f"{key}: moved from {self.path} to {new.path}"
        if self.label != new.label and new.label is not None:
            yield f"{key} label: {new.label[0]} / {new.label[1]}"
        if self.legal_reference != new.legal_reference:
            yield f"{key} legal reference: {self.legal_reference or '(none)'} -> {new.legal_reference or '(none)'}"


def _criteria(root: CriterionSpec) -> dict[str, _Criterion]:
    """Every criterion with an id (and each unnamed group by its position), in reading order."""
    out: dict[str, _Criterion] = {}

    def walk(node: CriterionSpec, path: Sequence[str], position: str) -> None:
        key = node.id or position
        here = "/".join([*path, key])
        members: list[CriterionSpec] = node.all_ or node.any_ or ([node.not_] if node.not_ else [])
        kind = next(k for k, v in (("expr", node.expr), ("program", node.program), ("all", node.all_),
                                   ("any", node.any_), ("not", node.not_)) if v is not None)  # fmt: skip
        text: Any = node.expr or node.program or ", ".join(m.id or "(group)" for m in members)
        label = (node.label.ko, node.label.en) if node.label else None
        out[key] = _Criterion(here, kind, str(text), label, node.legal_reference)
        for i, member in enumerate(members):
            walk(member, [*path, key], f"{key}[{i}]")

    walk(root, [], "rule")
    return out


# ---------------------------------------------------------------------------------------------- the two sources


def diff_files(files: CatalogueFiles, first: dt.date, second: dt.date) -> CatalogueDiff:
    """Between two dates, in the YAML catalogue."""
    return diff_catalogue(files.program_data(), MedianIncomeTable(files.median_years), first, second)


async def diff_stored(repo: Repository, first: dt.date, second: dt.date) -> CatalogueDiff:
    """Between two dates, in the catalogue the service serves (its database)."""
    programs = await repo.load_program_data()
    return diff_catalogue(programs, MedianIncomeTable(await repo.median_years()), first, second)
