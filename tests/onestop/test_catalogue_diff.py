"""``onestop catalogue diff FIRST SECOND``: what changed between the rule versions in force on two dates, from the YAML
catalogue or from the eligibility service's database (with the versions added there since seeding)."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from onestop.cli import main
from onestop.registry import BY_NAME
from services.eligibility.catalogue import content_hash, load_files
from services.eligibility.catalogue_admin import seed_catalogue
from services.eligibility.catalogue_diff import changed_figures, diff_catalogue, diff_versions
from services.eligibility.facts import CATALOGUE_DIR, MedianIncomeTable
from services.eligibility.models import RuleVersionRow
from services.eligibility.repository import Repository
from services.eligibility.specs import VersionSpec, version_document
from shared.db import Database
from shared.migrations import upgrade


def leaf(id_: str, expr: str, reference: str = "법 제1조") -> dict[str, Any]:
    return {"id": id_, "label": {"ko": id_, "en": id_}, "legal_reference": reference, "expr": expr}


def program(code: str, *versions: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    return {
        "code": code, "name": {"ko": name or code, "en": code}, "department": "welfare", "automatic": False,
        "sla_days": 10, "versions": list(versions),
    }  # fmt: skip


ALPHA_2025 = {
    "effective_from": dt.date(2025, 1, 1),
    "effective_to": dt.date(2025, 12, 31),
    "source": "법 제1조 (2025 고시)",
    "definitions": {"threshold": "(median_income * 32 + 50) / 100", "cap": "household_size == 1 ? 100000 : 200000"},
    "rule": {"all": [leaf("income", "recognised_income <= threshold"), leaf("national", "korean_national")]},
    "amount": {"expr": "threshold - recognised_income", "period": "monthly", "legal_reference": "법 제2조"},
}
ALPHA_2026 = {
    "effective_from": dt.date(2026, 1, 1),
    "source": "법 제1조 (2026 고시)",
    "relevant_when": "age_years >= 65",
    "definitions": {"threshold": "(median_income * 35 + 50) / 100", "cap": "household_size == 1 ? 110000 : 220000"},
    "rule": {"all": [
        leaf("income", "recognised_income <= threshold", "법 제1조 (2026)"),
        {"id": "older", "label": {"ko": "older", "en": "older"}, "legal_reference": "법 제3조",
         "any": [leaf("age_65", "age_years >= 65")]},
    ]},
    "amount": {"expr": "threshold - recognised_income", "period": "yearly", "legal_reference": "법 제2조"},
}  # fmt: skip


def simple(start: dt.date, end: dt.date | None = None) -> dict[str, Any]:
    return {"effective_from": start, "effective_to": end, "source": "법", "rule": leaf("national", "korean_national")}


SMALL = [
    program("alpha", ALPHA_2025, ALPHA_2026, name="알파"),
    program("beta", simple(dt.date(2026, 1, 1))),
    program("gamma", simple(dt.date(2020, 1, 1), dt.date(2025, 12, 31))),
    program("delta", simple(dt.date(2020, 1, 1))),
    program("later", simple(dt.date(2027, 1, 1))),
]


@pytest.fixture
def catalogue_dir(tmp_path: Path) -> Path:
    """The real facts and median income tables, with a small set of programs of our own."""
    directory = tmp_path / "catalogue"
    shutil.copytree(CATALOGUE_DIR, directory)
    for path in (directory / "programs").glob("*.yaml"):
        path.unlink()
    (directory / "programs" / "welfare.yaml").write_text(
        yaml.safe_dump({"programs": SMALL}, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    return directory


def diff(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["catalogue", "diff", *args])
    return code, capsys.readouterr().out


def test_what_changed_between_two_days_of_the_yaml_catalogue(
    catalogue_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = diff(capsys, "2025-06-01", "2026-06-01", "--catalogue-dir", str(catalogue_dir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"Catalogue changes from 2025-06-01 to 2026-06-01 (YAML catalogue in {catalogue_dir})"
    block = lines[lines.index("alpha (알파, welfare): v1 (from 2025-01-01 to 2025-12-31) -> v2 (from 2026-01-01)") :]
    block = block[: block.index("")]
    assert block[1:] == [
        "  source: 법 제1조 (2025 고시)",
        "       -> 법 제1조 (2026 고시)",
        "  definition threshold: `(median_income * 32 + 50) / 100` -> `(median_income * 35 + 50) / 100` "
        "(figures: 32 -> 35)",
        "  definition cap: `household_size == 1 ? 100000 : 200000` -> `household_size == 1 ? 110000 : 220000` "
        "(figures: 100,000 -> 110,000, 200,000 -> 220,000)",
        "  criterion rule (all): members income, national -> income, older",
        "  criterion income legal reference: 법 제1조 -> 법 제1조 (2026)",
        "  criterion national removed (was `korean_national` [rule/national])",
        "  criterion older added: any of age_65 [rule/older]",
        "  criterion age_65 added: `age_years >= 65` [rule/older/age_65]",
        "  amount: `threshold - recognised_income` -> `threshold - recognised_income` (monthly -> yearly)",
        "  relevant when: `(never)` -> `age_years >= 65`",
    ]
    assert "new: beta (beta, welfare) v1 (from 2026-01-01)" in lines
    assert "ended: gamma (gamma, welfare) v1 (from 2020-01-01 to 2025-12-31)" in lines
    assert not any("delta" in line or "later" in line for line in lines)  # the same version; not yet in force
    # The median income table changed too, and with it the thresholds that are a share of it.
    assert "기준 중위소득 (median income): the 2025 table -> the 2026 table" in lines
    assert "  1 person: 2,392,013 -> 2,564,238" in lines
    assert "  thresholds that are a share of it move with it in: alpha" in lines
    assert lines[-1] == "1 changed, 1 new, 1 ended, 1 unchanged"


def test_the_same_day_twice_changes_nothing(catalogue_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = diff(capsys, "2026-06-01", "2026-06-01", "--catalogue-dir", str(catalogue_dir))
    assert code == 0
    assert out.splitlines()[-1] == "0 changed, 0 new, 0 ended, 3 unchanged"
    assert "중위소득" not in out


def test_every_program_whose_version_differs_is_listed_for_the_real_catalogue(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever the catalogue holds: the programs with another version in force on the second day are those listed,
    each with the two version numbers."""
    first, second = dt.date(2025, 6, 1), dt.date(2026, 6, 1)
    catalogue = load_files().catalogue()
    expected: dict[str, tuple[int, int]] = {}
    for program_code, item in catalogue.programs.items():
        before, after = item.version_on(first), item.version_on(second)
        if before is not None and after is not None and before is not after:
            expected[program_code] = (before.version, after.version)
    assert expected, "the catalogue has versions that change between these dates"
    exit_code, out = diff(capsys, first.isoformat(), second.isoformat())
    assert exit_code == 0
    listed = {line.split(" ", 1)[0] for line in out.splitlines() if line and line[0].islower() and " -> v" in line}
    assert listed == set(expected)
    for program_code, (old, new) in expected.items():
        assert any(line.startswith(f"{program_code} (") and f"v{old} " in line and f"-> v{new} " in line
                   for line in out.splitlines())  # fmt: skip


