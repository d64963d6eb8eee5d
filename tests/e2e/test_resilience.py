"""Kill -9 each service once while 200 applications stream in: every application reaches the same final state as
one filed before the chaos, and the effects checker (tests/support/checker.py) counts every effect of every
application against it: evaluation rounds, determinations, cases, messages and e-mails, none lost, none doubled.

This module runs last (it restarts services of the shared platform)."""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import pytest

from onestop.runner import Platform
from tests.e2e.support import JSON, Api, Resident, eventually, settled_round
from tests.e2e.test_journeys import JOB_LOSS, JOB_LOSS_DETAILS
from tests.support.checker import Checker, MailDir, Report

pytestmark = pytest.mark.e2e

APPLICATIONS = 200
RESIDENTS = 20
# When the producer has filed this many applications, this service is killed with SIGKILL and restarted.
KILLS = {30: "intake", 70: "eligibility", 110: "routing", 150: "notify"}
ANSWERS = {**JOB_LOSS, **JOB_LOSS_DETAILS}
# No partner subscribes to these residents here (tests/chaos does that); the mail sink is the e-mails received.
NOT_EXERCISED = ("webhooks queued", "webhooks received")


def signature(view: JSON) -> list[tuple[str, str, str | None]]:
    """What must be the same for every application: each program's outcome and its case's state."""
    return sorted((p["program_code"], p["outcome"], (p.get("case") or {}).get("status")) for p in view["programs"])


def _settled(view: JSON) -> bool:
    # Every case a program needs is there (cases come after the determination).
    return settled_round(view) and all(
        p.get("case")
        for p in view["programs"]
        if p["outcome"] == "eligible" or p["program_code"] == "unemployment_benefit"
    )


class Producer(threading.Thread):
    """Files the applications one after another, as a client would: a failed or unanswered request is retried with
    the same Idempotency-Key until intake answers (it may be down for a while)."""

    def __init__(self, api: Api, residents: list[Resident]) -> None:
        super().__init__(daemon=True)
        self.api, self.residents = api, residents
        self.filed: list[tuple[Resident, str]] = []
        self.retries = 0
        self.attempts = 0
        # When each attempt began and ended (monotonic): whether a filing met a service that was down.
        self.spans: list[tuple[float, float]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for n in range(APPLICATIONS):
                resident = self.residents[n % len(self.residents)]
                key = f"chaos-{resident.id}-{n}"
                deadline = time.monotonic() + 90
                while True:
                    self.attempts += 1
                    began = time.monotonic()
                    try:
                        self.filed.append((resident, self.api.apply(resident, "job_loss", ANSWERS, key=key)))
                        break
                    except (httpx.HTTPError, AssertionError):
                        if time.monotonic() > deadline:
                            raise
                        self.retries += 1
                        time.sleep(0.2)
                    finally:
                        self.spans.append((began, time.monotonic()))
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.mark.timeout(900)
def test_killing_each_service_once_loses_and_duplicates_nothing(api: Api, platform: Platform) -> None:
    # The reference: an application filed while nothing fails.
    reference_resident = api.register(district="11440", birth_date="1984-02-02")
    reference_app = api.apply(reference_resident, "job_loss", ANSWERS)
    reference = api.view_when(reference_app, reference_resident.auth, _settled)
    assert any(status == "open" for _, _, status in signature(reference)), "the reference has cases for caseworkers"
    api.view_when(reference_app, reference_resident.auth, lambda _: len(api.inbox(reference_resident)) >= 3,
                  what="the reference resident told")  # fmt: skip

    # The same facts as the reference resident, so the same outcomes are expected of every application.
    residents = [api.register(district="11440", birth_date="1984-02-02") for _ in range(RESIDENTS)]
    producer = Producer(api, residents)
    producer.start()
    intake_down: tuple[float, float] | None = None
    for threshold, service in KILLS.items():
        eventually(
            lambda t=threshold: len(producer.filed) >= t or producer.error,  # type: ignore[misc]
            timeout=120,
            what=f"{threshold} applications filed",
        )
        down_at = time.monotonic()
        platform.kill_service(service)  # SIGKILL: no drain, no last relay pass, no acks
        platform.start_service(service)  # the same database and stream; waits until /readyz answers
        if service == "intake":
            intake_down = (down_at, time.monotonic())
    producer.join(timeout=180)
    assert not producer.is_alive(), f"the producer is still filing after 180 s ({len(producer.filed)} filed)"
    if producer.error is not None:
        raise AssertionError(f"the producer failed after {len(producer.filed)} filings") from producer.error
    assert len(producer.filed) == APPLICATIONS
    assert len({app for _, app in producer.filed}) == APPLICATIONS, "a retried filing made no second application"
    # A filing met intake down: refused and retried, or (the runner holds the listening socket across a restart)
    # waiting in the socket's queue until the new process took it.
    assert intake_down is not None
    assert any(began < intake_down[1] and ended > intake_down[0] for began, ended in producer.spans), (
        "intake was down while applications were being filed"
    )
    assert not platform.exited(), "everything restarted"

    # Count every effect of every application against the reference (tests/support/checker.py): nothing lost,
    # nothing doubled, each application in the reference's final state.
    checker = Checker(platform, mail=MailDir(platform.var / "notify" / "mail" / "new"))
    everyone = [reference_resident.id, *(r.id for r in residents)]
    expected, final_state = checker.reference(checker.observe([reference_resident.id]), [reference_app])
    assert all(v for k, v in expected.items() if k not in NOT_EXERCISED), expected
    acknowledged = [reference_app, *(app for _, app in producer.filed)]
    kills = {"service SIGKILL (then restarted)": len(KILLS)}
    reports: list[Report] = []

    def settled() -> bool:
        reports.append(checker.report(checker.observe(everyone), acknowledged=acknowledged, expected=expected,
                                      final_state=final_state, operations=producer.attempts, faults=kills,
                                      ignore=NOT_EXERCISED))  # fmt: skip
        return reports[-1].clean

    with contextlib.suppress(AssertionError):  # the report says what is missing
        eventually(settled, timeout=300, interval=2.0, what="every effect settled")
    print(reports[-1].table())
    assert reports[-1].clean, reports[-1].table()
