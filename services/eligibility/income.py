"""소득인정액 (recognised income), computed from what the government holds rather than asked of the resident.

No resident can answer "your household's recognised monthly income": it is a statutory computation. What a person can
answer, and what departments report (wages, business income, public pensions) or the registry holds (the household's
members and their incomes), are base facts; the recognised income is derived from them here, with the statutory
figures of ``catalogue/recognised_income.yaml``, once per scheme, because each scheme counts a different unit:

- ``recognised_income`` — 국민기초생활보장 (생계·의료·주거·교육급여 and the programs that follow them): the whole
  household. 소득평가액 (the incomes, earned income less its deduction) plus 재산의 소득환산액 (each kind of asset,
  less the regional basic deduction and the debts, times its monthly conversion rate).
- ``pension_recognised_income`` — 기초연금: the applicant and spouse, with the pension's own deductions.
- ``household_income`` — the household's plain monthly income (no deductions, no assets), for programs whose test is
  income alone (긴급복지 and others).

Every derivation says which facts it needs given what is known (:func:`household_income_needs` ...): the spouse's income
only when there is a spouse, the other members' only when there are others, the couple's own assets only when others
share the household. Each result carries its workings: the computation line by line, each figure with where it came
from (the fact's source, the statutory figure's notice, or a subtotal), which the explanation shows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from shared.yamlfile import load_yaml

REFERENCE = "reference"
DERIVED = "derived"
MISSING = "missing"

LineKind = Literal["fact", "figure", "subtotal"]


class ReferenceDataMissing(LookupError):
    """No reference table (median income, income figures) is in force on the day asked."""


# ---------------------------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class LivelihoodFigures:
    """국민기초생활보장 소득인정액의 산정 기준 in force from ``effective_from``."""

    effective_from: dt.date
    source: str
    references: Mapping[str, str]  # per figure: the article or notice it comes from
    earned_income_deduction_percent: int
    basic_property: Mapping[str, int]  # 기본재산액 by region class
    residence_cap: Mapping[str, int]  # 주거용재산 한도액 by region class
    financial_allowance: int  # 생활준비금
    monthly_rate_basis_points: Mapping[str, int]  # residence, general, financial, vehicle


@dataclass(frozen=True)
class PensionFigures:
    """기초연금 소득인정액의 산정 기준 in force from ``effective_from``."""

    effective_from: dt.date
    source: str
    references: Mapping[str, str]
    earned_income_deduction: int
    earned_income_deduction_percent: int
    basic_property: Mapping[str, int]  # 기본재산액: large_city, small_city, rural
    financial_allowance: int
    annual_rate_basis_points: int
    luxury_vehicle_value: int


@dataclass(frozen=True)
class Regions:
    """Which region class a district code is in, for each scheme's basic deductions."""

    livelihood: Mapping[str, tuple[str, ...]]  # class -> district-code prefixes; any other code is "other"
    large_city_provinces: frozenset[str]

    def livelihood_region(self, district_code: str) -> str:
        best, length = "other", 0
        for region, prefixes in self.livelihood.items():
            for prefix in prefixes:
                if district_code.startswith(prefix) and len(prefix) > length:
                    best, length = region, len(prefix)
        return best

    def pension_region(self, district_code: str) -> str:
        if is_county(district_code):
            return "rural"
        return "large_city" if district_code[:2] in self.large_city_provinces else "small_city"


def is_county(district_code: str) -> bool:
    """A county (군): the last three digits of its code are 700 or more (행정표준코드)."""
    return district_code[2:].isdigit() and int(district_code[2:]) >= 700


REGION_NAMES: dict[str, tuple[str, str]] = {
    "seoul": ("서울", "Seoul"),
    "gyeonggi": ("경기", "Gyeonggi"),
    "metropolitan": ("광역·세종·창원", "metropolitan city, Sejong or Changwon"),
    "other": ("그 외 지역", "elsewhere"),
    "large_city": ("대도시", "large city"),
    "small_city": ("중소도시", "small or medium city"),
    "rural": ("농어촌", "rural area"),
}


