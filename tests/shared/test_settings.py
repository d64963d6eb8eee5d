"""Settings come from ONESTOP_<SERVICE>_ variables and .env files, per service."""

from __future__ import annotations

from pathlib import Path

import pytest

from onestop.registry import SERVICES


def test_each_service_reads_its_own_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONESTOP_ROUTING_NATS_URL", "nats://routing-only:4222")
    monkeypatch.setenv("ONESTOP_INTAKE_STREAM_REPLICAS", "3")
    routing = next(s for s in SERVICES if s.name == "routing").settings()
    intake = next(s for s in SERVICES if s.name == "intake").settings()
    assert routing.nats_url == "nats://routing-only:4222"
    assert intake.nats_url == "nats://127.0.0.1:4222"
    assert intake.stream_replicas == 3
    assert routing.stream_replicas == 1


def test_settings_are_read_from_a_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("ONESTOP_NOTIFY_DATABASE_URL=sqlite+aiosqlite:///elsewhere.db\n")
    monkeypatch.chdir(tmp_path)
    notify = next(s for s in SERVICES if s.name == "notify").settings()
    assert notify.database_url == "sqlite+aiosqlite:///elsewhere.db"


def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONESTOP_INTAKE_STREAM_REPLICAS", "0")
    with pytest.raises(ValueError, match="stream_replicas"):
        next(s for s in SERVICES if s.name == "intake").settings()
