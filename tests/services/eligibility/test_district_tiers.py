"""The district tiers (지방우대 지역 구분): versioned reference data by district code, checked when loaded, read by the
derived fact ``district_support_tier`` (the child allowance's regional supplement from 2026)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.eligibility.catalogue import Catalogue, CatalogueFiles, load_files
from services.eligibility.facts import (
    CATALOGUE_DIR,
    DistrictTiers,
    FactLayers,
    district_tier_tables,
)
from services.eligibility.income import ReferenceDataMissing

NOW = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
DAY = dt.date(2026, 3, 1)
OFFICES = Path(__file__).parents[3] / "services" / "routing" / "offices.yaml"


@pytest.fixture(scope="module")
def files() -> CatalogueFiles:
    return load_files()


@pytest.fixture(scope="module")
def catalogue(files: CatalogueFiles) -> Catalogue:
    return files.catalogue()


def raw_table() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((CATALOGUE_DIR / "district_tiers.yaml").read_text(encoding="utf-8"))
    return raw


def test_the_citys_districts_are_in_the_capital_region(files: CatalogueFiles) -> None:
    offices = yaml.safe_load(OFFICES.read_text(encoding="utf-8"))["offices"]
    districts = {d for office in offices for d in office.get("districts", ())}
    assert districts == {"11110", "11140", "11170", "11440"}
    assert {d: files.districts.tier(DAY, d) for d in districts} == dict.fromkeys(districts, "capital_region")


def test_the_2026_table_lists_every_rural_depopulation_area_once() -> None:
    """행정안전부고시 제2021-66호: 89 depopulation areas, of which 84 are counties and cities (시·군) and 5 are urban
    districts (자치구); the 2026 tiers split the 84 into 40 of special and 44 of preferential support. The table names
    those it can source and leaves the rest to a person: together exactly the 84, none twice."""
    (table,) = raw_table()["tables"]
    listed = [str(c) for key in ("special", "preferential", "unconfirmed") for c in table[key]]
    assert len(listed) == len(set(listed)) == 84
    assert len(table["special"]) <= 40
    assert len(table["preferential"]) <= 44
    urban = {"26170", "26140", "26200", "27200", "27170"}  # 부산 동구·서구·영도구, 대구 남구·서구
    assert not urban & set(listed)


@pytest.mark.parametrize(
    ("district", "tier"),
    [
        ("11440", "capital_region"),  # 서울 마포구
        ("41110", "capital_region"),  # 경기 수원시
        ("26350", "non_capital"),  # 부산 해운대구
        ("26170", "non_capital"),  # 부산 동구: an urban depopulation district, a general one
        ("36110", "non_capital"),  # 세종
        ("50110", "non_capital"),  # 제주시
        ("47170", "depopulation_preferential"),  # 경북 안동시
        ("46890", "depopulation_special"),  # 전남 완도군
    ],
)
def test_each_district_has_its_tier(files: CatalogueFiles, district: str, tier: str) -> None:
    assert files.districts.tier(DAY, district) == tier


def test_a_tier_not_established_or_a_date_before_any_table_is_an_error_never_a_guess(files: CatalogueFiles) -> None:
    with pytest.raises(ValueError, match=r"47730 \(경북 의성군\).*확인 필요"):
        files.districts.tier(DAY, "47730")
    with pytest.raises(ValueError, match="in no province"):
        files.districts.tier(DAY, "99999")
    with pytest.raises(ReferenceDataMissing, match="no district tier table is in force on 2025-12-31"):
        files.districts.tier(dt.date(2025, 12, 31), "11440")


def test_a_later_table_takes_over_from_its_date() -> None:
    raw = raw_table()
    (first,) = raw["tables"]
    later = {**first, "effective_from": dt.date(2027, 1, 1), "source": "a later table"}
    later["special"] = {**first["special"], "47730": "경북 의성군"}
    later["unconfirmed"] = {k: v for k, v in first["unconfirmed"].items() if str(k) != "47730"}
    tiers = DistrictTiers(district_tier_tables({"tables": [later, first]}))
    with pytest.raises(ValueError, match="확인 필요"):
        tiers.tier(dt.date(2026, 12, 31), "47730")
    assert tiers.tier(dt.date(2027, 1, 1), "47730") == "depopulation_special"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t["special"].update({"47170": "안동"}), "47170 is listed as special and as preferential"),
        (lambda t: t["special"].update({"4717": "short"}), "malformed codes"),
        (lambda t: t["special"].update({"99110": "nowhere"}), "99110 .* is in no province"),
        (lambda t: t["non_capital"].update({"11": "서울"}), "both in and outside the capital region"),
    ],
)
def test_a_malformed_table_is_refused(change: Any, message: str) -> None:
    raw = raw_table()
    (table,) = raw["tables"]
    change(table)
    with pytest.raises(ValueError, match=message):
        district_tier_tables(raw)


def test_the_tier_is_a_derived_fact_with_its_source(catalogue: Catalogue) -> None:
    env = catalogue.environment(DAY, FactLayers(registry={"district_code": "46890"}), NOW)
    assert env.values["district_support_tier"] == "depopulation_special"
    assert env.sources["district_support_tier"] == "derived:registry"
    env = catalogue.environment(DAY, FactLayers(), NOW)
    assert env.asks["district_support_tier"] == ("district_code",)
    declared = {"korean_national": True, "children_birth_dates": ["2020-01-01"], "district_code": "46890"}
    (result,) = catalogue.evaluate(catalogue.environment(DAY, FactLayers(declared=declared), NOW), ["child_allowance"])
    shown = next(c for c in result.outcome.criteria if c["id"] == "regional_supplement_known")
    assert shown["values"] == {"district_support_tier": "depopulation_special", "regional_supplement": 20000}
    assert shown["sources"] == {"district_support_tier": "derived:declared", "regional_supplement": "rule"}
    assert result.outcome.amount == 120_000