class IncomeFigures:
    """The figures of every scheme, each version in force from its ``effective_from`` until the next."""

    def __init__(
        self, regions: Regions, livelihood: Iterable[LivelihoodFigures], pension: Iterable[PensionFigures]
    ) -> None:
        self.regions = regions
        self.livelihood = sorted(livelihood, key=lambda f: f.effective_from)
        self.pension = sorted(pension, key=lambda f: f.effective_from)

    def livelihood_on(self, day: dt.date) -> LivelihoodFigures:
        return _in_force(self.livelihood, day, "국민기초생활보장 소득인정액")

    def pension_on(self, day: dt.date) -> PensionFigures:
        return _in_force(self.pension, day, "기초연금 소득인정액")

    @classmethod
    def load(cls, path: Path) -> IncomeFigures:
        raw = load_yaml(path)
        regions = Regions(
            livelihood={k: tuple(str(p) for p in v) for k, v in raw["regions"]["livelihood"].items()},
            large_city_provinces=frozenset(str(p) for p in raw["regions"]["pension"]["large_city_provinces"]),
        )
        livelihood = [
            LivelihoodFigures(
                effective_from=_as_date(e["effective_from"]),
                source=str(e["source"]),
                references=_references(e, LIVELIHOOD_REFERENCES),
                earned_income_deduction_percent=int(e["earned_income_deduction_percent"]),
                basic_property=_amounts(e["basic_property"]),
                residence_cap=_amounts(e["residence_cap"]),
                financial_allowance=int(e["financial_allowance"]),
                monthly_rate_basis_points=_amounts(e["monthly_rate_basis_points"]),
            )
            for e in raw["basic_livelihood"]
        ]
        pension = [
            PensionFigures(
                effective_from=_as_date(e["effective_from"]),
                source=str(e["source"]),
                references=_references(e, PENSION_REFERENCES),
                earned_income_deduction=int(e["earned_income_deduction"]),
                earned_income_deduction_percent=int(e["earned_income_deduction_percent"]),
                basic_property=_amounts(e["basic_property"]),
                financial_allowance=int(e["financial_allowance"]),
                annual_rate_basis_points=int(e["annual_rate_basis_points"]),
                luxury_vehicle_value=int(e["luxury_vehicle_value"]),
            )
            for e in raw["basic_pension"]
        ]
        for figures in livelihood:
            for table in (figures.basic_property, figures.residence_cap):
                if set(table) != {*regions.livelihood, "other"}:
                    raise ValueError(f"{path.name}: every livelihood region needs a figure, not {sorted(table)}")
        for p in pension:
            if set(p.basic_property) != {"large_city", "small_city", "rural"}:
                raise ValueError(f"{path.name}: the pension's basic deduction needs large_city, small_city, rural")
        return cls(regions, livelihood, pension)


F = TypeVar("F", LivelihoodFigures, PensionFigures)


def _in_force(versions: Sequence[F], day: dt.date, what: str) -> F:
    found = None
    for version in versions:
        if version.effective_from <= day:
            found = version
    if found is None:
        raise ReferenceDataMissing(f"no {what} figures are in force on {day.isoformat()}")
    return found


LIVELIHOOD_REFERENCES = frozenset(
    {"earned_income_deduction", "basic_property", "residence_cap", "financial_allowance", "conversion_rates"}
)
PENSION_REFERENCES = frozenset(
    {"earned_income_deduction", "basic_property", "financial_allowance", "conversion_rates", "luxury_vehicle_value"}
)


def _references(entry: Mapping[str, Any], needed: frozenset[str]) -> dict[str, str]:
    """Each figure's own reference; a figure without one is refused (every figure names its source)."""
    references = {str(k): str(v) for k, v in (entry.get("references") or {}).items()}
    if set(references) != needed:
        raise ValueError(f"income figures of {entry['effective_from']}: references must name {sorted(needed)}")
    return references


