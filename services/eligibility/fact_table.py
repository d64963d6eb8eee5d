"""The registry as a table: one row per resident, one column per fact — the columnar twin of ``facts.py``.

Two steps, each the column-wise mirror of a per-record function, so that the vectorised screening judges exactly what
the per-record engine would (the differential tests in ``tests/services/eligibility/test_vectorised.py`` hold them
to it):

- :func:`registry_table` resolves the base facts of every resident from eligibility's registry projection (the
  ``residents`` rows with their household, and the department facts) as ``registry_facts`` and ``resolve`` do: a
  consented, valid, authoritative department report (the latest observed) overrides the registry.
- :func:`derive_table` adds the derived facts (ages, children counted by age, the median income, the district's
  support tier, the recognised incomes) as ``derive`` does, with a ``<fact>:failed`` column for each derivation that
  can fail for a reason no answer cures (a birth date after the day judged, a district whose tier is not
  established, no reference table in force): a criterion reading it makes the program need review.

Rows whose values are so far from any real registry that 64-bit arithmetic could differ from Python's unbounded
integers (an income above 10^14 won, a household of more than a thousand) are marked in ``FALLBACK`` and judged by
the per-record engine instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from services.eligibility import income
from services.eligibility.facts import DERIVATIONS, DistrictTiers, FactCatalogue, FactType, MedianIncomeTable
from services.eligibility.income import ReferenceDataMissing

FALLBACK = "__per_record"
ROW = "__row"
FAILED = ":failed"
# Beyond these, a row goes to the per-record engine (see the module's docstring).
MAX_VECTOR_AMOUNT = 10**14
MAX_VECTOR_HOUSEHOLD = 1000

_SCALAR = {"integer": pl.Int64(), "boolean": pl.Boolean(), "string": pl.String(), "date": pl.Date()}


def column_type(facts: FactCatalogue, name: str) -> pl.DataType:
    fact = facts[name]
    if fact.type == "list":
        return pl.List(_SCALAR[fact.items or "string"])
    if fact.type == "number":
        return pl.Float64()
    return _SCALAR[fact.type]


def base_schema(facts: FactCatalogue, names: Iterable[str] | None = None) -> dict[str, pl.DataType]:
    """The column type of each base (not derived) fact."""
    chosen = set(names) if names is not None else None
    return {
        n: column_type(facts, n) for n, t in facts.types.items() if not t.derived and (chosen is None or n in chosen)
    }


def derivation_inputs(names: Iterable[str]) -> set[str]:
    """The base facts the derived facts among ``names`` may read (all of them, optional ones too)."""
    out: set[str] = set()
    for name in names:
        derivation = DERIVATIONS.get(name)
        if derivation is not None:
            out.update(derivation.inputs)
            out.update(derivation.optional)
    return out


# ---------------------------------------------------------------------------------------------- date arithmetic


def _parts(born: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    return born.dt.year().cast(pl.Int64), born.dt.month().cast(pl.Int64), born.dt.day().cast(pl.Int64)


def months_between(born: pl.Expr, on: pl.Expr | dt.date) -> pl.Expr:
    """``facts.months_between`` (민법 제158조·제160조③) for columns."""
    by, bm, bd = _parts(born)
    if isinstance(on, dt.date):
        return (on.year - by) * 12 + (on.month - bm) - (bd > on.day).cast(pl.Int64)
    oy, om, od = _parts(on)
    return (oy - by) * 12 + (om - bm) - (od < bd).cast(pl.Int64)


def years_between(born: pl.Expr, on: pl.Expr | dt.date) -> pl.Expr:
    return months_between(born, on) // 12


def months_before(day: dt.date, months: int) -> dt.date:
    """The last birth date of someone ``months`` months old on ``day`` (``facts.months_between`` >= months exactly
    when born on or before it): the same day ``months`` earlier, or the end of that month when it has no such day."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    following = dt.date(year + (month == 12), month % 12 + 1, 1)
    return dt.date(year, month, min(day.day, (following - dt.timedelta(days=1)).day))


