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
import hashlib
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cel

from services.eligibility import income
from services.eligibility.income import IncomeFigures, ReferenceDataMissing
from shared.yamlfile import load_yaml

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

    def __init__(self, types: Iterable[FactType], income: IncomeFigures, *, fingerprint: str | None = None) -> None:
        self.types: dict[str, FactType] = {t.name: t for t in types}
        # What the catalogue was made from (its files' content, :meth:`load`): rules compiled against one catalogue
        # serve any other of the same fingerprint (catalogue.CompileCache). One made in code shares with none.
        self.fingerprint = fingerprint or f"made-{uuid.uuid4().hex}"
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
        raw = load_yaml(path)
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
        figures = path.parent / "recognised_income.yaml"
        fingerprint = hashlib.sha256(path.read_bytes() + b"\0" + figures.read_bytes()).hexdigest()
        return cls(types, IncomeFigures.load(figures), fingerprint=fingerprint)

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
        return cls(median_income_years(load_yaml(path)))


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


DistrictTier = Literal["capital_region", "non_capital", "depopulation_preferential", "depopulation_special"]
DISTRICT_CODE = re.compile(r"^[0-9]{5}$")
PROVINCE_CODE = re.compile(r"^[0-9]{2}$")


@dataclass(frozen=True)
class DistrictTierTable:
    """One version of the classification, in force from ``effective_from`` until the next."""

    effective_from: dt.date
    source: str
    # Province (시·도) code prefixes: in the capital region (수도권) or not.
    capital_region: frozenset[str]
    non_capital: frozenset[str]
    # Districts (시·군·구) by their five-digit code: the two tiers of depopulation areas given extra support, and the
    # depopulation areas whose tier is not established here (a person confirms it: never guessed).
    special: frozenset[str]
    preferential: frozenset[str]
    unconfirmed: Mapping[str, str]

    def tier(self, district_code: str) -> DistrictTier:
        if district_code in self.special:
            return "depopulation_special"
        if district_code in self.preferential:
            return "depopulation_preferential"
        if district_code in self.unconfirmed:
            raise ValueError(
                f"district {district_code} ({self.unconfirmed[district_code]}) is a depopulation area whose support "
                f"tier (우대지원/특별지원) the table from {self.effective_from.isoformat()} does not establish: "
                "확인 필요, a person confirms it"
            )
        province = district_code[:2]
        if province in self.capital_region:
            return "capital_region"
        if province in self.non_capital:
            return "non_capital"
        raise ValueError(f"district {district_code} is in no province the table knows")


class DistrictTiers:
    """지방우대 지역 구분: every district's tier for the programs whose amounts depend on where the resident lives —
    the capital region (수도권), elsewhere (비수도권), and the depopulation areas given more (우대지원지역, then
    특별지원지역). Versioned reference data like the median income: one table per change, each in force from its
    ``effective_from``; before the first there is no classification (programs reading it need review)."""

    def __init__(self, tables: Iterable[DistrictTierTable]) -> None:
        self.tables = sorted(tables, key=lambda t: t.effective_from)

    def in_force(self, day: dt.date) -> DistrictTierTable | None:
        found = None
        for table in self.tables:
            if table.effective_from <= day:
                found = table
        return found

    def tier(self, day: dt.date, district_code: str) -> DistrictTier:
        table = self.in_force(day)
        if table is None:
            raise ReferenceDataMissing(f"no district tier table is in force on {day.isoformat()}")
        return table.tier(district_code)

    @classmethod
    def from_yaml(cls, path: Path = CATALOGUE_DIR / "district_tiers.yaml") -> DistrictTiers:
        return cls(district_tier_tables(load_yaml(path)))


def district_tier_tables(raw: Mapping[str, Any]) -> list[DistrictTierTable]:
    """The tables of ``district_tiers.yaml``, checked: well-formed codes, each district in one list only, each
    province either in the capital region or not, and every district listed in a known province."""
    tables = []
    for entry in raw["tables"]:

        def codes(key: str, pattern: re.Pattern[str], entry: Mapping[str, Any] = entry) -> dict[str, str]:
            found = {str(code): str(name) for code, name in (entry.get(key) or {}).items()}
            bad = [c for c in found if not pattern.fullmatch(c)]
            if bad:
                raise ValueError(f"district tiers from {entry['effective_from']}: {key} has malformed codes {bad}")
            return found

        capital, non_capital = codes("capital_region", PROVINCE_CODE), codes("non_capital", PROVINCE_CODE)
        lists = {key: codes(key, DISTRICT_CODE) for key in ("special", "preferential", "unconfirmed")}
        both = sorted(set(capital) & set(non_capital))
        if both:
            raise ValueError(f"provinces both in and outside the capital region: {both}")
        seen: dict[str, str] = {}
        for key, listed in lists.items():
            for code in listed:
                if code in seen:
                    raise ValueError(f"district {code} is listed as {seen[code]} and as {key}")
                if code[:2] not in capital and code[:2] not in non_capital:
                    raise ValueError(f"district {code} ({key}) is in no province listed")
                seen[code] = key
        tables.append(
            DistrictTierTable(
                effective_from=_as_date(entry["effective_from"]),
                source=str(entry["source"]),
                capital_region=frozenset(capital),
                non_capital=frozenset(non_capital),
                special=frozenset(lists["special"]),
                preferential=frozenset(lists["preferential"]),
                unconfirmed=lists["unconfirmed"],
            )
        )
    return tables


