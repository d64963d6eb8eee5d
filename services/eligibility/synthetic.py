"""A synthetic resident registry for screening at population scale (``onestop registry generate``): households drawn
from Korea's published distributions, every member a resident with the registry facts eligibility projects and the
department facts the income-tested programs read, written to Parquet with a manifest. A planted set of residents is
built to be eligible for named programs without ever having applied; the manifest lists them, checked against the
per-record engine when they are made, so a screening that misses one is wrong.

Distributions and where they come from (approximate shares, rounded; each to be checked against the table named
before being relied on — "확인 필요" — and the assumptions marked as such):

- Households by type. 통계청 「2023 인구주택총조사」 (2024.7 발표), 가구원수별 가구: 1인 35.5 %, 2인 28.8 %, 3인 19.2 %,
  4인 13.0 %, 5인 이상 3.5 %. Types (our split of those sizes; assumption): one person 35.5 %, a couple alone 17 %,
  a couple with children 26 %, a single parent with children 6.7 % (통계청 「2023 인구주택총조사」 한부모 가구 약
  149만, 6.7 %), three generations 3.5 %, grandparents raising grandchildren (조손가구) 0.5 % (2020 인구주택총조사
  조손가구 약 0.4 %, 확인 필요), a parent living with an adult child or siblings 10.8 % (the rest).
- Ages. Derived from the roles in the household (the age of a one-person household's member from 통계청 「2023
  인구주택총조사」 연령대별 1인가구: 20대 18.6 %, 30대 17.3 %, 40대 12.6 %, 50대 15.6 %, 60대 16.7 %, 70세 이상
  18.6 %); the resulting pyramid is written to the manifest beside 행정안전부 「주민등록 인구통계」 2024 (KOSIS,
  연령별 주민등록인구) 10-year shares, so any gap is visible rather than hidden.
- Income by median-income decile. Each household's income relative to 기준 중위소득 for its size (보건복지부 고시
  2025, catalogue/median_income.yaml) is drawn within its decile's band; the bands (assumption) put 15 % of households
  under half the median, the relative poverty rate of 통계청 「2024 가계금융복지조사」 (처분가능소득 기준 14.9 %);
  households whose head is 65 or older are drawn from the lower deciles more often (same survey: 노인 빈곤율 약
  38 %). Dual earners among couples of working age 48 % (통계청 「2023 맞벌이 가구 현황」 48.2 %); the self-employed
  among workers 23 % (통계청 「경제활동인구조사」 2024 비임금근로자 비중 약 23 %); public pension among those 65+
  51 % with about 650,000 won a month (국민연금공단 「국민연금 통계」 2024, 확인 필요).
- Assets by decile. Net assets rise with the income decile, from about 80 million won in the first to 900 million in
  the tenth (assumption shaped on 통계청 「2024 가계금융복지조사」 소득 5분위별 순자산 — 확인 필요); tenure
  owner 57 %, jeonse 15 %, monthly rent 23 %, other 5 % (국토교통부 「2023 주거실태조사」 점유형태, 확인 필요).
- Disability. Registered disability 5.1 % of the population (보건복지부 「2023년 등록장애인 현황」 263만 명), more
  likely with age (assumption: 1.5 % under 20, up to 13 % at 65+).
- Occupational pensions (공무원·군인·사학연금): 6 % of those 60 or older without a national pension (assumption:
  about 60만 수급자 against 1,000만 aged 65+, 인사혁신처·국방부·사학연금 통계 — 확인 필요).
- Korean nationality 98 % (assumption: 주민등록 lists nationals; foreign residents are registered elsewhere).
- Employment among 15-64: employed 69 %, unemployed 3 % (통계청 「경제활동인구조사」 2024 고용률 69.5 %, 실업률
  약 2.8 %); 65+: employed 38 % (same survey).
- Consent (assumption): 70 % consent to proactive screening; of those, 90 % to the use of department data.

Deterministic: the same ``--residents`` and ``--seed`` give the same files.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from services.eligibility.catalogue import Catalogue
from services.eligibility.facts import FactLayers, registry_facts
from shared.events import Outcome

SOURCE = "synthetic registry (onestop registry generate)"

HOUSEHOLD_TYPES = {
    "one_person": 0.355,
    "couple": 0.17,
    "couple_with_children": 0.26,
    "single_parent": 0.067,
    "three_generations": 0.035,
    "grandparents_raising": 0.005,
    "parent_and_adult_child": 0.108,
}
# 1인가구 연령대 (2023 인구주택총조사): (lowest age, highest age, share)
ONE_PERSON_AGES = [(20, 29, 0.192), (30, 39, 0.173), (40, 49, 0.126), (50, 59, 0.156), (60, 69, 0.167),
                   (70, 95, 0.186)]  # fmt: skip
# 주민등록 인구통계 2024 (행정안전부, KOSIS), 10-year shares, for the manifest's comparison (approximate).
REFERENCE_PYRAMID = {"0-9": 0.070, "10-19": 0.091, "20-29": 0.119, "30-39": 0.131, "40-49": 0.151, "50-59": 0.166,
                     "60-69": 0.145, "70-79": 0.080, "80+": 0.048}  # fmt: skip
# Income relative to the median income for the household's size, by decile (assumption; see the docstring).
DECILE_BANDS = [(0.05, 0.30), (0.30, 0.45), (0.45, 0.55), (0.55, 0.70), (0.70, 0.85), (0.85, 1.00), (1.00, 1.20),
                (1.20, 1.45), (1.45, 1.90), (1.90, 4.00)]  # fmt: skip
SENIOR_DECILE_WEIGHTS = [0.22, 0.17, 0.13, 0.11, 0.09, 0.08, 0.07, 0.05, 0.04, 0.04]
NET_ASSETS_BY_DECILE = [80e6, 110e6, 150e6, 190e6, 240e6, 300e6, 360e6, 450e6, 580e6, 900e6]
TENURE = {"owner": 0.57, "jeonse": 0.15, "monthly_rent": 0.23, "other": 0.05}
DEFAULT_DISTRICTS = {  # a capital-region city, a metropolitan city, a depopulation area of each tier
    "11440": 0.45, "41111": 0.25, "26110": 0.15, "47170": 0.08, "43760": 0.07,
}  # fmt: skip


@dataclass
class Person:
    key: int
    birth_date: dt.date
    sex: str
    generation: int  # 0 grandparents, 1 parents, 2 children
    line: str  # "blood" or "in_law" for the parents' generation in a three-generation household
    spouse_of: int | None = None
    disability: bool = False
    earned: int = 0
    business: int = 0
    pension: int = 0
    employment: str | None = None
    income_known: bool = True


@dataclass
class Household:
    key: int
    kind: str
    district: str
    members: list[Person]
    decile: int = 5
    tenure: str = "owner"
    assets: dict[str, int] = field(default_factory=dict)
    lease_deposit: int | None = None
    monthly_rent: int | None = None


def relation(of: Person, to: Person, kind: str) -> str:
    """What ``of`` is to ``to`` in the registry's words (shared.events.HouseholdMember.relation)."""
    if of.spouse_of == to.key:
        return "spouse"
    gap = of.generation - to.generation
    if gap == 0:
        return "sibling" if of.generation == 2 else "other"
    if gap == -2:
        return "grandparent"
    if gap == 2:
        return "grandchild"
    if gap == -1:  # of is one generation above
        if to.generation == 1 and to.line == "in_law":
            return "other"  # a parent-in-law
        return "parent"
    if of.generation == 1 and of.line == "in_law":
        return "other"  # a child-in-law
    return "child"


