"""The platform's YAML files read by libyaml's loader give the values PyYAML's own safe loader gives, and no more
than a safe loader allows."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.yamlfile import load_yaml

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(
    p for top in ("services", "shared", "onestop") for p in (ROOT / top).rglob("*.yaml") if "migrations" not in p.parts
)


def test_the_c_loader_is_used_where_pyyaml_has_it() -> None:
    from shared import yamlfile

    assert yaml.__with_libyaml__, "PyYAML's wheel here is built with libyaml"
    assert yamlfile._SafeLoader is yaml.CSafeLoader


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_file_reads_as_the_pure_python_safe_loader_reads_it(path: Path) -> None:
    assert load_yaml(path) == yaml.safe_load(path.read_text(encoding="utf-8"))


def test_a_python_object_tag_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['true']\n", encoding="utf-8")
    with pytest.raises(yaml.constructor.ConstructorError):
        load_yaml(path)