def _least(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """``pl.min_horizontal(a, b)`` — the smaller, a missing one ignored — in two passes rather than its generic
    kernel's cost (about half, measured over a million incomes)."""
    return pl.when(a <= b).then(a).otherwise(b.fill_null(a))


def _greatest(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """``pl.max_horizontal(a, b)``, as ``_least``."""
    return pl.when(a >= b).then(a).otherwise(b.fill_null(a))


def _days(day: dt.date, since: pl.Expr) -> pl.Expr:
    return (pl.lit(day, dtype=pl.Date) - since).dt.total_days().cast(pl.Int64)


# ---------------------------------------------------------------------------------------------- derivations


@dataclass
class Derived:
    """A derived fact as columns: its value (null when missing or failed) and, if it can fail, where it did."""

    value: pl.Expr
    failed: pl.Expr | None = None


def _null(dtype: pl.DataType) -> pl.Expr:
    return pl.lit(None, dtype=dtype)


class _Derivations:
    def __init__(
        self,
        facts: FactCatalogue,
        medians: MedianIncomeTable,
        districts: DistrictTiers,
        day: dt.date,
        present: set[str],
        uniques: Mapping[str, list[Any]] | None = None,
    ) -> None:
        self.facts = facts
        self.medians = medians
        self.districts = districts
        self.day = day
        self.present = present
        # The distinct values of the columns whose derivations are looked up per value (few: districts, sizes).
        self.uniques = uniques or {}
        # Whether any row names the child an application is about (``child_birth_date``): else no newborn is added.
        self.newborns = bool(self.uniques.get("child_birth_date", [None]) != [None])
        # Intermediate columns several derived facts (or several parts of one) read, each made once, in stages
        # before the derived facts: an expression used twice would otherwise be computed twice.
        self.stages: list[dict[str, pl.Expr]] = []

    def helper(self, name: str, expr: pl.Expr, stage: int = 0) -> pl.Expr:
        while len(self.stages) <= stage:
            self.stages.append({})
        column = f"__{name}"
        self.stages[stage].setdefault(column, expr.alias(column))
        return pl.col(column)

    def col(self, name: str) -> pl.Expr:
        if name in self.present:
            return pl.col(name)
        return _null(column_type(self.facts, name))

    def known(self, *names: str) -> pl.Expr:
        exprs = [self.col(n).is_not_null() for n in names]
        out = exprs[0]
        for e in exprs[1:]:
            out = out & e
        return out

    def guarded(self, inputs: tuple[str, ...], value: pl.Expr, failure: pl.Expr | None, dtype: pl.DataType) -> Derived:
        """A derivation of ``inputs`` (all needed): missing when one is; failed (and null) where ``failure``."""
        present = self.known(*inputs) if inputs else pl.lit(True)
        if failure is None:
            return Derived(pl.when(present).then(value).otherwise(_null(dtype)))
        failed = present & failure.fill_null(False)
        return Derived(pl.when(present & ~failed).then(value).otherwise(_null(dtype)), failed)

    # ------------------------------------------------------------------ people and dates

    def born(self, name: str, value: pl.Expr) -> Derived:
        """A derivation of a birth date, refused (failed) when it is after the day judged (``facts._born``)."""
        return self.guarded((name,), value, self.col(name) > self.day, pl.Int64())

    def children(self, low: int, high: int, *, fostered: bool, with_newborn: bool) -> Derived:
        """``_children_in_care`` (fostered) and ``_family_children`` (not): children aged [low, high) months."""
        day = self.day

        # Aged [low, high) months on ``day`` (and born by then) is born in (months_before(high), months_before(low)].
        latest, earliest = months_before(day, low), months_before(day, high)

        def counted(name: str) -> pl.Expr:
            inside = (pl.element() <= latest) & (pl.element() > earliest)
            return self.col(name).list.eval(inside).list.sum().cast(pl.Int64).fill_null(0)

        own = counted("children_birth_dates")
        if fostered:
            own = own + counted("fostered_children_birth_dates")
        inputs = ("children_birth_dates", "child_birth_date") if with_newborn else ("children_birth_dates",)
        if not self.newborns:  # no row names the child of an application (a registry never does)
            return self.guarded(inputs, own, None, pl.Int64())
        newborn = self.col("child_birth_date")
        together = self.col("newborns").fill_null(1)
        listed = self._count_equal("children_birth_dates", newborn) + self._count_equal(
            "fostered_children_birth_dates", newborn
        )
        extra = self.helper("newborns_unlisted", _greatest(pl.lit(0, dtype=pl.Int64), together - listed))
        newborn_inside = (newborn <= latest) & (newborn > earliest)
        total = own + pl.when(newborn.is_not_null() & newborn_inside).then(extra).otherwise(0)
        failure = newborn.is_not_null() & ((together < 1) | (together > 9))
        return self.guarded(inputs, total, failure, pl.Int64())

    def _count_equal(self, name: str, value: pl.Expr) -> pl.Expr:
        """How many dates of the list column ``name`` equal ``value`` (a date column, of the same row): the value is
        subtracted from every element (Polars broadcasts a column over a list), and the zeros counted."""
        offsets = self.col(name).list.eval(pl.element().cast(pl.Int32)) - value.cast(pl.Int32)
        return offsets.list.eval(pl.element() == 0).list.sum().cast(pl.Int64).fill_null(0)

    def per_value(
        self, name: str, compute: Callable[[Any], Any], dtype: pl.DataType, *, limit: int | None = None
    ) -> tuple[pl.Expr, pl.Expr]:
        """A derivation of one fact computed by the per-record engine's own function once per distinct value of the
        column (a district's tier, a household size's median income): exact by construction, and cheap, the values
        being few. Returns (value, failed) columns; ``limit``: values above it are left to the per-record rows.

        Each row's value is found once per column, as its position among the distinct values (``_position``); a
        lookup is then a gather from the short list of results — a string hashed per row once, not once per
        lookup (the recognised income reads two tables by district, the tier and the pension's basic property two
        more)."""
        values = [v for v in self.uniques.get(name, ()) if v is not None]
        if not values:
            return _null(dtype), pl.lit(False)
        results: list[Any] = []
        failures: list[bool] = []
        for value in values:
            if limit is not None and value > limit:
                results.append(None)
                failures.append(False)
                continue
            try:
                results.append(compute(value))
                failures.append(False)
            except (ReferenceDataMissing, ValueError, KeyError):
                results.append(None)
                failures.append(True)
        position = self._position(name, values)
        mapped = pl.lit(pl.Series(results, dtype=dtype)).gather(position)
        failed = pl.lit(pl.Series(failures, dtype=pl.Boolean)).gather(position).fill_null(False)
        return mapped, failed

    def _position(self, name: str, values: list[Any]) -> pl.Expr:
        """Each row's value of ``name`` as its index in ``values`` (its distinct values; null where missing), a
        helper column made once."""
        return self.helper(
            f"{name}:position",
            self.col(name).replace_strict(values, list(range(len(values))), default=None, return_dtype=pl.UInt32),
        )

    def median_income(self) -> Derived:
        value, failed = self.per_value(
            "household_size", lambda size: self.medians.amount(self.day, size), pl.Int64(), limit=MAX_VECTOR_HOUSEHOLD
        )
        return self.guarded(("household_size",), value, failed, pl.Int64())

    def district_tier(self) -> Derived:
        value, failed = self.per_value("district_code", lambda code: self.districts.tier(self.day, code), pl.String())
        return self.guarded(("district_code",), value, failed, pl.String())

    def employment_support_dependants(self) -> Derived:
        day = self.day

        def count(name: str, test: pl.Expr) -> pl.Expr:
            return self.col(name).list.eval(test).list.sum().cast(pl.Int64).fill_null(0)

        # Aged 18 or under: born after months_before(19 years); 70 or over: born by months_before(70 years).
        born = pl.element() <= day
        up_to_18 = pl.element() > months_before(day, 19 * 12)
        from_70 = pl.element() <= months_before(day, 70 * 12)
        value = count("family_birth_dates", born & (up_to_18 | from_70)) + count(
            "family_disabled_birth_dates", born & ~up_to_18 & ~from_70
        )
        return self.guarded(("family_birth_dates", "family_disabled_birth_dates"), value, None, pl.Int64())

    def parents_aged_70_plus(self) -> Derived:
        test = (pl.element() <= self.day) & (pl.element() <= months_before(self.day, 70 * 12))
        value = self.col("parent_birth_dates").list.eval(test).list.sum().cast(pl.Int64).fill_null(0)
        return self.guarded(("parent_birth_dates",), value, None, pl.Int64())

    # ------------------------------------------------------------------ incomes (income.py)

    def _others(self) -> pl.Expr:
        """Members besides the applicant and spouse (null until the household's size and spouse are known)."""
        size, spouse = self.col("household_size"), self.col("has_spouse")
        return _greatest(pl.lit(0, dtype=pl.Int64), size - 1 - spouse.cast(pl.Int64))

    def _incomes_known(self, *, household: bool) -> pl.Expr:
        """Whether every income the household (or couple) needs is known (``household_income_needs``)."""
        known = self.known("household_size", "has_spouse", *income.INCOMES)
        spouse = self.col("has_spouse")
        known = known & (~spouse | self.col("spouse_income").is_not_null())
        if household:
            known = known & ((self._others() == 0) | self.col("other_members_income").is_not_null())
        return known

    def _incomes(self, *, household: bool) -> pl.Expr:
        total = self.col("earned_income") + self.col("business_income") + self.col("public_pension_income")
        total = total + pl.when(self.col("has_spouse")).then(self.col("spouse_income")).otherwise(0)
        if household:
            total = total + pl.when(self._others() > 0).then(self.col("other_members_income")).otherwise(0)
        return total

    def household_income(self) -> Derived:
        known = self._incomes_known(household=True)
        return Derived(pl.when(known).then(self._incomes(household=True)).otherwise(_null(pl.Int64())))

    def recognised_income(self) -> Derived:
        known = self._incomes_known(household=True) & self.known("district_code", *income.HOUSEHOLD_ASSETS)
        try:
            figures = self.facts.income.livelihood_on(self.day)
        except ReferenceDataMissing:
            return Derived(_null(pl.Int64()), known)
        regions = self.facts.income.regions

        def by_region(table: Mapping[str, int]) -> pl.Expr:
            value, _ = self.per_value(
                "district_code", lambda code: table[regions.livelihood_region(str(code))], pl.Int64()
            )
            return value

        earned = self.col("earned_income")
        evaluated = self._incomes(household=True) - earned * figures.earned_income_deduction_percent // 100
        residence = self.col("residence_value")
        financial = self.col("financial_assets")
        allowance = _least(financial, pl.lit(figures.financial_allowance, dtype=pl.Int64))
        # Read several times below: made once, after the districts' positions (stage 0).
        housing = self.helper("livelihood_housing", _least(residence, by_region(figures.residence_cap)), 1)
        remaining = by_region(figures.basic_property) + self.col("debts")
        rates = figures.monthly_rate_basis_points
        converted: pl.Expr = pl.lit(0, dtype=pl.Int64)
        for stage, (kind, amount) in enumerate(
            (
                ("residence", housing),
                ("general", self.col("other_property_value") + residence - housing),
                ("financial", financial - allowance),
            )
        ):
            # The basic deduction and the debts come off each kind in turn: what is left of them is a column.
            taken = _least(amount, remaining)
            converted = converted + (amount - taken) * rates[kind] // 10_000
            if kind != "financial":  # (nothing is taken after the financial assets)
                remaining = self.helper(f"livelihood_deduction_left_{kind}", remaining - taken, stage + 2)
        converted = converted + self.col("vehicle_value") * rates["vehicle"] // 10_000
        return Derived(pl.when(known).then(evaluated + converted).otherwise(_null(pl.Int64())))

    def pension_recognised_income(self) -> Derived:
        couple_household = self._others().fill_null(0) == 0
        assets_known = (
            pl.when(couple_household)
            .then(self.known(*income.HOUSEHOLD_ASSETS))
            .otherwise(self.known(*income.COUPLE_ASSETS))
        )
        known = self._incomes_known(household=False) & self.known("district_code") & assets_known
        try:
            figures = self.facts.income.pension_on(self.day)
        except ReferenceDataMissing:
            return Derived(_null(pl.Int64()), known)
        regions = self.facts.income.regions
        basic, _ = self.per_value(
            "district_code", lambda code: figures.basic_property[regions.pension_region(str(code))], pl.Int64()
        )
        earned = self.col("earned_income")
        flat = _least(earned, pl.lit(figures.earned_income_deduction, dtype=pl.Int64))
        extra = (earned - flat) * figures.earned_income_deduction_percent // 100
        evaluated = self._incomes(household=False) - flat - extra

        def pick(own: str, couple: str) -> pl.Expr:
            return pl.when(couple_household).then(self.col(own)).otherwise(self.col(couple))

        prop = (
            pl.when(couple_household)
            .then(self.col("residence_value") + self.col("other_property_value"))
            .otherwise(self.col("couple_property_value"))
        )
        vehicles = pick("vehicle_value", "couple_vehicle_value")
        financial = pick("financial_assets", "couple_financial_assets")
        debts = pick("debts", "couple_debts")
        luxury = pl.when(vehicles >= figures.luxury_vehicle_value).then(vehicles).otherwise(0)
        general = prop + vehicles - luxury
        allowance = _least(financial, pl.lit(figures.financial_allowance, dtype=pl.Int64))
        zero = pl.lit(0, dtype=pl.Int64)
        base = _greatest(zero, _greatest(zero, general - basic) + financial - allowance - debts)
        converted = base * figures.annual_rate_basis_points // 10_000 // 12
        return Derived(pl.when(known).then(evaluated + converted + luxury).otherwise(_null(pl.Int64())))

    # ------------------------------------------------------------------ all of them

    def derived(self, name: str) -> Derived:
        day = self.day
        c = self.col
        if name == "application_date":
            return Derived(pl.lit(day, dtype=pl.Date))
        if name == "age_years":
            return self.born("birth_date", years_between(c("birth_date"), day))
        if name == "calendar_age_months":
            by, bm, _ = _parts(c("birth_date"))
            return self.born("birth_date", (day.year - by) * 12 + (day.month - bm))
        if name == "child_age_months":
            return self.born("child_birth_date", months_between(c("child_birth_date"), day))
        if name == "child_age_days":
            return self.born("child_birth_date", _days(day, c("child_birth_date")))
        if name == "spouse_age_years":
            return self.born("spouse_birth_date", years_between(c("spouse_birth_date"), day))
        if name in _CHILD_COUNTS:
            low, high, fostered, with_newborn = _CHILD_COUNTS[name]
            return self.children(low, high, fostered=fostered, with_newborn=with_newborn)
        if name == "median_income":
            return self.median_income()
        if name == "district_support_tier":
            return self.district_tier()
        if name in _DAYS_SINCE:
            fact = _DAYS_SINCE[name]
            return self.guarded((fact,), _days(day, c(fact)), None, pl.Int64())
        if name == "months_since_death_month":
            dy, dm, _ = _parts(c("deceased_death_date"))
            value = (day.year * 12 + day.month) - (dy * 12 + dm)
            return self.guarded(("deceased_death_date",), value, None, pl.Int64())
        if name == "age_at_business_start":
            value = years_between(c("birth_date"), c("business_start_date"))
            return self.guarded(("birth_date", "business_start_date"), value, None, pl.Int64())
        if name == "months_after_maternity_leave":
            after = c("maternity_leave_end_date") + pl.duration(days=1)
            return self.guarded(("maternity_leave_end_date",), months_between(after, day), None, pl.Int64())
        if name == "employment_support_dependants":
            return self.employment_support_dependants()
        if name == "parents_aged_70_plus":
            return self.parents_aged_70_plus()
        if name == "household_income":
            return self.household_income()
        if name == "recognised_income":
            return self.recognised_income()
        if name == "pension_recognised_income":
            return self.pension_recognised_income()
        raise KeyError(name)  # pragma: no cover - derivations are checked against the catalogue


_CHILD_COUNTS = {
    "children_under_8": (0, 8 * 12, True, False),
    "children_under_9": (0, 9 * 12, True, False),
    "children_under_12_months": (0, 12, True, True),
    "children_12_to_23_months": (12, 24, True, True),
    "children_under_18": (0, 18 * 12, False, False),
    "children_school_age": (6 * 12, 18 * 12, False, False),
}
_DAYS_SINCE = {
    "days_since_move_in": "moved_in_date",
    "days_since_death": "deceased_death_date",
    "days_since_business_start": "business_start_date",
}


def asked_inputs(name: str, col: Callable[[str], pl.Expr]) -> list[tuple[str, pl.Expr]]:
    """The base facts a missing derived fact asks for instead (``derive``'s ``asks``), each with the condition (a
    Boolean column, never null) on which it is needed: every input, or for the incomes those their ``needs`` name
    given the facts known (``income.household_income_needs`` ...: the spouse's income only with a spouse, the
    other members' only with others, the couple's assets instead of the household's when others share it). An input
    is asked where it is needed and missing. ``col``: a fact's column (null for all when the table has none)."""
    derivation = DERIVATIONS[name]
    if derivation.needs is None:
        return [(i, pl.lit(True)) for i in derivation.inputs]
    size, spouse = col("household_size"), col("has_spouse")
    # income._others: None until the size and the spouse are known, counted as 0 by every ``needs``.
    others = (
        pl.when(size.is_not_null() & spouse.is_not_null())
        .then(_greatest(pl.lit(0, dtype=pl.Int64), size - 1 - spouse.cast(pl.Int64)))
        .otherwise(pl.lit(0, dtype=pl.Int64))
    )
    always, with_spouse = pl.lit(True), spouse.fill_null(False)
    out = [(i, always) for i in ("household_size", "has_spouse", *income.INCOMES)]
    out.append(("spouse_income", with_spouse))
    if name == "household_income":
        out.append(("other_members_income", others > 0))
    elif name == "recognised_income":
        out.append(("other_members_income", others > 0))
        out += [(i, always) for i in ("district_code", *income.HOUSEHOLD_ASSETS)]
    elif name == "pension_recognised_income":
        out.append(("district_code", always))
        out += [(i, others == 0) for i in income.HOUSEHOLD_ASSETS]
        out += [(i, others != 0) for i in income.COUPLE_ASSETS]
    else:  # pragma: no cover - a new derivation with ``needs`` must say here what it asks
        raise KeyError(name)
    return out


# Base facts that enter 64-bit arithmetic in the derivations, and their limit for a row judged here.
_INCOME_FACTS = (
    *income.INCOMES,
    "spouse_income",
    "other_members_income",
    *income.HOUSEHOLD_ASSETS,
    *income.COUPLE_ASSETS,
)


@dataclass
class DerivedTable:
    """The table with its derived facts, and per derived fact that can fail, the name of its ``:failed`` column."""

    frame: pl.LazyFrame
    failed: dict[str, str]
    present: frozenset[str]


def derive_table(
    frame: pl.LazyFrame,
    facts: FactCatalogue,
    medians: MedianIncomeTable,
    districts: DistrictTiers,
    day: dt.date,
    names: Iterable[str],
) -> DerivedTable:
    """Add the derived facts among ``names`` (each as ``derive`` computes it on ``day``) and the ``FALLBACK`` column
    (rows for the per-record engine); ``frame`` holds base facts (a fact without a column is missing for all)."""
    present = set(frame.collect_schema().names())
    looked_up = [c for c in ("district_code", "household_size", "child_birth_date") if c in present]
    uniques: dict[str, list[Any]] = {}
    if looked_up:
        found = frame.select([pl.col(c).unique().implode() for c in looked_up]).collect()
        uniques = {c: found.get_column(c).item().to_list() for c in looked_up}
    helper = _Derivations(facts, medians, districts, day, present, uniques)
    wanted = [n for n in DERIVATIONS if n in set(names)]
    columns: list[pl.Expr] = []
    failed: dict[str, str] = {}
    for name in wanted:
        derived = helper.derived(name)
        columns.append(derived.value.alias(name))
        if derived.failed is not None:
            failed[name] = name + FAILED
            columns.append(derived.failed.fill_null(False).alias(name + FAILED))
    for stage in helper.stages:
        frame = frame.with_columns(list(stage.values()))
    too_large = [pl.col(n).abs() > MAX_VECTOR_AMOUNT for n in _INCOME_FACTS if n in present]
    if "household_size" in present:
        too_large.append(pl.col("household_size") > MAX_VECTOR_HOUSEHOLD)
    if "newborns" in present:
        too_large.append(pl.col("newborns").abs() > MAX_VECTOR_HOUSEHOLD)
    fallback = pl.lit(False)
    for expr in too_large:
        fallback = fallback | expr.fill_null(False)
    columns.append(fallback.alias(FALLBACK))
    helpers = [c for stage in helper.stages for c in stage]
    out = frame.with_columns(columns).drop(helpers)
    return DerivedTable(out, failed, frozenset(present | set(wanted)))


# ---------------------------------------------------------------------------------------------- the registry projection

# A household member as intake's ``resident.updated`` gives it (shared.events.HouseholdMember), stored as JSON.
MEMBER = pl.Struct(
    {"relation": pl.String(), "birth_date": pl.String(), "monthly_income": pl.Int64(), "disability": pl.Boolean()}
)
MAX_LIST = 50  # FactCatalogue.coerce refuses a longer list: the fact is then missing


def _fits(values: pl.Expr) -> pl.Expr:
    """A list is a fact only with at most ``MAX_LIST`` items (FactCatalogue.coerce)."""
    return pl.when(values.list.len() <= MAX_LIST).then(values).otherwise(pl.lit(None, dtype=pl.List(pl.Date())))


def _household_aggregates(frame: pl.LazyFrame) -> pl.LazyFrame:
    """One row per resident with members: the household exploded to one row per member (its JSON decoded and its
    dates parsed once), then gathered again by relation, in the household's order."""
    relation = pl.col("relation")
    born = pl.col("member_birth_date")
    income = pl.col("monthly_income")

    def dates(*relations: str, disabled: bool = False) -> pl.Expr:
        test = relation.is_in(list(relations))
        if disabled:
            test = test & pl.col("disability").fill_null(False)
        return born.filter(test)

    members = (
        frame.select("__resident", pl.col("household").str.json_decode(pl.List(MEMBER)).alias("member"))
        .explode("member")
        .filter(pl.col("member").is_not_null())
        .unnest("member")
        # (the member's birth date, renamed so that it is never taken for the resident's)
        .select(
            "__resident",
            "relation",
            "monthly_income",
            "disability",
            pl.col("birth_date").str.to_date("%Y-%m-%d", strict=False).alias("member_birth_date"),
        )
    )
    return members.group_by("__resident", maintain_order=True).agg(
        pl.len().cast(pl.Int64).alias("__members"),
        (relation == "spouse").any().alias("__has_spouse"),
        (relation == "child").any().alias("__has_child"),
        dates("child").alias("__children"),
        dates("grandchild").alias("__grandchildren"),
        dates("foster_child", "ward").alias("__fostered"),
        dates("spouse", "parent", "child").alias("__family"),
        dates("spouse", "parent", "child", disabled=True).alias("__family_disabled"),
        dates("parent", "grandparent").alias("__parents"),
        born.filter(relation == "spouse").first().alias("__spouse_birth_date"),
        income.filter(relation == "spouse").first().alias("__spouse_income"),
        income.sum().cast(pl.Int64).alias("__income_sum"),
        income.is_null().sum().cast(pl.Int64).alias("__income_unknown"),
    )


def registry_columns(frame: pl.LazyFrame) -> pl.LazyFrame:
    """``facts.registry_facts`` for every row of the projection (``residents``: registry_version, birth_date,
    district_code, and household / vulnerability as JSON text), as the registry layer's typed columns."""
    frame = frame.with_row_index("__resident")
    frame = frame.join(_household_aggregates(frame), on="__resident", how="left", maintain_order="left")
    registered = pl.col("registry_version").is_not_null()
    in_household = registered & pl.col("household").is_not_null() & (pl.col("household") != "null")
    vulnerability = pl.col("vulnerability").str.json_decode(pl.List(pl.String()))
    in_vulnerability = registered & vulnerability.is_not_null()
    empty = pl.lit([], dtype=pl.List(pl.Date()))

    def listed(name: str) -> pl.Expr:
        return pl.col(name).fill_null(empty)

    has_spouse = pl.col("__has_spouse").fill_null(False)
    has_child = pl.col("__has_child").fill_null(False)
    spouse_income = pl.col("__spouse_income")
    # Everyone but the (first) spouse: their incomes, and how many of them the registry does not hold.
    others_sum = pl.col("__income_sum").fill_null(0) - pl.when(has_spouse).then(spouse_income.fill_null(0)).otherwise(0)
    others_unknown = pl.col("__income_unknown").fill_null(0) - pl.when(has_spouse & spouse_income.is_null()).then(
        1
    ).otherwise(0)
    own = pl.when(has_child).then(listed("__children")).otherwise(listed("__grandchildren"))

    def when(condition: pl.Expr, value: pl.Expr, name: str) -> pl.Expr:
        return pl.when(condition).then(value).alias(name)

    district = pl.col("district_code")
    columns = [
        when(registered, pl.col("birth_date"), "birth_date"),
        when(registered & district.str.contains(r"^[0-9]{5}$").fill_null(False), district, "district_code"),
        when(in_household, pl.col("__members").fill_null(0) + 1, "household_size"),
        when(in_household, has_spouse, "has_spouse"),
        when(in_household, _fits(own), "children_birth_dates"),
        when(in_household, _fits(listed("__fostered")), "fostered_children_birth_dates"),
        when(in_household, _fits(listed("__family")), "family_birth_dates"),
        when(in_household, _fits(listed("__family_disabled")), "family_disabled_birth_dates"),
        when(in_household, pl.col("__spouse_birth_date"), "spouse_birth_date"),
        when(in_household & has_spouse & (spouse_income.abs() <= 10**15), spouse_income, "spouse_income"),
        when(in_household & (others_unknown == 0) & (others_sum.abs() <= 10**15), others_sum, "other_members_income"),
        when(in_household, _fits(listed("__parents")), "parent_birth_dates"),
        when(in_vulnerability, vulnerability.list.contains("disability"), "disability_registered"),
        when(in_vulnerability, vulnerability.list.contains("single_parent"), "single_parent"),
    ]
    helpers = ["__resident", "__members", "__has_spouse", "__has_child", "__children", "__grandchildren", "__fostered",
               "__family", "__family_disabled", "__parents", "__spouse_birth_date", "__spouse_income", "__income_sum",
               "__income_unknown"]  # fmt: skip
    return frame.with_columns(columns).drop(helpers)


def consent_columns(departments: Iterable[str]) -> list[pl.Expr]:
    """Per department, whether the resident consents to eligibility using its data (``department_data:<dept>`` true
    in the consents' JSON object; a pattern, not a parse per department: the purposes are fixed words)."""
    return [
        pl.col("consents").str.contains(rf'"department_data:{d}"\s*:\s*true').fill_null(False).alias(f"consent:{d}")
        for d in sorted(departments)
    ]


def _decoded(value: pl.Expr, dtype: pl.DataType, fact: FactType) -> pl.Expr:
    """A stored department value (JSON text, written by ``FactCatalogue.coerce_json``) as the fact's column type;
    null where it does not fit (the registry's value then stands, as in ``resolve``)."""
    if dtype == pl.Int64():
        whole = value.cast(pl.Int64, strict=False)
        return pl.when(whole.abs() <= 10**15).then(whole)
    if dtype == pl.Float64():
        number = value.cast(pl.Float64, strict=False)
        return pl.when(number.is_finite() & (number.abs() <= 10**15)).then(number)
    if dtype == pl.Boolean():
        return pl.when(value == "true").then(True).when(value == "false").then(False)
    if dtype == pl.Date():
        return value.str.json_decode(pl.String()).str.to_date("%Y-%m-%d", strict=False)
    if dtype == pl.String():
        text = value.str.json_decode(pl.String())
        fits = (text.str.len_chars() >= 1) & (text.str.len_chars() <= 200)
        if fact.enum is not None:
            fits = fits & text.is_in(list(fact.enum))
        if fact.pattern is not None:
            fits = fits & text.str.contains(fact.pattern)
        return pl.when(fits).then(text)
    if isinstance(dtype, pl.List):
        decoded = value.str.json_decode(pl.List(pl.String())).list.eval(
            pl.element().str.to_date("%Y-%m-%d", strict=False)
        )
        return pl.when(decoded.list.len() <= MAX_LIST).then(decoded)
    raise ValueError(f"no column type {dtype}")  # pragma: no cover - base_schema gives only these


def registry_table(
    residents: pl.DataFrame,
    reports: pl.DataFrame,
    facts: FactCatalogue,
    names: Iterable[str],
    now: dt.datetime,
    answers: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The base facts ``names`` of every resident of the projection, resolved as ``facts.resolve`` does.

    ``residents``: resident_id, registry_version, birth_date, district_code, household, vulnerability, consents (the
    last three as JSON text). ``reports``: resident_id, id, name, value (JSON text), department, observed_at,
    valid_until. ``answers``: what residents declared (resident_id, name, value as JSON text: their answers to
    screening questions), the layer beneath the registry. Returns resident_id and one column per fact, in
    ``residents``' order."""
    schema = base_schema(facts, names)
    registry = [n for n in schema if facts[n].registry]
    reported = [n for n in schema if facts[n].authorities]
    departments = sorted({d for n in reported for d in facts[n].authorities})
    frame = registry_columns(residents.lazy()).with_columns(consent_columns(departments)).collect()
    frame = frame.with_row_index("__resident")
    present: list[str] = []
    out = frame.lazy()
    if reported and reports.height:
        allowed = [f"{n}\x1f{d}" for n in reported for d in sorted(facts[n].authorities)]
        department = pl.col("department")
        consented = pl.lit(False)
        for d in departments:
            consented = pl.when(department == d).then(pl.col(f"consent:{d}")).otherwise(consented)
        consents = frame.lazy().select("resident_id", "__resident", *[f"consent:{d}" for d in departments])
        # Reports may come with each resident's row already (``__resident``, as the screening's pages give them):
        # then they are matched on that integer, not on the resident's id.
        if "__resident" in reports.columns:
            matched = reports.lazy().join(consents.drop("resident_id"), on="__resident", how="inner")
        else:
            matched = reports.lazy().join(consents, on="resident_id", how="inner")
        usable = (
            matched.filter(
                pl.concat_str([pl.col("name"), department], separator="\x1f").is_in(allowed)
                & (pl.col("valid_until").is_null() | (pl.col("valid_until") > now))
                & consented
            )
            # One integer per (resident, fact): finding a fact reported twice is cheap on it.
            .with_columns(
                (
                    pl.col("__resident").cast(pl.UInt64) * 256
                    + pl.col("name").replace_strict(reported, list(range(len(reported))), return_dtype=pl.UInt64)
                ).alias("__key")
            )
            .select("__resident", "__key", "id", "name", "value", "observed_at")
            .collect()
        )
        # The latest observed of each fact; of two observed at the same moment, the first stored (``resolve`` keeps
        # the first it meets, and reads them in the order they were stored). Most facts are reported once: only
        # those reported more than once are sorted.
        twice = usable.get_column("__key").is_duplicated()
        latest = usable.filter(~twice)
        if twice.any():
            chosen = (
                usable.filter(twice)
                .sort(["__key", "observed_at", "id"], descending=[False, True, False])
                .unique("__key", keep="first", maintain_order=True)
            )
            latest = pl.concat([latest, chosen])
        latest = latest.select("__resident", "name", "value")
        wide = latest.pivot(on="name", index="__resident", values="value")
        missing = [n for n in reported if n not in wide.columns]
        wide = wide.with_columns([pl.lit(None, dtype=pl.String).alias(n) for n in missing])
        decoded = wide.lazy().select(
            "__resident", *[_decoded(pl.col(n), schema[n], facts[n]).alias(f"reported:{n}") for n in reported]
        )
        out = out.join(decoded, on="__resident", how="left", maintain_order="left")
        present = reported
    declared: list[str] = []
    if answers is None:
        answers = pl.DataFrame(schema={"resident_id": pl.String(), "name": pl.String(), "value": pl.String()})
    if answers.height:
        # Any base fact may be declared (``coerce_all``): a value that does not fit is left out, as there.
        given = answers.filter(pl.col("name").is_in(list(schema)))
        declared = sorted(set(given.get_column("name").to_list()))
    if declared:
        ids = frame.select("resident_id", "__resident")
        wide = (
            answers.filter(pl.col("name").is_in(declared))
            .join(ids, on="resident_id", how="inner")
            .pivot(on="name", index="__resident", values="value")
        )
        out = out.join(
            wide.lazy().select(
                "__resident", *[_decoded(pl.col(n), schema[n], facts[n]).alias(f"declared:{n}") for n in declared]
            ),
            on="__resident",
            how="left",
            maintain_order="left",
        )
    columns = ["resident_id"]
    selected: list[pl.Expr] = []
    for name, dtype in schema.items():
        # By precedence (``resolve``): a department's report, then the registry, then the resident's declaration.
        layers = [pl.col(f"reported:{name}")] if name in present else []
        if name in registry:
            layers.append(pl.col(name))
        if name in declared:
            layers.append(pl.col(f"declared:{name}"))
        value = pl.coalesce(layers) if len(layers) > 1 else layers[0] if layers else pl.lit(None, dtype=dtype)
        selected.append(value.cast(dtype).alias(name))
    return out.select(*[pl.col(c) for c in columns], *selected).collect()