class Generator:
    def __init__(self, seed: int, as_of: dt.date, medians: Catalogue, districts: dict[str, float]) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a reproducible population, not a secret
        self.as_of = as_of
        self.catalogue = medians
        self.districts = districts
        self.keys = 0

    def _key(self) -> int:
        self.keys += 1
        return self.keys

    def born(self, low: int, high: int) -> dt.date:
        """A birth date for an age between ``low`` and ``high`` (whole years) on the day of the registry."""
        days = self.rng.randint(low * 365 + 1, high * 365 + 364)
        return self.as_of - dt.timedelta(days=days)

    def person(self, low: int, high: int, generation: int, line: str = "blood") -> Person:
        sex = self.rng.choice("FM")
        return Person(self._key(), self.born(low, high), sex, generation, line)

    def couple(self, low: int, high: int, generation: int) -> list[Person]:
        a = self.person(low, high, generation)
        b = self.person(max(low, 19), high, generation, "in_law")
        a.sex, b.sex = "M", "F"
        a.spouse_of, b.spouse_of = b.key, a.key
        return [a, b]

    def children(self, parents_age: int, count: int) -> list[Person]:
        youngest = max(0, parents_age - 42)
        oldest = max(youngest, min(parents_age - 24, 30))
        return [self.person(youngest, oldest, 2) for _ in range(count)]

    def household(self, kind: str) -> Household:
        rng = self.rng
        members: list[Person]
        if kind == "one_person":
            low, high, _ = rng.choices(ONE_PERSON_AGES, weights=[w for *_, w in ONE_PERSON_AGES])[0]
            members = [self.person(low, high, 1)]
        elif kind == "couple":
            age = rng.choices([rng.randint(25, 39), rng.randint(50, 64), rng.randint(65, 85)], [0.15, 0.4, 0.45])[0]
            members = self.couple(age, age + 3, 1)
        elif kind == "couple_with_children":
            age = rng.randint(30, 60)
            members = self.couple(age, age + 2, 1) + self.children(age, rng.choices([1, 2, 3], [0.45, 0.45, 0.1])[0])
        elif kind == "single_parent":
            age = rng.randint(25, 55)
            members = [self.person(age, age + 2, 1), *self.children(age, rng.choices([1, 2, 3], [0.6, 0.33, 0.07])[0])]
        elif kind == "three_generations":
            age = rng.randint(33, 55)
            grandparents = self.couple(age + 25, age + 30, 0)[: rng.choice([1, 2])]
            grandparents[0].spouse_of = None if len(grandparents) == 1 else grandparents[0].spouse_of
            members = grandparents + self.couple(age, age + 2, 1) + self.children(age, rng.choice([1, 2]))
        elif kind == "grandparents_raising":
            age = rng.randint(58, 78)
            grandparents = self.couple(age, age + 3, 0)[: rng.choice([1, 2])]
            grandparents[0].spouse_of = None if len(grandparents) == 1 else grandparents[0].spouse_of
            members = grandparents + [self.person(0, 17, 2) for _ in range(rng.choice([1, 1, 2]))]
        else:  # a parent with an adult child, or adult siblings
            age = rng.randint(55, 85)
            members = [self.person(age, age, 1), self.person(max(19, age - 35), max(19, age - 25), 2)]
        district = rng.choices(list(self.districts), weights=list(self.districts.values()))[0]
        house = Household(self._key(), kind, district, members)
        self.economics(house)
        return house

    def age(self, person: Person) -> int:
        return (self.as_of - person.birth_date).days // 365

    def economics(self, house: Household) -> None:
        """Income by decile of the median income for its size, split among the earners; assets and tenure by decile;
        disability by age; employment."""
        rng = self.rng
        adults = [p for p in house.members if self.age(p) >= 19]
        head_age = max((self.age(p) for p in adults), default=40)
        weights = SENIOR_DECILE_WEIGHTS if head_age >= 65 and len(adults) <= 2 else [0.1] * 10
        house.decile = rng.choices(range(1, 11), weights=weights)[0]
        low, high = DECILE_BANDS[house.decile - 1]
        median = self.catalogue.medians.amount(self.as_of, len(house.members))
        total = int(median * rng.uniform(low, high))
        for person in house.members:
            age = self.age(person)
            chance = 0.015 if age < 20 else 0.02 if age < 40 else 0.045 if age < 60 else 0.07 if age < 65 else 0.13
            person.disability = rng.random() < chance
            person.income_known = rng.random() < 0.95
            if age < 15:
                continue
            if age >= 65:
                person.employment = "employed" if rng.random() < 0.38 else "not_in_labour_force"
            else:
                draw = rng.random()
                person.employment = (
                    "employed" if draw < 0.69 else "unemployed" if draw < 0.72 else "not_in_labour_force"
                )
            if person.employment == "employed" and rng.random() < 0.23:
                person.employment = "self_employed"
            if age >= 65 and rng.random() < 0.51:
                person.pension = int(rng.gauss(650_000, 250_000)) // 10 * 10
                person.pension = max(person.pension, 200_000)
        earners = [p for p in adults if p.employment in ("employed", "self_employed")]
        pensions = sum(p.pension for p in adults)
        rest = max(0, total - pensions)
        if earners:
            shares = [rng.uniform(0.4, 1.0) for _ in earners]
            for person, share in zip(earners, shares, strict=True):
                amount = int(rest * share / sum(shares)) // 1000 * 1000
                if person.employment == "self_employed":
                    person.business = amount
                else:
                    person.earned = amount
        elif adults and rest and house.decile >= 3:
            adults[0].business = rest // 1000 * 1000  # rent, interest, transfers: counted as other income
        net = int(NET_ASSETS_BY_DECILE[house.decile - 1] * rng.lognormvariate(0, 0.6))
        house.tenure = rng.choices(list(TENURE), weights=list(TENURE.values()))[0]
        financial = int(net * rng.uniform(0.1, 0.35)) // 10_000 * 10_000
        vehicle = rng.choice([0, 0, 0, 8_000_000, 15_000_000, 25_000_000, 45_000_000]) if adults else 0
        debts = int(net * rng.uniform(0, 0.3)) // 10_000 * 10_000 if rng.random() < 0.6 else 0
        residence = 0
        if house.tenure == "owner":
            residence = max(0, net - financial - vehicle + debts) // 10_000 * 10_000
        elif house.tenure in ("jeonse", "monthly_rent"):
            deposit = min(max(net - financial - vehicle, 5_000_000), 600_000_000) // 1_000_000 * 1_000_000
            if house.tenure == "monthly_rent":
                deposit = min(deposit, 50_000_000)
                house.monthly_rent = rng.randint(25, 110) * 10_000
            house.lease_deposit = deposit
            residence = deposit
        other = max(0, net - residence - financial - vehicle + debts) // 10_000 * 10_000
        house.assets = {
            "residence_value": residence,
            "other_property_value": other,
            "financial_assets": financial,
            "vehicle_value": vehicle,
            "debts": debts,
        }