def test_a_date_that_is_not_a_date_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["catalogue", "diff", "2025-13-01", "2026-01-01"])
    assert "invalid fromisoformat value" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the pieces


def spec(**fields: Any) -> VersionSpec:
    return VersionSpec.model_validate({"effective_from": "2025-01-01", "source": "s", **fields})


def test_the_pieces_of_a_version_that_changed() -> None:
    rule = leaf("a", "x_fact > 1")
    assert list(diff_versions(spec(rule=rule), spec(rule=rule))) == []
    moved = {"all": [{"id": "g", "label": {"ko": "g", "en": "g"}, "any": [leaf("a", "x_fact > 1")]}]}
    assert "criterion a: moved from rule/a to rule/g/a" in list(diff_versions(spec(rule={"all": [rule]}),
                                                                           spec(rule=moved)))  # fmt: skip
    relabelled = {**rule, "label": {"ko": "새", "en": "new"}}
    assert list(diff_versions(spec(rule=rule), spec(rule=relabelled))) == ["criterion a label: 새 / new"]
    required = {"id": "a", "label": {"ko": "a", "en": "a"}, "legal_reference": "법 제1조", "program": "other"}
    assert list(diff_versions(spec(rule=rule), spec(rule=required))) == [
        "criterion a: `x_fact > 1` [a] -> eligible for other [a]"
    ]
    amount = {"expr": "1000", "period": "once", "legal_reference": "법"}
    assert list(diff_versions(spec(rule=rule), spec(rule=rule, amount=amount))) == ["amount added: `1000` (once)"]
    assert list(diff_versions(spec(rule=rule, amount=amount), spec(rule=rule))) == ["amount removed (was `1000`, once)"]
    assert list(diff_versions(spec(rule=rule, definitions={"t": "1"}), spec(rule=rule))) == [
        "definition t removed (was `1`)"
    ]
    assert list(diff_versions(spec(rule=rule), spec(rule=rule, effective_to="2025-12-31"))) == ["ends on 2025-12-31"]