@dataclass(frozen=True)
class ReferenceTables:
    """The reference data derivations read: the median income table, the districts' support tiers and the
    recognised-income figures."""

    medians: MedianIncomeTable
    districts: DistrictTiers
    income: IncomeFigures


NO_DISTRICT_TIERS = DistrictTiers(())


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
class Derivation:
    # Every fact it may read (all of them needed, unless ``needs`` says which).
    inputs: tuple[str, ...]
    # The value, or an income.Computed (the value with its workings, shown in explanations).
    compute: Callable[[Mapping[str, Any], dt.date, ReferenceTables], Any]
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


def _months_after(last_day: dt.date, day: dt.date) -> int:
    """Full months from the day after ``last_day`` to ``day`` (negative before it). A claim due "within 12 months after
    the day X ended" (고용보험법 제75조제2호) runs from the next day (민법 제157조) to the day before the same day 12
    months later, or to the end of that month when it has no such day (제160조②③): it is in time while this is
    below 12. Leave ending 2024-02-28 or 2024-02-29 may be claimed until 2025-02-28; ending 2023-02-28, until
    2024-02-29."""
    return months_between(last_day + dt.timedelta(days=1), day)


def _employment_support_dependants(values: Mapping[str, Any], day: dt.date) -> int:
    """The dependants for which the job-seeking allowance adds its supplement (국민취업지원제도: 부양가족 aged 18 or
    under, 70 or over, or with a disability) among the household unit of 구직자취업촉진법 시행령 제2조① (spouse,
    parents, children) on the application date, so a child born later is not one yet. Each person counts once: by
    age from the whole list, and a disabled person of working age from the list of the disabled."""
    ages = [years_between(b, day) for b in values["family_birth_dates"] if b <= day]
    disabled = [years_between(b, day) for b in values["family_disabled_birth_dates"] if b <= day]
    return sum(1 for a in ages if a <= 18 or a >= 70) + sum(1 for a in disabled if 18 < a < 70)


# The most children one birth can bring: a number of newborns outside 1..9 is a mistake for a person to look at.
MAX_NEWBORNS = 9


def _children(values: Mapping[str, Any], day: dt.date) -> tuple[list[int], list[int]]:
    """The ages in months, on ``day``, of the children the resident raises, one entry per child (twins are two):
    their own children and the grandchildren they raise (``children_birth_dates``), and the children they foster or
    are guardian of (``fostered_children_birth_dates``, when known). The child the application is about
    (``child_birth_date``) is added unless the registry lists it already: ``newborns`` children born that day (one when
    the number is not known yet: the application is about at least one), less those listed on that date. Several
    derived facts read it, so it is kept with the values under a name no fact can have."""
    cached = values.get(_CHILDREN)
    if cached is not None and cached[0] == day:
        return cached[1], cached[2]
    family: list[dt.date] = list(values["children_birth_dates"])
    fostered: list[dt.date] = list(values.get("fostered_children_birth_dates", ()))
    newborn: dt.date | None = values.get("child_birth_date")
    if newborn is not None:
        born_together: int = values.get("newborns", 1)
        if not 1 <= born_together <= MAX_NEWBORNS:
            raise ValueError(f"newborns ({born_together}) must be between 1 and {MAX_NEWBORNS}")
        listed = family.count(newborn) + fostered.count(newborn)
        family.extend([newborn] * max(0, born_together - listed))
    own = [months_between(b, day) for b in family if b <= day]
    cared = [months_between(b, day) for b in fostered if b <= day]
    values[_CHILDREN] = (day, own, cared)  # type: ignore[index]
    return own, cared


_CHILDREN = " children"  # a key no fact name can take (facts are lower-case identifiers)
_CHILD_INPUTS = ("children_birth_dates",)
_CHILD_OPTIONAL = ("child_birth_date", "newborns", "fostered_children_birth_dates")


def _family_children(low_months: int, high_months: int) -> Derivation:
    """Children (and grandchildren raised) aged ``low_months`` up to, not including, ``high_months``: the children a
    parent's programs count (tax credits, single-parent support, education benefit), foster children not."""
    return Derivation(
        _CHILD_INPUTS,
        lambda v, day, _r: sum(1 for m in _children(v, day)[0] if low_months <= m < high_months),
        optional=_CHILD_OPTIONAL,
    )