def _members_of(house: Household, person: Person) -> list[dict[str, Any]]:
    out = []
    for member in house.members:
        if member is person:
            continue
        income = member.earned + member.business + member.pension
        out.append(
            {
                "relation": relation(member, person, house.kind),
                "birth_date": member.birth_date,
                "monthly_income": income if member.income_known else None,
                "disability": member.disability,
            }
        )
    return out


MEMBER = pl.Struct({"relation": pl.String, "birth_date": pl.Date, "monthly_income": pl.Int64, "disability": pl.Boolean})
SCHEMA: dict[str, Any] = {
    "resident_id": pl.String,
    "household_id": pl.Int64,
    "household_type": pl.String,
    "income_decile": pl.Int8,
    "birth_date": pl.Date,
    "sex": pl.String,
    "district_code": pl.String,
    "household": pl.List(MEMBER),
    "vulnerability": pl.List(pl.String),
    "preferred_language": pl.String,
    "proactive_screening": pl.Boolean,
    "consents": pl.List(pl.String),
    # Department facts (null: the department holds nothing): reported by the department named in DEPARTMENT_FACTS.
    "korean_national": pl.Boolean,
    "earned_income": pl.Int64,
    "business_income": pl.Int64,
    "public_pension_income": pl.Int64,
    "residence_value": pl.Int64,
    "other_property_value": pl.Int64,
    "financial_assets": pl.Int64,
    "vehicle_value": pl.Int64,
    "debts": pl.Int64,
    "annual_household_income": pl.Int64,
    "household_assets": pl.Int64,
    "employment_status": pl.String,
    "tenure": pl.String,
    "lease_deposit": pl.Int64,
    "monthly_rent": pl.Int64,
    "homeless_household": pl.Boolean,
    "occupational_pension_recipient": pl.Boolean,
}
# Which department reports each department fact (one each: an authority for it in catalogue/facts.yaml).
DEPARTMENT_FACTS = {
    "korean_national": "civil_registry",
    "earned_income": "tax",
    "business_income": "tax",
    "public_pension_income": "welfare",
    "residence_value": "tax",
    "other_property_value": "tax",
    "financial_assets": "welfare",
    "vehicle_value": "tax",
    "debts": "welfare",
    "annual_household_income": "tax",
    "household_assets": "welfare",
    "employment_status": "labour",
    "tenure": "housing",
    "lease_deposit": "housing",
    "monthly_rent": "housing",
    "homeless_household": "housing",
    "occupational_pension_recipient": "welfare",
}


