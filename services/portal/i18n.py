"""Korean by default, English on a switch: every string a page shows is a message with both (``messages.yaml``), and
a test proves no template or message is left with one language only."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

from shared.yamlfile import load_yaml

LANGUAGES = ("ko", "en")
DEFAULT_LANGUAGE = "ko"
LANGUAGE_COOKIE = "onestop_lang"
MESSAGES_FILE = Path(__file__).resolve().parent / "messages.yaml"

log = logging.getLogger(__name__)


class Messages:
    def __init__(self, entries: dict[str, dict[str, str]]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, path: Path = MESSAGES_FILE) -> Messages:
        raw = load_yaml(path) or {}
        entries: dict[str, dict[str, str]] = {}
        for key, value in raw.items():
            if not isinstance(value, dict):
                raise ValueError(f"{path}: message {key!r} must map each language to its text")
            entries[str(key)] = {str(k): str(v) for k, v in value.items()}
        return cls(entries)

    def text(self, key: str, language: str, /, **values: Any) -> str:
        entry = self.entries.get(key)
        if entry is None:
            log.error("no message %s", key)
            return key
        text = entry.get(language) or entry[DEFAULT_LANGUAGE]
        return text.format(**values) if values else text

    def has(self, key: str) -> bool:
        return key in self.entries


@cache
def messages() -> Messages:
    return Messages.load()


def language_of(value: str | None) -> str:
    return value if value in LANGUAGES else DEFAULT_LANGUAGE
