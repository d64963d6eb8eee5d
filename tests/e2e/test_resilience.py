"""Kill -9 each service once while 200 applications stream in: every application reaches the same final state as
one filed before the chaos, with no duplicate case and no duplicate message.

This module runs last (it restarts services of the shared platform)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import httpx
import pytest

from onestop.runner import Platform
from shared.auth import Role
from tests.e2e.support import JSON, Api, Resident, eventually, settled_round
from tests.e2e.test_journeys import JOB_LOSS, JOB_LOSS_DETAILS

pytestmark = pytest.mark.e2e

APPLICATIONS = 200
RESIDENTS = 20
# When the producer has filed this many applications, this service is killed with SIGKILL and restarted.
KILLS = {30: "intake", 70: "eligibility", 110: "routing", 150: "notify"}
ANSWERS = {**JOB_LOSS, **JOB_LOSS_DETAILS}


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
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for n in range(APPLICATIONS):
                resident = self.residents[n % len(self.residents)]
                key = f"chaos-{resident.id}-{n}"
                deadline = time.monotonic() + 90
                while True:
                    try:
                        self.filed.append((resident, self.api.apply(resident, "job_loss", ANSWERS, key=key)))
                        break
                    except (httpx.HTTPError, AssertionError):
                        if time.monotonic() > deadline:
                            raise
                        self.retries += 1
                        time.sleep(0.2)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_killing_each_service_once_loses_and_duplicates_nothing(api: Api, platform: Platform) -> None:
    # The reference: an application filed while nothing fails.
    reference_resident = api.register(district="11440", birth_date="1984-02-02")
    reference = api.view_when(api.apply(reference_resident, "job_loss", ANSWERS), reference_resident.auth, _settled)
    expected = signature(reference)
    assert any(status == "open" for _, _, status in expected), "the reference has cases for caseworkers"

    # The same facts as the reference resident, so the same outcomes are expected of every application.
    residents = [api.register(district="11440", birth_date="1984-02-02") for _ in range(RESIDENTS)]
    producer = Producer(api, residents)
    producer.start()
    for threshold, service in KILLS.items():
        eventually(
            lambda t=threshold: len(producer.filed) >= t or producer.error,  # type: ignore[misc]
            timeout=120,
            what=f"{threshold} applications filed",
        )
        platform.kill_service(service)  # SIGKILL: no drain, no last relay pass, no acks
        platform.start_service(service)  # the same database and stream; waits until /readyz answers
    producer.join(timeout=180)
    assert not producer.is_alive(), f"the producer is still filing after 180 s ({len(producer.filed)} filed)"
    if producer.error is not None:
        raise AssertionError(f"the producer failed after {len(producer.filed)} filings") from producer.error
    assert len(producer.filed) == APPLICATIONS
    assert len({app for _, app in producer.filed}) == APPLICATIONS, "a retried filing made no second application"
    assert producer.retries > 0, "intake was down while applications were being filed"
    assert not platform.exited(), "everything restarted"

    # Every application reaches the reference's final state.
    def behind() -> list[str]:
        return [app for resident, app in producer.filed if signature(api.view(app, resident.auth)) != expected]

    eventually(lambda: not behind(), timeout=240, what="every application settled like the reference")

    # No duplicate case: routing holds exactly one case per (application, program) that needs one.
    ours = {app for _, app in producer.filed}
    cases: Counter[tuple[str, str]] = Counter()
    admin = api.token(Role.ADMIN)
    for office in {p["case"]["office_code"] for p in reference["programs"] if p.get("case")} | _offices(api, admin):
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = api.ok("routing", "GET", f"/v1/queues/{office}", admin, params=params)
            for item in page["items"]:
                if item["application_id"] in ours:
                    cases[(item["application_id"], item["program_code"])] += 1
            cursor = page.get("next_cursor")
            if not cursor:
                break
    per_application = sum(1 for _, _, status in expected if status is not None)
    assert sum(cases.values()) == APPLICATIONS * per_application
    assert set(cases.values()) == {1}

    # No duplicate message: never the same message twice for one application (bundles may group differently under
    # load, but a message sent again would repeat kind and text); and every application was told what the
    # reference was told.
    reference_kinds = {m["kind"] for m in eventually(lambda: api.inbox(reference_resident) or None)}
    by_resident: dict[uuid.UUID, list[JSON]] = {}

    def told_everyone() -> bool:
        by_resident.clear()
        for resident in residents:
            by_resident[resident.id] = api.inbox(resident)
        for resident, app in producer.filed:
            kinds = {m["kind"] for m in by_resident[resident.id] if m["application_id"] == app}
            if not reference_kinds <= kinds:
                return False
        return True

    eventually(told_everyone, timeout=120, what="every resident told what the reference was told")
    for messages in by_resident.values():
        seen = Counter((m["application_id"], m["kind"], m["body"]) for m in messages)
        assert max(seen.values()) == 1, [k for k, v in seen.items() if v > 1][:3]


def _offices(api: Api, admin: dict[str, str]) -> set[str]:
    return {o["code"] for o in api.ok("routing", "GET", "/v1/offices", admin)}