def _rows(gen: Generator, house: Household) -> list[dict[str, Any]]:
    rng = gen.rng
    total = sum(p.earned + p.business + p.pension for p in house.members)
    net = sum(v for k, v in house.assets.items() if k != "debts") - house.assets["debts"]
    out = []
    for person in house.members:
        age = gen.age(person)
        vulnerability = []
        if person.disability:
            vulnerability.append("disability")
        if house.kind == "single_parent" and person.generation == 1:
            vulnerability.append("single_parent")
        if house.kind == "one_person" and age >= 65:
            vulnerability.append("elderly_alone")
        if house.decile == 1:
            vulnerability.append("low_income")
        screening = rng.random() < 0.70
        consents = ["proactive_screening"] if screening else []
        if screening and rng.random() < 0.90:
            consents += [f"department_data:{d}" for d in sorted(set(DEPARTMENT_FACTS.values()))]
        row: dict[str, Any] = {
            "resident_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "household_id": house.key,
            "household_type": house.kind,
            "income_decile": house.decile,
            "birth_date": person.birth_date,
            "sex": person.sex,
            "district_code": house.district,
            "household": _members_of(house, person),
            "vulnerability": vulnerability,
            "preferred_language": "ko",
            "proactive_screening": screening,
            "consents": consents,
            "korean_national": rng.random() < 0.98,
        }
        if age >= 19:
            row.update(
                earned_income=person.earned,
                business_income=person.business,
                public_pension_income=person.pension,
                annual_household_income=total * 12,
                household_assets=max(0, net),
                employment_status=person.employment,
                tenure=house.tenure,
                lease_deposit=house.lease_deposit,
                monthly_rent=house.monthly_rent,
                homeless_household=house.tenure != "owner",
                occupational_pension_recipient=rng.random() < 0.06 if age >= 60 and not person.pension else False,
                **house.assets,
            )
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------- planted residents