def test_figures_are_named_only_when_nothing_but_figures_changed() -> None:
    assert changed_figures("a <= 100 && b < 7", "a <= 120 && b < 7") == [(100, 120)]
    assert changed_figures("a <= 100", "a < 120") == []  # the operator changed: read the expressions
    assert changed_figures("a <= 100", "a <= 100 + b") == []
    assert changed_figures("a ? 1 : 1", "a ? 2 : 2") == [(1, 2)]


def test_superseded_versions_and_programs_in_force_on_neither_day_are_left_out() -> None:
    files = load_files()
    (data,) = [p for p in files.program_data() if p.code == "basic_pension"]
    superseded = type(data)(data.code, data.attributes, [(1, data.versions[0][1], False),
                                                         (2, data.versions[1][1], True)])  # fmt: skip
    medians = MedianIncomeTable(files.median_years)
    result = diff_catalogue([superseded], medians, dt.date(2025, 6, 1), dt.date(2026, 6, 1))
    assert [(c.code, c.kind) for c in result.programs] == [("basic_pension", "ended")]
    assert diff_catalogue([data], medians, dt.date(2020, 1, 1), dt.date(2021, 1, 1)).programs == []


# ---------------------------------------------------------------------------------------------- from the database


async def _seed_with_a_new_version(url: str) -> None:
    """The YAML seeded, then a version added as ``PUT /v1/programs/{code}`` does: medical aid at 42 % from 2027."""
    await upgrade(url, BY_NAME["eligibility"].migrations)
    files = load_files()
    db = Database(url)
    now = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)
    try:
        async with db.session() as session:
            repo = Repository(session)
            await seed_catalogue(repo, files, today=now.date(), now=now)
            (medical,) = [p for p in files.programs if p.code == "medical_aid"]
            document = version_document(medical.versions[-1])
            document.update(
                effective_from="2027-01-01",
                source="의료급여법 제3조; 보건복지부 고시 2027 (test)",
                definitions={"threshold": "(median_income * 42 + 50) / 100"},
            )
            session.add(
                RuleVersionRow(
                    program_code="medical_aid", version=len(medical.versions) + 1,
                    effective_from=dt.date(2027, 1, 1), effective_to=None, document=document,
                    content_hash=content_hash(document), seed_hash=None, origin="api", created_by="test",
                    created_at=now,
                )
            )  # fmt: skip
    finally:
        await db.dispose()


def test_the_database_holds_the_versions_added_since_seeding(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_seed_with_a_new_version(database_url))
    code, out = diff(capsys, "2026-06-01", "2027-06-01", "--database-url", database_url)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "Catalogue changes from 2026-06-01 to 2027-06-01 (database)"
    (head,) = [line for line in lines if line.startswith("medical_aid (")]
    assert head.endswith("-> v2 (from 2027-01-01)")
    assert "  definition threshold: `(median_income * 40 + 50) / 100` -> `(median_income * 42 + 50) / 100` " \
        "(figures: 40 -> 42)" in lines  # fmt: skip
    code, out = diff(capsys, "2026-06-01", "2027-06-01")  # the YAML does not have it
    assert not any(line.startswith("medical_aid (") for line in out.splitlines())


def test_a_database_without_the_catalogue_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    assert main(["catalogue", "diff", "2026-06-01", "2027-06-01", "--database-url", url]) == 1
    assert capsys.readouterr().err.startswith("onestop catalogue diff: cannot read the catalogue from the database:")