def _children_in_care(low_months: int, high_months: int, *, with_newborn: bool = False) -> Derivation:
    """Every child the resident raises as its carer (보호자), foster children and wards too, aged ``low_months`` up
    to, not including, ``high_months``: the children the child allowance and the parent benefit count.
    ``with_newborn``: a count for a program applied for at a birth, which needs the child the application is about
    (without it the newborn the registry does not list yet would be missed, and the count would say none)."""

    def count(v: Mapping[str, Any], day: dt.date, _r: ReferenceTables) -> int:
        own, fostered = _children(v, day)
        return sum(1 for m in (*own, *fostered) if low_months <= m < high_months)

    if with_newborn:
        optional = ("newborns", "fostered_children_birth_dates")
        return Derivation((*_CHILD_INPUTS, "child_birth_date"), count, optional=optional)
    return Derivation(_CHILD_INPUTS, count, optional=_CHILD_OPTIONAL)


DERIVATIONS: dict[str, Derivation] = {
    "application_date": Derivation((), lambda v, day, _t: day),
    "age_years": Derivation(("birth_date",), lambda v, day, _t: years_between(_born(v, "birth_date", day), day)),
    "child_age_months": Derivation(
        ("child_birth_date",), lambda v, day, _t: months_between(_born(v, "child_birth_date", day), day)
    ),
    "child_age_days": Derivation(
        ("child_birth_date",), lambda v, day, _t: (day - _born(v, "child_birth_date", day)).days
    ),
    "children_under_8": _children_in_care(0, 8 * 12),
    "children_under_9": _children_in_care(0, 9 * 12),
    "children_under_12_months": _children_in_care(0, 12, with_newborn=True),
    "children_12_to_23_months": _children_in_care(12, 24, with_newborn=True),
    "children_under_18": _family_children(0, 18 * 12),
    "children_school_age": _family_children(6 * 12, 18 * 12),
    "median_income": Derivation(("household_size",), lambda v, day, r: r.medians.amount(day, v["household_size"])),
    "district_support_tier": Derivation(
        ("district_code",), lambda v, day, r: r.districts.tier(day, v["district_code"])
    ),
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
    "months_after_maternity_leave": Derivation(
        ("maternity_leave_end_date",), lambda v, day, _t: _months_after(v["maternity_leave_end_date"], day)
    ),
    "employment_support_dependants": Derivation(
        ("family_birth_dates", "family_disabled_birth_dates"), lambda v, day, _t: _employment_support_dependants(v, day)
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
    districts: DistrictTiers | None = None,
    resolved: tuple[dict[str, Any], dict[str, str], dict[str, str]] | None = None,
) -> Derived:
    """Resolve the base facts and compute the derived ones. ``explain=False`` (bulk screening) skips recording
    where each derived value came from. ``districts``: the district tiers (none known when not given).
    ``resolved``: what ``resolve`` answered for these layers already (screening resolves a page at once)."""
    if resolved is not None:
        values, sources, rejected = dict(resolved[0]), dict(resolved[1]), resolved[2]
    else:
        values, sources, rejected = resolve(facts, layers, now)
    references = ReferenceTables(medians, NO_DISTRICT_TIERS if districts is None else districts, facts.income)
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
    *,
    districts: DistrictTiers | None = None,
) -> Environment:
    return derive(facts, medians, application_date, layers, now, districts=districts).environment()


# The household unit of the Job Seekers Act (구직자취업촉진법 시행령 제2조①): spouse and first-degree lineal relatives.
_FAMILY_UNIT = frozenset({"spouse", "parent", "child"})


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
        out["children_birth_dates"], out["fostered_children_birth_dates"] = children_raised(members)
        family = [m for m in members if m.get("relation") in _FAMILY_UNIT and m.get("birth_date")]
        out["family_birth_dates"] = [_as_date(m["birth_date"]) for m in family]
        out["family_disabled_birth_dates"] = [_as_date(m["birth_date"]) for m in family if m.get("disability")]
        out.update(income.household_registry_facts(members))
    if vulnerability is not None:
        marks = set(vulnerability)
        out["disability_registered"] = "disability" in marks
        out["single_parent"] = "single_parent" in marks
    return out


def children_raised(members: Sequence[Mapping[str, Any]]) -> tuple[list[dt.date], list[dt.date]]:
    """The children the resident raises, one date per child (twins are two), from the household's relations to the
    resident: (own children and grandchildren raised, foster children and wards).

    A grandchild is the resident's to raise (조손가정) when none of the resident's children lives in the household:
    otherwise its parent may be there, is its carer and counts it (the parent's own registry lists it as a ``child``),
    and counting it for the grandparent too would pay the same child twice. The registry cannot tell which child of
    the resident is the grandchild's parent, so a grandparent raising a grandchild beside an adult child who is not its
    parent establishes that with the department: its report of ``children_birth_dates`` overrides the registry's.
    Foster children (가정위탁) and wards (미성년후견) are raised by the
    resident as their carer (보호자): the child allowance and the parent benefit count them, a parent's programs not."""
    own = [_as_date(m["birth_date"]) for m in members if m.get("relation") == "child" and m.get("birth_date")]
    if not any(m.get("relation") == "child" for m in members):
        own += [_as_date(m["birth_date"]) for m in members if m.get("relation") == "grandchild" and m.get("birth_date")]
    fostered = [_as_date(m["birth_date"]) for m in members if m.get("relation") in _FOSTERED and m.get("birth_date")]
    return own, fostered


_FOSTERED = frozenset({"foster_child", "ward"})