# Templates of eligible non-applicants: each builds a household meant to make its first member eligible for the
# program named (checked against the per-record engine when planted).
PLANTS = ("basic_pension", "livelihood_benefit", "child_allowance", "senior_transport_card", "housing_benefit",
          "single_parent_child_support", "earned_income_tax_credit")  # fmt: skip


def _plant(gen: Generator, program: str) -> Household:
    rng = gen.rng
    district = "11440"
    if program in ("basic_pension", "senior_transport_card"):
        person = gen.person(70, 80, 1)
        person.pension = 300_000
        house = Household(gen._key(), "one_person", district, [person], decile=1, tenure="monthly_rent")
        house.assets = {"residence_value": 20_000_000, "other_property_value": 0, "financial_assets": 3_000_000,
                        "vehicle_value": 0, "debts": 0}  # fmt: skip
        house.lease_deposit, house.monthly_rent = 20_000_000, 300_000
    elif program in ("livelihood_benefit", "housing_benefit"):
        person = gen.person(40, 55, 1)
        person.employment = "unemployed"
        house = Household(gen._key(), "one_person", district, [person], decile=1, tenure="monthly_rent")
        house.assets = {"residence_value": 5_000_000, "other_property_value": 0, "financial_assets": 1_000_000,
                        "vehicle_value": 0, "debts": 0}  # fmt: skip
        house.lease_deposit, house.monthly_rent = 5_000_000, 350_000
    elif program in ("child_allowance", "single_parent_child_support"):
        parent = gen.person(30, 40, 1)
        parent.employment, parent.earned = "employed", 1_500_000
        child = gen.person(2, 5, 2)
        house = Household(gen._key(), "single_parent", district, [parent, child], decile=2, tenure="monthly_rent")
        house.assets = {"residence_value": 10_000_000, "other_property_value": 0, "financial_assets": 2_000_000,
                        "vehicle_value": 0, "debts": 0}  # fmt: skip
        house.lease_deposit, house.monthly_rent = 10_000_000, 400_000
    else:  # earned_income_tax_credit: a low-paid worker living alone
        person = gen.person(35, 55, 1)
        person.employment, person.earned = "employed", 1_200_000
        house = Household(gen._key(), "one_person", district, [person], decile=2, tenure="monthly_rent")
        house.assets = {"residence_value": 30_000_000, "other_property_value": 0, "financial_assets": 5_000_000,
                        "vehicle_value": 0, "debts": 0}  # fmt: skip
        house.lease_deposit, house.monthly_rent = 30_000_000, 350_000
    for p in house.members:
        p.income_known, p.disability = True, False
    del rng
    return house