def _amounts(raw: Mapping[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in raw.items()}


def _as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


class HasIncomeFigures(Protocol):
    @property
    def income(self) -> IncomeFigures: ...


# ---------------------------------------------------------------------------------------------- workings


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a computation: an input fact (its source is the fact's), a statutory figure (its source is the
    notice or article), or a subtotal computed from the lines above it (with the rate it applied, if any)."""

    item: str
    ko: str
    en: str
    amount: int
    kind: LineKind
    fact: str | None = None
    reference: str | None = None

    def as_json(self, sources: Mapping[str, str]) -> dict[str, Any]:
        if self.kind == "fact":
            assert self.fact is not None
            source = sources.get(self.fact, MISSING)
        else:
            source = REFERENCE if self.kind == "figure" else DERIVED
        return {
            "item": self.item,
            "label": {"ko": self.ko, "en": self.en},
            "amount": self.amount,
            "source": source,
            "reference": self.reference,
        }


@dataclass(frozen=True, slots=True)
class Computed:
    """A derived value with its workings."""

    value: int
    lines: tuple[Line, ...]


TIMES = "\u00d7"  # the multiplication sign of the labels


def won(amount: int) -> str:
    return f"{amount:,}원"


def _percent(basis_points: int) -> str:
    return f"{basis_points / 100:g}%"


# ---------------------------------------------------------------------------------------------- what is needed

INCOMES = ("earned_income", "business_income", "public_pension_income")
HOUSEHOLD_ASSETS = ("residence_value", "other_property_value", "financial_assets", "vehicle_value", "debts")
COUPLE_ASSETS = ("couple_property_value", "couple_financial_assets", "couple_vehicle_value", "couple_debts")

# Every fact each derivation may read (its FactType.inputs); which of them it needs depends on the others.
HOUSEHOLD_INCOME_INPUTS = ("household_size", "has_spouse", *INCOMES, "spouse_income", "other_members_income")
RECOGNISED_INCOME_INPUTS = (*HOUSEHOLD_INCOME_INPUTS, "district_code", *HOUSEHOLD_ASSETS)
PENSION_INCOME_INPUTS = (
    "household_size",
    "has_spouse",
    *INCOMES,
    "spouse_income",
    "district_code",
    *HOUSEHOLD_ASSETS,
    *COUPLE_ASSETS,
)


def _others(values: Mapping[str, Any]) -> int | None:
    """How many members besides the applicant and spouse, once the household's size and spouse are known."""
    size, spouse = values.get("household_size"), values.get("has_spouse")
    if size is None or spouse is None:
        return None
    return max(0, int(size) - 1 - (1 if spouse else 0))


def household_income_needs(values: Mapping[str, Any]) -> tuple[str, ...]:
    out = ["household_size", "has_spouse", *INCOMES]
    if values.get("has_spouse") is True:
        out.append("spouse_income")
    if (_others(values) or 0) > 0:
        out.append("other_members_income")
    return tuple(out)


def recognised_income_needs(values: Mapping[str, Any]) -> tuple[str, ...]:
    return (*household_income_needs(values), "district_code", *HOUSEHOLD_ASSETS)


def _couple_is_the_household(values: Mapping[str, Any]) -> bool:
    """Whether the household's assets are the couple's: no one else lives in it (or that is not known yet: the
    household's figures are then asked, as for most applicants)."""
    return (_others(values) or 0) == 0


def pension_income_needs(values: Mapping[str, Any]) -> tuple[str, ...]:
    out = ["household_size", "has_spouse", *INCOMES]
    if values.get("has_spouse") is True:
        out.append("spouse_income")
    out.append("district_code")
    out.extend(HOUSEHOLD_ASSETS if _couple_is_the_household(values) else COUPLE_ASSETS)
    return tuple(out)


# ---------------------------------------------------------------------------------------------- the computations


def _fact(values: Mapping[str, Any], name: str, ko: str, en: str, sign: int = 1) -> Line:
    return Line(name, ko, en, sign * int(values[name]), "fact", fact=name)


def _incomes(values: Mapping[str, Any], household: bool) -> list[Line]:
    """The incomes of the unit as input lines: the applicant's by kind, the spouse's, and (for the whole household)
    the other members'. Members' incomes come from the registry (or the resident) as one figure each, taken as
    evaluated income (소득평가액)."""
    lines = [
        _fact(values, "earned_income", "근로소득 (본인)", "Earned income (applicant)"),
        _fact(values, "business_income", "사업소득 (본인)", "Business income (applicant)"),
        _fact(values, "public_pension_income", "공적연금 (본인)", "Public pensions (applicant)"),
    ]
    if values["has_spouse"]:
        lines.append(_fact(values, "spouse_income", "배우자의 소득", "The spouse's income"))
    if household and (_others(values) or 0) > 0:
        lines.append(
            _fact(values, "other_members_income", "그 밖의 가구원의 소득", "The other household members' income")
        )
    return lines


def household_income(values: Mapping[str, Any], day: dt.date, refs: HasIncomeFigures) -> Computed:
    """The household's monthly income: every member's, with no deduction and no assets."""
    lines = _incomes(values, household=True)
    total = sum(line.amount for line in lines)
    lines.append(Line("household_income", "가구의 월 소득 합계", "The household's monthly income", total, "subtotal"))
    return Computed(total, tuple(lines))


def recognised_income(values: Mapping[str, Any], day: dt.date, refs: HasIncomeFigures) -> Computed:
    """국민기초생활보장 소득인정액 of the whole household: 소득평가액 + 재산의 소득환산액."""
    figures = refs.income.livelihood_on(day)
    cite = figures.references
    lines = _incomes(values, household=True)
    percent = figures.earned_income_deduction_percent
    deduction = int(values["earned_income"]) * percent // 100
    lines.insert(
        1,
        Line(
            "earned_income_deduction",
            f"근로소득공제 ({percent}%)",
            f"Earned-income deduction ({percent} %)",
            -deduction,
            "figure",
            reference=cite["earned_income_deduction"],
        ),
    )
    evaluated = sum(line.amount for line in lines)
    lines.append(Line("evaluated_income", "소득평가액", "Evaluated income", evaluated, "subtotal"))

    region = refs.income.regions.livelihood_region(str(values["district_code"]))
    region_ko, region_en = REGION_NAMES[region]
    residence = int(values["residence_value"])
    cap = figures.residence_cap[region]
    financial = int(values["financial_assets"])
    allowance = min(financial, figures.financial_allowance)
    basic = figures.basic_property[region]
    debts = int(values["debts"])
    lines += [
        _fact(values, "residence_value", "주거용재산 (거주하는 집·보증금)", "Home lived in (value or deposit)"),
        Line(
            "residence_cap",
            f"주거용재산 한도액 ({region_ko}): {won(cap)}, 넘는 부분은 일반재산",
            f"Cap on the home ({region_en}): {cap:,}; the rest counts as other property",
            cap,
            "figure",
            reference=cite["residence_cap"],
        ),
        _fact(
            values, "other_property_value", "그 밖의 일반재산 (토지·건물 등)", "Other property (land, buildings ...)"
        ),
        _fact(values, "financial_assets", "금융재산", "Financial assets"),
        Line(
            "financial_allowance",
            f"금융재산 생활준비금 공제 (최대 {won(figures.financial_allowance)})",
            "Living allowance deducted from financial assets",
            -allowance,
            "figure",
            reference=cite["financial_allowance"],
        ),
        _fact(values, "vehicle_value", "자동차", "Vehicles"),
        Line(
            "basic_property",
            f"기본재산액 ({region_ko})",
            f"Basic property deduction ({region_en})",
            -basic,
            "figure",
            reference=cite["basic_property"],
        ),
        _fact(values, "debts", "부채", "Debts", sign=-1),
    ]
    # The basic deduction and the debts come off the home first, then other property, then financial assets.
    housing = min(residence, cap)
    remaining = basic + debts
    net: dict[str, int] = {}
    for kind, amount in (
        ("residence", housing),
        ("general", int(values["other_property_value"]) + residence - housing),
        ("financial", financial - allowance),
    ):
        taken = min(amount, remaining)
        net[kind] = amount - taken
        remaining -= taken
    net["vehicle"] = int(values["vehicle_value"])
    rates = figures.monthly_rate_basis_points
    names = {
        "residence": ("주거용재산", "home"),
        "general": ("일반재산", "other property"),
        "financial": ("금융재산", "financial assets"),
        "vehicle": ("자동차", "vehicles"),
    }
    converted_total = 0
    for kind, (ko, en) in names.items():
        converted = net[kind] * rates[kind] // 10_000
        converted_total += converted
        rate = _percent(rates[kind])
        lines.append(
            Line(
                f"converted_{kind}",
                f"{ko} 소득환산: 공제 후 {won(net[kind])} {TIMES} 월 {rate}",
                f"Converted {en}: {net[kind]:,} after deductions {TIMES} {rate} a month",
                converted,
                "subtotal",
                reference=cite["conversion_rates"],
            )
        )
    lines.append(
        Line("converted_assets", "재산의 소득환산액", "Assets converted to income", converted_total, "subtotal")
    )
    total = evaluated + converted_total
    lines.append(Line("recognised_income", "소득인정액", "Recognised income", total, "subtotal"))
    return Computed(total, tuple(lines))


def pension_recognised_income(values: Mapping[str, Any], day: dt.date, refs: HasIncomeFigures) -> Computed:
    """기초연금 소득인정액 of the applicant and spouse: the household's assets when no one else lives in it, the
    couple's own otherwise."""
    figures = refs.income.pension_on(day)
    cite = figures.references
    lines = _incomes(values, household=False)
    earned = int(values["earned_income"])
    flat = min(earned, figures.earned_income_deduction)
    percent = figures.earned_income_deduction_percent
    extra = (earned - flat) * percent // 100
    lines[1:1] = [
        Line(
            "earned_income_deduction",
            f"근로소득공제 ({won(figures.earned_income_deduction)})",
            f"Earned-income deduction ({figures.earned_income_deduction:,})",
            -flat,
            "figure",
            reference=cite["earned_income_deduction"],
        ),
        Line(
            "earned_income_extra_deduction",
            f"근로소득 추가공제 (나머지의 {percent}%)",
            f"Further earned-income deduction ({percent} % of the rest)",
            -extra,
            "figure",
            reference=cite["earned_income_deduction"],
        ),
    ]
    evaluated = sum(line.amount for line in lines)
    lines.append(Line("evaluated_income", "소득평가액", "Evaluated income", evaluated, "subtotal"))

    region = refs.income.regions.pension_region(str(values["district_code"]))
    region_ko, region_en = REGION_NAMES[region]
    if _couple_is_the_household(values):
        property_lines = [
            _fact(values, "residence_value", "거주하는 집·보증금", "Home lived in (value or deposit)"),
            _fact(values, "other_property_value", "그 밖의 일반재산 (토지·건물 등)", "Other property"),
        ]
        financial_name, vehicle_name, debts_name = "financial_assets", "vehicle_value", "debts"
    else:
        property_lines = [
            _fact(values, "couple_property_value", "본인·배우자의 주택·토지·건물·보증금", "The couple's property")
        ]
        financial_name, vehicle_name, debts_name = "couple_financial_assets", "couple_vehicle_value", "couple_debts"
    vehicles = int(values[vehicle_name])
    luxury = vehicles if vehicles >= figures.luxury_vehicle_value else 0
    general = sum(line.amount for line in property_lines) + vehicles - luxury
    basic = figures.basic_property[region]
    financial = int(values[financial_name])
    allowance = min(financial, figures.financial_allowance)
    debts = int(values[debts_name])
    lines += [
        *property_lines,
        _fact(values, vehicle_name, "자동차 (고급자동차가 아니면 일반재산)", "Vehicles (other property unless luxury)"),
        Line(
            "basic_property",
            f"기본재산액 ({region_ko}): 일반재산에서 최대 {won(basic)}",
            f"Basic property deduction ({region_en}): up to {basic:,} from property",
            -min(general, basic),
            "figure",
            reference=cite["basic_property"],
        ),
        _fact(values, financial_name, "금융재산", "Financial assets"),
        Line(
            "financial_allowance",
            f"금융재산 공제 (최대 {won(figures.financial_allowance)})",
            "Financial assets deduction",
            -allowance,
            "figure",
            reference=cite["financial_allowance"],
        ),
        _fact(values, debts_name, "부채", "Debts", sign=-1),
    ]
    base = max(0, max(0, general - basic) + financial - allowance - debts)
    rate = figures.annual_rate_basis_points
    converted = base * rate // 10_000 // 12
    lines.append(
        Line(
            "converted_assets",
            f"재산의 소득환산액: {won(base)} {TIMES} 연 {_percent(rate)} ÷ 12",
            f"Assets converted to income: {base:,} {TIMES} {_percent(rate)} a year ÷ 12",
            converted,
            "subtotal",
            reference=cite["conversion_rates"],
        )
    )
    if luxury:
        lines.append(
            Line(
                "luxury_vehicle",
                f"고급자동차 ({won(figures.luxury_vehicle_value)} 이상): 가액 전액",
                f"Luxury vehicle ({figures.luxury_vehicle_value:,} or more): its whole value",
                luxury,
                "subtotal",
                reference=cite["luxury_vehicle_value"],
            )
        )
    total = evaluated + converted + luxury
    lines.append(
        Line(
            "pension_recognised_income",
            "소득인정액 (본인·배우자)",
            "Recognised income (applicant and spouse)",
            total,
            "subtotal",
        )
    )
    return Computed(total, tuple(lines))


# ---------------------------------------------------------------------------------------------- the registry


def household_registry_facts(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the registry's household members establish for the income and household-type rules: the spouse's birth
    date and income, the other members' income (only when every one of them is known: a member whose income the
    registry does not hold makes the total unknown, never zero), and the birth dates of parents and grandparents."""
    out: dict[str, Any] = {}
    spouse = next((m for m in members if m.get("relation") == "spouse"), None)
    if spouse is not None:
        if spouse.get("birth_date"):
            out["spouse_birth_date"] = _as_date(spouse["birth_date"])
        if spouse.get("monthly_income") is not None:
            out["spouse_income"] = int(spouse["monthly_income"])
    others = [m for m in members if m is not spouse]
    if all(m.get("monthly_income") is not None for m in others):
        out["other_members_income"] = sum(int(m["monthly_income"]) for m in others)
    out["parent_birth_dates"] = [
        _as_date(m["birth_date"])
        for m in members
        if m.get("relation") in ("parent", "grandparent") and m.get("birth_date")
    ]
    return out
