"""YAML files the platform ships and reads (catalogue, seeds, retention, messages): parsed by libyaml's C loader
where PyYAML was built with it, six to seven times faster than the pure-Python one (the catalogue's files took 0.3 s
of every eligibility start), and to the same values; the pure-Python loader where it was not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_SafeLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path) -> Any:
    """The file's one document, read as UTF-8, with the safe loader's types only (no Python objects)."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_SafeLoader)  # noqa: S506 - a safe loader