def layers_of_row(row: dict[str, Any]) -> FactLayers:
    """What the per-record engine knows of a generated resident: the registry facts and the department facts."""
    registry = registry_facts(
        birth_date=row["birth_date"],
        district_code=row["district_code"],
        household=[{**m, "birth_date": m["birth_date"].isoformat()} for m in row["household"]],
        vulnerability=row["vulnerability"],
    )
    declared = {k: row[k] for k in DEPARTMENT_FACTS if row.get(k) is not None}
    return FactLayers(declared=declared, registry=registry)


@dataclass
class Generated:
    frame: pl.DataFrame
    manifest: dict[str, Any]


def generate(catalogue: Catalogue, residents: int, seed: int, as_of: dt.date,
             districts: dict[str, float] | None = None) -> Generated:  # fmt: skip
    """About ``residents`` residents (whole households: a few more at most), with the planted set."""
    gen = Generator(seed, as_of, catalogue, districts or DEFAULT_DISTRICTS)
    now = dt.datetime.combine(as_of, dt.time(9), tzinfo=dt.UTC)
    rows: list[dict[str, Any]] = []
    planted: list[dict[str, Any]] = []
    per_program = max(1, residents // 2000)
    proactive = [c for c, p in catalogue.programs.items() if p.attributes.proactive and p.version_on(as_of)]
    for program in PLANTS:
        if program not in proactive:
            continue
        for _ in range(per_program):
            house = _plant(gen, program)
            house_rows = _rows(gen, house)
            first = house_rows[0]
            first["proactive_screening"] = True
            first["consents"] = ["proactive_screening"] + [
                f"department_data:{d}" for d in sorted(set(DEPARTMENT_FACTS.values()))
            ]
            first["korean_national"] = True
            env = catalogue.environment(as_of, layers_of_row(first), now)
            eligible = sorted(
                r.program.code for r in catalogue.evaluate(env, proactive) if r.outcome.outcome == Outcome.ELIGIBLE
            )
            if program not in eligible:
                raise RuntimeError(f"the planted resident for {program} is not eligible for it: the template is wrong")
            planted.append({"resident_id": first["resident_id"], "planted_for": program, "eligible": eligible})
            rows.extend(house_rows)
    kinds, weights = list(HOUSEHOLD_TYPES), list(HOUSEHOLD_TYPES.values())
    while len(rows) < residents:
        rows.extend(_rows(gen, gen.household(gen.rng.choices(kinds, weights)[0])))
    frame = pl.DataFrame(rows, schema=SCHEMA, orient="row")
    ages = frame.select(((pl.lit(as_of) - pl.col("birth_date")).dt.total_days() // 365).alias("age"))
    bins = {"0-9": (0, 9), "10-19": (10, 19), "20-29": (20, 29), "30-39": (30, 39), "40-49": (40, 49),
            "50-59": (50, 59), "60-69": (60, 69), "70-79": (70, 79), "80+": (80, 200)}  # fmt: skip
    pyramid = {
        k: round(ages.filter(pl.col("age").is_between(lo, hi)).height / frame.height, 4) for k, (lo, hi) in bins.items()
    }
    manifest = {
        "generator": SOURCE,
        "seed": seed,
        "residents": frame.height,
        "households": frame.get_column("household_id").n_unique(),
        "as_of": as_of.isoformat(),
        "districts": gen.districts,
        "department_facts": DEPARTMENT_FACTS,
        "age_pyramid": {"generated": pyramid, "reference (주민등록 인구통계 2024, approximate)": REFERENCE_PYRAMID},
        "shares": {
            "proactive_screening": round(float(frame.select(pl.col("proactive_screening").mean()).item()), 4),
            "disability": round(frame.select(pl.col("vulnerability").list.contains("disability").mean()).item(), 4),
            "single_parent": round(
                frame.select(pl.col("vulnerability").list.contains("single_parent").mean()).item(), 4
            ),
        },
        "household_types": dict(
            frame.unique("household_id").get_column("household_type").value_counts().sort("household_type").iter_rows()
        ),
        "planted": planted,
        "sources": "services/eligibility/synthetic.py (module docstring)",
    }
    return Generated(frame, manifest)


def write(generated: Generated, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data, manifest = directory / "residents.parquet", directory / "manifest.json"
    generated.frame.write_parquet(data, compression="zstd")
    manifest.write_text(json.dumps(generated.manifest, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    return data, manifest


def planted_pairs(manifest: dict[str, Any]) -> Sequence[tuple[str, str]]:
    return [(p["resident_id"], p["planted_for"]) for p in manifest["planted"]]
