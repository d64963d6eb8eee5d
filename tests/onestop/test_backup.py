"""`onestop backup` and `onestop restore` on the SQLite default: a backup taken while events are still on their way,
work done after it, the databases lost, the backup restored — and the platform continues from the backup with
every application's effects exactly once (counted by tests/support/checker.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from onestop.cli import main
from onestop.registry import SERVICES
from onestop.runner import Platform, PlatformConfig
from tests.e2e.support import Api, eventually
from tests.e2e.test_journeys import JOB_LOSS, JOB_LOSS_DETAILS
from tests.support.checker import Checker, MailDir, Observation, Report

pytestmark = pytest.mark.e2e

ANSWERS = {**JOB_LOSS, **JOB_LOSS_DETAILS}
APPLICATIONS = 8
IGNORE = ("webhooks queued", "webhooks received")


@pytest.fixture
def config(tmp_path: Path) -> PlatformConfig:
    return PlatformConfig.on_free_ports(
        tmp_path / "var", env_file=None, ready_timeout=120,
        overrides={"notify": {"worker_interval_seconds": 0.2, "bundle_window_seconds": 0.0}},
    )  # fmt: skip


@pytest.fixture
def platform(config: PlatformConfig) -> Iterator[Platform]:
    platform = Platform(config)
    platform.start()
    yield platform
    platform.stop()


def _quiet(observation: Observation) -> bool:
    return (
        not any(observation.outbox_backlog.values())
        and not any(observation.consumer_lag.values())
        and not any(observation.pending.values())
    )


def test_a_restored_backup_continues_without_loss_or_duplicates(
    platform: Platform, config: PlatformConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = Api(platform)
    checker = Checker(platform, mail=MailDir(platform.var / "notify" / "mail" / "new"))
    reference = api.register(district="11440", birth_date="1984-02-02")
    reference_app = api.apply(reference, "job_loss", ANSWERS)
    eventually(lambda: (o := checker.observe([reference.id])).effects["cases"][reference_app] and _quiet(o),
               timeout=90, what="the reference settled")  # fmt: skip
    expected, final_state = checker.reference(checker.observe([reference.id]), [reference_app])

    # Routing is down: the determinations wait for it in the stream when the backup is taken.
    platform.stop_service("routing")
    residents = [api.register(district="11440", birth_date="1984-02-02") for _ in range(APPLICATIONS // 2)]
    filed = [api.apply(residents[n % len(residents)], "job_loss", ANSWERS) for n in range(APPLICATIONS)]
    everyone = [reference.id, *(r.id for r in residents)]
    eventually(lambda: all(checker.observe(everyone).effects["evaluation rounds"][a] for a in filed), timeout=90,
               what="every application evaluated")  # fmt: skip

    backup_dir = tmp_path / "backup"
    assert main(["backup", "--var", str(platform.var), "--to", str(backup_dir)]) == 0
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert set(manifest["databases"]) == {s.name for s in SERVICES}
    assert manifest["consumers"]["routing-cases"] < manifest["stream_last_seq"], "routing had events to come"
    assert main(["restore", str(backup_dir), "--var", str(platform.var)]) == 1, "not while it runs"
    assert "stop the platform first" in capsys.readouterr().err

    # The platform goes on after the backup: routing comes back and makes the cases, notify tells the residents.
    platform.start_service("routing")
    eventually(lambda: all(checker.observe(everyone).effects["cases"][a] for a in filed), timeout=120,
               what="cases made after the backup")  # fmt: skip

    # The databases are lost; the backup is put back and the platform started again on it.
    platform.stop()
    for entry in SERVICES:
        for path in platform.var.glob(f"{entry.name}.db*"):
            path.unlink()
    assert main(["restore", str(backup_dir), "--var", str(platform.var)]) == 0
    assert "rewound when the platform next starts" in capsys.readouterr().out
    restored = Platform(config)
    restored.start()
    try:
        assert any("rewound to stream sequence" in e for e in restored.events)
        assert any("events after the backup" in e for e in restored.events)
        assert not (restored.var / "nats" / "rewind.json").exists()
        # It continues: a new application is handled too.
        later = api.apply(residents[0], "job_loss", ANSWERS)
        checker = Checker(restored, mail=MailDir(restored.var / "notify" / "mail" / "new"))
        reports: list[Report] = []
        observations: list[Observation] = []

        def settled() -> bool:
            observations.append(checker.observe(everyone))
            reports.append(checker.report(observations[-1], acknowledged=[reference_app, *filed, later],
                                          expected=expected, final_state=final_state, operations=APPLICATIONS + 2,
                                          faults={"restore": 1}, ignore=IGNORE))  # fmt: skip
            return reports[-1].clean and _quiet(observations[-1])

        try:
            eventually(settled, timeout=180, interval=1.0, what="every effect exactly once after the restore")
        except AssertionError as unsettled:
            # What was still missing or pending, so a failure says which effect or consumer it waited for.
            last = observations[-1]
            raise AssertionError(
                f"{unsettled}\n{reports[-1].table()}\noutbox backlog {last.outbox_backlog}, consumer lag "
                f"{last.consumer_lag}, pending {last.pending}, dead letters {last.dead_letters}, "
                f"unavailable {last.unavailable}"
            ) from None
        print(reports[-1].table())
    finally:
        restored.stop()
