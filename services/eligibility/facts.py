"""Facts: the typed names a rule may read, their values with provenance, and the facts derived from them.

A fact comes from one of three places: what the resident *declared* in the application, the resident *registry*
(intake's ``resident.updated``), or a *department* source (``facts.reported`` / ``POST /v1/facts``). A department's
value is used only while the resident consents to that department's data, only while it is valid, and only for facts
that department is an authority for; then it overrides the registry, which overrides what was declared.

Derived facts (ages on the application date, children under N, the median income for the household size) are
computed here, in Python, before any rule runs. A derived fact whose inputs are missing is itself missing: nothing
ever defaults to 0 or false.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cel
import yaml

from services.eligibility import income
from services.eligibility.income import IncomeFigures, ReferenceDataMissing

FactTypeName = Literal["integer", "number", "boolean", "string", "date", "list"]
AskedOf = Literal["resident", "staff"]

DECLARED = "declared"
REGISTRY = "registry"
DERIVED = "derived"
RULE = "rule"
MISSING = "missing"
DEPARTMENT_PREFIX = "department:"

# The largest integer a fact may hold: far above any amount of money, far below CEL's 64-bit limit.
MAX_INTEGER = 10**15
CATALOGUE_DIR = Path(__file__).parent / "catalogue"


def department_source(department: str) -> str:
    return DEPARTMENT_PREFIX + department


def consent_purpose(department: str) -> str:
    return f"department_data:{department}"


# ---------------------------------------------------------------------------------------------- fact types


@dataclass(frozen=True)
class FactType:
    name: str
    type: FactTypeName
    question: Mapping[str, str]
    asked_of: AskedOf = "resident"
    enum: tuple[str, ...] | None = None
    items: FactTypeName | None = None
    pattern: str | None = None
    # Departments whose reports of this fact are authoritative (and may be reported at all).
    authorities: frozenset[str] = frozenset()
    registry: bool = False
    derived: bool = False
    inputs: tuple[str, ...] = ()
    description: str | None = None


class FactValueError(ValueError):
    """A value that does not fit its fact type."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class FactCatalogue:
    """Every fact a rule may read, from ``catalogue/facts.yaml``, checked against the derivations in this module."""

    def __init__(self, types: Iterable[FactType], income: IncomeFigures) -> None:
        self.types: dict[str, FactType] = {t.name: t for t in types}
        # The statutory figures the recognised-income derivations use (catalogue/recognised_income.yaml).
        self.income = income
        self._patterns = {t.name: re.compile(t.pattern) for t in self.types.values() if t.pattern}
        # What a determination lists for a missing fact (MissingFact of shared.events), made once.
        self._missing = {
            t.name: {"name": t.name, "type": t.type, "question": dict(t.question), "asked_of": t.asked_of}
            for t in self.types.values()
        }
        derived = {n for n, t in self.types.items() if t.derived}
        if derived != set(DERIVATIONS):
            raise ValueError(
                f"derived facts in the catalogue {sorted(derived)} must match the derivations {sorted(DERIVATIONS)}"
            )
        for name, derivation in DERIVATIONS.items():
            for needed in (*derivation.inputs, *derivation.optional):
                if needed not in self.types:
                    raise ValueError(f"derived fact {name} reads unknown fact {needed}")

    @classmethod
    def load(cls, path: Path = CATALOGUE_DIR / "facts.yaml") -> FactCatalogue:
        """The fact types of ``path``, with the income figures of ``recognised_income.yaml`` beside it."""
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        types = []
        for name, spec in raw["facts"].items():
            derivation = DERIVATIONS.get(name)
            types.append(
                FactType(
                    name=name,
                    type=spec["type"],
                    question={"ko": spec["question"]["ko"], "en": spec["question"]["en"]},
                    asked_of=spec.get("asked_of", "resident"),
                    enum=tuple(spec["enum"]) if spec.get("enum") else None,
                    items=spec.get("items"),
                    pattern=spec.get("pattern"),
                    authorities=frozenset(spec.get("authorities", ())),
                    registry=bool(spec.get("registry", False)),
                    derived=bool(spec.get("derived", False)),
                    inputs=derivation.inputs if derivation else (),
                    description=spec.get("description"),
                )
            )
        return cls(types, IncomeFigures.load(path.parent / "recognised_income.yaml"))

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def __getitem__(self, name: str) -> FactType:
        return self.types[name]

    def coerce(self, name: str, value: Any) -> Any:
        """The Python value of ``value`` as fact ``name`` (dates become ``datetime.date``); raises FactValueError."""
        fact = self.types.get(name)
        if fact is None:
            raise FactValueError(name, "is not a known fact")
        return self._coerce(fact, fact.type, value, fact.name)

    def _coerce(self, fact: FactType, kind: str, value: Any, label: str) -> Any:
        if value is None:
            raise FactValueError(label, "must not be null (leave a fact out when it is not known)")
        if kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise FactValueError(label, "must be a whole number")
            if abs(value) > MAX_INTEGER:
                raise FactValueError(label, f"must be between -{MAX_INTEGER} and {MAX_INTEGER}")
            return value
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FactValueError(label, "must be a number")
            if value != value or abs(value) > MAX_INTEGER:  # NaN or absurdly large
                raise FactValueError(label, "must be a finite number")
            return float(value)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise FactValueError(label, "must be true or false")
            return value
        if kind == "string":
            if not isinstance(value, str) or not value or len(value) > 200:
                raise FactValueError(label, "must be a text of 1 to 200 characters")
            if fact.enum is not None and kind == fact.type and value not in fact.enum:
                raise FactValueError(label, f"must be one of {', '.join(fact.enum)}")
            pattern = self._patterns.get(fact.name)
            if pattern is not None and not pattern.fullmatch(value):
                raise FactValueError(label, f"must match {fact.pattern}")
            return value
        if kind == "date":
            if isinstance(value, dt.datetime):
                return value.date()
            if isinstance(value, dt.date):
                return value
            if isinstance(value, str):
                try:
                    return dt.date.fromisoformat(value)
                except ValueError:
                    pass
            raise FactValueError(label, "must be a date (YYYY-MM-DD)")
        if kind == "list":
            if not isinstance(value, list | tuple) or len(value) > 50:
                raise FactValueError(label, "must be a list of at most 50 items")
            item_kind = fact.items or "string"
            return tuple(self._coerce(fact, item_kind, v, f"{label}[{i}]") for i, v in enumerate(value))
        raise FactValueError(label, f"has an unknown type {kind}")  # pragma: no cover - the catalogue is checked

    def missing_fact(self, name: str) -> dict[str, Any]:
        return self._missing[name]

    def coerce_json(self, name: str, value: Any) -> Any:
        """The value as stored: coerced to the fact's type, then back to JSON (dates as ISO text)."""
        return json_value(self.coerce(name, value))

    def coerce_all(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Coerce a set of answers; returns (values, problems by fact name). Derived facts cannot be given."""
        values: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for name, value in raw.items():
            fact = self.types.get(name)
            if fact is None:
                problems[name] = "is not a known fact"
                continue
            if fact.derived:
                problems[name] = f"is derived from {', '.join(fact.inputs)}; give those instead"
                continue
            try:
                values[name] = self.coerce(name, value)
            except FactValueError as exc:
                problems[exc.name] = exc.message
        return values, problems


def cel_value(value: Any) -> Any:
    """A Python fact value as CEL wants it: a date becomes a UTC midnight timestamp, tuples become lists."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if isinstance(value, tuple | list):
        return [cel_value(v) for v in value]
    return value


def json_value(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [json_value(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- reference data


@dataclass(frozen=True)
class MedianIncomeYear:
    year: int
    effective_from: dt.date
    amounts: Mapping[int, int]
    source: str


class MedianIncomeTable:
    """기준 중위소득: the standard median monthly income by household size, one table per year, each in force from
    its ``effective_from`` until the next. Beyond the largest size listed, each extra member adds the difference
    between the two largest sizes (the rule of the Ministry's announcement for households of 7 and more)."""

    def __init__(self, years: Iterable[MedianIncomeYear]) -> None:
        self.years = sorted(years, key=lambda y: y.effective_from)

    def in_force(self, day: dt.date) -> MedianIncomeYear | None:
        found = None
        for year in self.years:
            if year.effective_from <= day:
                found = year
        return found

    def amount(self, day: dt.date, household_size: int) -> int:
        if household_size < 1:
            raise ValueError(f"a household has at least one member, not {household_size}")
        table = self.in_force(day)
        if table is None:
            raise ReferenceDataMissing(f"no median income table is in force on {day.isoformat()}")
        if household_size in table.amounts:
            return table.amounts[household_size]
        largest = max(table.amounts)
        if household_size < largest:
            raise ReferenceDataMissing(f"the {table.year} median income table has no size {household_size}")
        step = table.amounts[largest] - table.amounts[largest - 1]
        return table.amounts[largest] + step * (household_size - largest)

    @classmethod
    def from_yaml(cls, path: Path = CATALOGUE_DIR / "median_income.yaml") -> MedianIncomeTable:
        return cls(median_income_years(yaml.safe_load(path.read_text(encoding="utf-8"))))


def median_income_years(raw: Mapping[str, Any]) -> list[MedianIncomeYear]:
    return [
        MedianIncomeYear(
            year=int(entry["year"]),
            effective_from=_as_date(entry["effective_from"]),
            amounts={int(k): int(v) for k, v in entry["amounts"].items()},
            source=str(entry["source"]),
        )
        for entry in raw["tables"]
    ]


def _as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


# ---------------------------------------------------------------------------------------------- date arithmetic


def months_between(born: dt.date, on: dt.date) -> int:
    """Completed months from ``born`` to ``on``, counting the day of birth (민법 제158조) and ending a period whose
    corresponding day does not exist on the last day of that month (제160조③): a child born on 31 January is one
    month old from 1 March, and one born on 15 June 2017 is 95 months old on 14 June 2025 and 96 on 15 June 2025."""
    months = (on.year - born.year) * 12 + (on.month - born.month)
    if on.day < born.day:
        months -= 1
    return months


def years_between(born: dt.date, on: dt.date) -> int:
    return months_between(born, on) // 12


def calendar_months(born: dt.date, on: dt.date) -> int:
    """Calendar months from the month of birth to the month of ``on``, whatever the days: a person born on 20 July
    1960 is 780 months (65 years) old by this count for the whole of July 2025, the month of the 65th birthday."""
    return (on.year - born.year) * 12 + (on.month - born.month)


# ---------------------------------------------------------------------------------------------- derivations


@dataclass(frozen=True)
class References:
    """The reference data a derivation may read: the median income table and the recognised-income figures."""

    medians: MedianIncomeTable
    income: IncomeFigures


@dataclass(frozen=True)
class Derivation:
    # Every fact it may read (all of them needed, unless ``needs`` says which).
    inputs: tuple[str, ...]
    # The value, or an income.Computed (the value with its workings, shown in explanations).
    compute: Callable[[Mapping[str, Any], dt.date, References], Any]
    # Read when known, never asked for.
    optional: tuple[str, ...] = ()
    # Which of the inputs are needed given the facts known (the spouse's income only when there is a spouse ...).
    needs: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None


def _born(values: Mapping[str, Any], name: str, day: dt.date) -> dt.date:
    """A birth date, refused when it is after the application date: an age is never negative, and contradictory
    facts are for a person to look at (the programs reading it need review), not to be judged."""
    born: dt.date = values[name]
    if born > day:
        raise ValueError(f"{name} ({born.isoformat()}) is after the application date ({day.isoformat()})")
    return born


def _children_months(values: Mapping[str, Any], day: dt.date) -> list[int]:
    """The ages in months of the household's children born by ``day``: the registry's (or declared) list, plus the
    child the application is about (a newborn the registry may not list yet). Several derived facts read it, so it is
    kept with the values under a name no fact can have."""
    cached = values.get(_CHILDREN)
    if cached is not None and cached[0] == day:
        return cached[1]  # type: ignore[no-any-return]
    births = set(values["children_birth_dates"])
    if "child_birth_date" in values:
        births.add(values["child_birth_date"])
    months = [months_between(b, day) for b in births if b <= day]
    values[_CHILDREN] = (day, months)  # type: ignore[index]
    return months


_CHILDREN = " children"  # a key no fact name can take (facts are lower-case identifiers)


def _children_under(years: int) -> Derivation:
    return Derivation(
        ("children_birth_dates",),
        lambda v, day, _t: sum(1 for m in _children_months(v, day) if m < years * 12),
        optional=("child_birth_date",),
    )


DERIVATIONS: dict[str, Derivation] = {
    "application_date": Derivation((), lambda v, day, _t: day),
    "age_years": Derivation(("birth_date",), lambda v, day, _t: years_between(_born(v, "birth_date", day), day)),
    "child_age_months": Derivation(
        ("child_birth_date",), lambda v, day, _t: months_between(_born(v, "child_birth_date", day), day)
    ),
    "child_age_days": Derivation(
        ("child_birth_date",), lambda v, day, _t: (day - _born(v, "child_birth_date", day)).days
    ),
    "children_under_8": _children_under(8),
    "children_under_9": _children_under(9),
    "children_under_18": _children_under(18),
    "children_school_age": Derivation(
        ("children_birth_dates",),
        lambda v, day, _t: sum(1 for m in _children_months(v, day) if 72 <= m < 216),
        optional=("child_birth_date",),
    ),
    "median_income": Derivation(("household_size",), lambda v, day, t: t.medians.amount(day, v["household_size"])),
    "days_since_move_in": Derivation(("moved_in_date",), lambda v, day, _t: (day - v["moved_in_date"]).days),
    "days_since_death": Derivation(("deceased_death_date",), lambda v, day, _t: (day - v["deceased_death_date"]).days),
    "months_since_death_month": Derivation(
        ("deceased_death_date",),
        lambda v, day, _t: (
            (day.year * 12 + day.month) - (v["deceased_death_date"].year * 12 + v["deceased_death_date"].month)
        ),
    ),
    "days_since_business_start": Derivation(
        ("business_start_date",), lambda v, day, _t: (day - v["business_start_date"]).days
    ),
    "age_at_business_start": Derivation(
        ("birth_date", "business_start_date"),
        lambda v, day, _t: years_between(v["birth_date"], v["business_start_date"]),
    ),
    # ------------------------------------------------------------------ the household's members and incomes
    "calendar_age_months": Derivation(
        ("birth_date",), lambda v, day, _t: calendar_months(_born(v, "birth_date", day), day)
    ),
    "spouse_age_years": Derivation(
        ("spouse_birth_date",), lambda v, day, _t: years_between(_born(v, "spouse_birth_date", day), day)
    ),
    "parents_aged_70_plus": Derivation(
        ("parent_birth_dates",),
        lambda v, day, _t: sum(1 for b in v["parent_birth_dates"] if b <= day and years_between(b, day) >= 70),
    ),
    "household_income": Derivation(
        income.HOUSEHOLD_INCOME_INPUTS, income.household_income, needs=income.household_income_needs
    ),
    "recognised_income": Derivation(
        income.RECOGNISED_INCOME_INPUTS, income.recognised_income, needs=income.recognised_income_needs
    ),
    "pension_recognised_income": Derivation(
        income.PENSION_INCOME_INPUTS, income.pension_recognised_income, needs=income.pension_income_needs
    ),
}


# ---------------------------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class ReportedValue:
    """One fact a department reported about a resident."""

    name: str
    value: Any
    department: str
    source: str
    observed_at: dt.datetime
    valid_until: dt.datetime | None = None

    def valid_at(self, now: dt.datetime) -> bool:
        return self.valid_until is None or now < self.valid_until


@dataclass
class FactLayers:
    """What is known of one resident, by origin, before resolution."""

    declared: Mapping[str, Any] = field(default_factory=dict)
    registry: Mapping[str, Any] = field(default_factory=dict)
    reported: Iterable[ReportedValue] = ()
    consents: Mapping[str, bool] = field(default_factory=dict)


@dataclass
class Environment:
    """The facts of one evaluation: values, where each came from, and a CEL context built once for all rules."""

    application_date: dt.date
    values: dict[str, Any]
    json: dict[str, Any]
    sources: dict[str, str]
    # Derived facts that could not be computed: the base facts to ask for instead.
    asks: dict[str, tuple[str, ...]]
    # Facts whose derivation failed for a reason no answer cures (e.g. no reference table in force).
    errors: dict[str, str]
    context: cel.Context
    # The values as CEL sees them (dates as timestamps), for expressions run on part of the facts.
    cel_values: dict[str, Any] = field(default_factory=dict)
    # Declared answers that did not fit their fact type (ignored; the fact counts as missing).
    rejected: dict[str, str] = field(default_factory=dict)
    # How each derived figure with workings was computed, line by line with each figure's source (JSON).
    workings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def resolve(
    facts: FactCatalogue, layers: FactLayers, now: dt.datetime
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Base facts by precedence: a consented, valid, authoritative department report (the latest observed), then the
    registry, then the declaration. Returns (values, sources, rejected declared answers)."""
    values, rejected = facts.coerce_all(layers.declared)
    sources = dict.fromkeys(values, DECLARED)
    for name, raw in layers.registry.items():
        fact = facts.types.get(name)
        if fact is None or fact.derived:
            continue
        try:
            values[name] = facts.coerce(name, raw)
        except FactValueError:
            continue
        sources[name] = REGISTRY
    best: dict[str, ReportedValue] = {}
    for report in layers.reported:
        fact = facts.types.get(report.name)
        if fact is None or fact.derived or report.department not in fact.authorities:
            continue
        if not layers.consents.get(consent_purpose(report.department), False) or not report.valid_at(now):
            continue
        current = best.get(report.name)
        if current is None or report.observed_at > current.observed_at:
            best[report.name] = report
    for name, report in best.items():
        try:
            values[name] = facts.coerce(name, report.value)
        except FactValueError:
            continue
        sources[name] = department_source(report.department)
    return values, sources, rejected


@dataclass
class Derived:
    """Resolved and derived fact values, before the CEL context is built."""

    application_date: dt.date
    values: dict[str, Any]
    sources: dict[str, str]
    asks: dict[str, tuple[str, ...]]
    errors: dict[str, str]
    rejected: dict[str, str]
    workings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def environment(self) -> Environment:
        plain = _PLAIN
        json = {k: v if type(v) in plain else json_value(v) for k, v in self.values.items()}
        cel_values = {k: v if type(v) in plain else cel_value(v) for k, v in self.values.items()}
        return Environment(
            self.application_date,
            self.values,
            json,
            self.sources,
            self.asks,
            self.errors,
            cel.Context(cel_values),
            cel_values,
            self.rejected,
            self.workings,
        )


def derive(
    facts: FactCatalogue,
    medians: MedianIncomeTable,
    application_date: dt.date,
    layers: FactLayers,
    now: dt.datetime,
    *,
    explain: bool = True,
) -> Derived:
    """Resolve the base facts and compute the derived ones. ``explain=False`` (bulk screening) skips recording
    where each derived value came from."""
    values, sources, rejected = resolve(facts, layers, now)
    references = References(medians, facts.income)
    asks: dict[str, tuple[str, ...]] = {}
    errors: dict[str, str] = {}
    workings: dict[str, list[dict[str, Any]]] = {}
    for name, inputs, optional, needs, compute in _DERIVATION_PLAN:
        if needs is not None:
            inputs = needs(values)
        missing = None
        for i in inputs:
            if i not in values:
                missing = [i for i in inputs if i not in values]
                break
        if missing:
            asks[name] = tuple(dict.fromkeys(a for m in missing for a in asks.get(m, (m,))))
            continue
        if errors:
            broken = [i for i in inputs if i in errors]
            if broken:
                errors[name] = errors[broken[0]]
                continue
        try:
            value = compute(values, application_date, references)
        except (ReferenceDataMissing, ValueError, KeyError) as exc:
            errors[name] = str(exc)
            continue
        if value.__class__ is income.Computed:
            if explain:
                workings[name] = [line.as_json(sources) for line in value.lines]
            value = value.value
        values[name] = value
        if explain:
            sources[name] = _derived_source(frozenset([sources[i] for i in (*inputs, *optional) if i in sources]))
    values.pop(_CHILDREN, None)
    return Derived(application_date, values, sources, asks, errors, rejected, workings)


_PLAIN = frozenset({int, float, str, bool})
_DERIVATION_PLAN = [(n, d.inputs, d.optional, d.needs, d.compute) for n, d in DERIVATIONS.items()]
_SOURCE_NAMES: dict[frozenset[str], str] = {}


def _derived_source(used: frozenset[str]) -> str:
    """``derived:declared+registry``: where the inputs of a derived fact came from (memoised: few combinations)."""
    name = _SOURCE_NAMES.get(used)
    if name is None:
        name = DERIVED if not used else f"{DERIVED}:{'+'.join(sorted(used))}"
        if len(_SOURCE_NAMES) < 1024:
            _SOURCE_NAMES[used] = name
    return name


def build_environment(
    facts: FactCatalogue,
    medians: MedianIncomeTable,
    application_date: dt.date,
    layers: FactLayers,
    now: dt.datetime,
) -> Environment:
    return derive(facts, medians, application_date, layers, now).environment()


def registry_facts(
    *,
    birth_date: dt.date | None,
    district_code: str | None,
    household: Iterable[Mapping[str, Any]] | None,
    vulnerability: Iterable[str] | None,
) -> dict[str, Any]:
    """The facts the resident registry establishes, from a ``resident.updated`` projection."""
    out: dict[str, Any] = {}
    if birth_date is not None:
        out["birth_date"] = birth_date
    if district_code:
        out["district_code"] = district_code
    if household is not None:
        members = list(household)
        out["household_size"] = 1 + len(members)
        out["has_spouse"] = any(m.get("relation") == "spouse" for m in members)
        out["children_birth_dates"] = [
            _as_date(m["birth_date"]) for m in members if m.get("relation") == "child" and m.get("birth_date")
        ]
        out.update(income.household_registry_facts(members))
    if vulnerability is not None:
        marks = set(vulnerability)
        out["disability_registered"] = "disability" in marks
        out["single_parent"] = "single_parent" in marks
    return out
