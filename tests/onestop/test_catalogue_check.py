"""``onestop catalogue check``: the rule versions proactive screening cannot judge in columns (they are judged per
record) — none in the real catalogue; a version using a construct the compiler does not know is named with why."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from onestop.cli import main
from services.eligibility.facts import CATALOGUE_DIR


def leaf(id_: str, expr: str) -> dict[str, Any]:
    return {"id": id_, "label": {"ko": id_, "en": id_}, "legal_reference": "법 제1조", "expr": expr}


def program(code: str, *versions: dict[str, Any]) -> dict[str, Any]:
    return {"code": code, "name": {"ko": code, "en": code}, "department": "welfare", "automatic": False,
            "sla_days": 10, "versions": list(versions)}  # fmt: skip


def version(day: dt.date, *criteria: dict[str, Any]) -> dict[str, Any]:
    return {"effective_from": day, "source": "법 제1조", "rule": {"all": list(criteria)}}


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["catalogue", "check", *args])
    return code, capsys.readouterr().out.splitlines()


def test_every_version_of_the_real_catalogue_is_judged_in_columns(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = check(capsys)
    assert code == 0
    assert lines[0].startswith("every one of the ")
    assert "rule versions" in lines[0]


def test_versions_the_compiler_cannot_translate_are_listed_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "catalogue"
    shutil.copytree(CATALOGUE_DIR, directory)
    for path in (directory / "programs").glob("*.yaml"):
        path.unlink()
    older_parent = "parent_birth_dates.exists(d, d < timestamp('1950-01-01T00:00:00Z'))"
    requires = {"id": "m", "label": {"ko": "m", "en": "m"}, "program": "macro"}
    programs = [
        program("plain", version(dt.date(2025, 1, 1), leaf("old", "age_years >= 65"))),
        program(
            "macro",
            version(dt.date(2025, 1, 1), leaf("old", "age_years >= 65")),
            version(dt.date(2026, 1, 1), leaf("parent", older_parent)),
        ),
        program("requires_macro", version(dt.date(2026, 1, 1), requires)),
        program("fractions", version(dt.date(2025, 1, 1), leaf("half", "double(age_years) / 2.0 >= 32.5"))),
    ]  # fmt: skip
    (directory / "programs" / "welfare.yaml").write_text(
        yaml.safe_dump({"programs": programs}, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    code, lines = check(capsys, "--catalogue-dir", str(directory))
    assert code == 0
    assert lines[0].startswith("3 of 5 rule versions are judged per record")
    listed = {line.split(":")[0].strip(): line for line in lines[2:]}
    assert set(listed) == {
        "fractions v1 (from 2025-01-01)",
        "macro v2 (from 2026-01-01)",
        "requires_macro v1 (from 2026-01-01)",
    }
    assert "exists" in listed["macro v2 (from 2026-01-01)"]
    assert "requires macro" in listed["requires_macro v1 (from 2026-01-01)"]
