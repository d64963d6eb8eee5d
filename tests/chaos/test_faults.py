"""File applications while killing, at random moments, the stream leader's NATS node, one replica of each service and
PostgreSQL's connections, with the partner's webhook endpoint away for a long stretch; then count every effect of
every application against one filed while nothing failed. Nothing may be lost or duplicated.

``make test`` files 40 applications (about three minutes on two cores: every kind of fault still strikes, at least
twice the NATS leader and PostgreSQL's connections and once a replica of each service and of the portal, and the
checker asserts everything); ``make chaos`` files 2,000 (CHAOS_APPLICATIONS)."""

from __future__ import annotations

import contextlib
import os
import time
import uuid

import pytest

from onestop.runner import Platform
from shared.auth import Role
from tests.chaos.workload import Clients, Faults, Filing, PartnerEndpoint
from tests.e2e.support import Api, Resident, eventually
from tests.e2e.test_journeys import JOB_LOSS, JOB_LOSS_DETAILS
from tests.support.checker import Checker, Observation
from tests.support.smtp import MailServer

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(int(os.environ.get("CHAOS_TIMEOUT", "1800")))]

APPLICATIONS = int(os.environ.get("CHAOS_APPLICATIONS", "40"))
# Residents file a few applications each (so that two replicas' batches seldom wait on one resident's rows).
PER_RESIDENT = 2
REFERENCES = 3
SEED = int(os.environ.get("CHAOS_SEED", "17"))
ANSWERS = {**JOB_LOSS, **JOB_LOSS_DETAILS}
PARTNER = "saebom-ngo"
# Two webhooks per application: a partner's subscription is delivered in order, one at a time, so its backlog after
# the outage is what the test waits for longest.
GRANTED = ["application.submitted", "eligibility.determined"]


def _resident(api: Api) -> Resident:
    resident = api.register(district="11440", birth_date="1984-02-02")
    api.consent(resident, **{f"partner__{PARTNER}": True})  # the partner hears about them
    return resident


def _registered(api: Api, checker: Checker, count: int) -> list[Resident]:
    """Residents registered, with their consents taken in by every service before anything is filed for them.
    A service may apply two events about one resident out of order (batches run side by side): a consent applied
    after the application's first round makes a second round, correct but not the reference's count."""
    residents = [_resident(api) for _ in range(count)]
    eventually(
        lambda: _quiet(checker.observe(r.id for r in residents)),
        timeout=120,
        interval=1.0,
        what="the residents' registrations and consents taken in",
    )
    return residents


def _quiet(observation: Observation) -> bool:
    """Nothing left to do anywhere: every outbox sent, every consumer caught up, no delivery waiting."""
    return (
        not any(observation.outbox_backlog.values())
        and not any(observation.pending.values())
        and not any(observation.consumer_lag.values())
        and observation.effects["told by e-mail (sent)"] == observation.effects["told by e-mail (received)"]
        and observation.effects["webhooks queued"] == observation.effects["webhooks received"]
    )


def test_faults_at_random_moments_lose_and_duplicate_nothing(
    production_like: Platform, smtp: MailServer, partner: PartnerEndpoint
) -> None:
    platform = production_like
    api = Api(platform)
    checker = Checker(platform, mail=smtp.received, receipts=partner.receipts)
    api.ok("notify", "POST", "/v1/subscriptions", api.token(Role.PARTNER, partner_id=PARTNER),
           json={"transport": "webhook", "event_types": GRANTED, "url": partner.url})  # fmt: skip

    with platform.supervising() as gave_up:
        # The reference: applications filed while nothing fails, settled to the last e-mail and webhook.
        references = _registered(api, checker, REFERENCES)
        reference_apps = [api.apply(r, "job_loss", ANSWERS, key=f"reference-{r.id}") for r in references]
        previous: list[Observation] = []

        def reference_settled() -> bool:
            observation = checker.observe(r.id for r in references)
            settled = (
                _quiet(observation)
                and all(observation.effects["cases"][a] for a in reference_apps)
                and bool(previous)
                and previous[-1].effects == observation.effects
                and previous[-1].final_states == observation.final_states
            )
            previous.append(observation)
            return settled

        begun = time.monotonic()
        eventually(reference_settled, timeout=120, interval=1.0, what="the reference applications settled")
        print(f"reference settled in {time.monotonic() - begun:.0f}s", flush=True)
        expected, final_state = checker.reference(previous[-1], reference_apps)
        assert all(expected.values()), f"the reference has every kind of effect: {expected}"

        # The run: clients file while faults strike.
        residents = _registered(api, checker, max(APPLICATIONS // PER_RESIDENT, 1))
        filings = [
            Filing(residents[n % len(residents)], f"chaos-{uuid.uuid4()}", replay=n % 10 == 9)
            for n in range(APPLICATIONS)
        ]
        clients = Clients(platform, filings, ANSWERS)
        faults = Faults(platform, seed=SEED)
        plan = faults.plan(APPLICATIONS, partner)
        started = time.monotonic()
        clients.start()
        faults.run(plan, progress=lambda: clients.done, finished=lambda: not any(
            w.is_alive() for w in clients._workers))  # fmt: skip
        assert clients.join(timeout=600), f"the clients are still filing ({clients.done} of {APPLICATIONS})"
        filed_in = time.monotonic() - started
        print(f"filed in {filed_in:.0f}s", flush=True)
        assert not clients.errors, clients.errors[:3]
        assert faults.error is None, faults.error
        assert not gave_up, gave_up

        acknowledged = [f.application_id for f in filings if f.application_id]
        assert len(acknowledged) == APPLICATIONS
        assert len(set(acknowledged)) == APPLICATIONS, "every key made its own application"
        assert all(first == again for first, again in clients.replays), "a retried key gets its application back"

        # Settle, then count.
        everyone = [r.id for r in residents]
        last: list[Observation] = []

        def settled() -> bool:
            last.append(checker.observe(everyone))
            report = checker.report(last[-1], acknowledged=acknowledged, expected=expected, final_state=final_state,
                                    operations=clients.operations, faults=dict(faults.counts))  # fmt: skip
            if not report.clean:
                print(f"[{time.monotonic() - started:.0f}s] settling: {report.problems}", flush=True)
            return report.clean

        with contextlib.suppress(AssertionError):  # the report below says what is missing
            eventually(settled, timeout=max(600, APPLICATIONS * 0.6), interval=3.0, what="every effect settled")
        report = checker.report(last[-1], acknowledged=acknowledged, expected=expected, final_state=final_state,
                                operations=clients.operations, faults=dict(faults.counts))  # fmt: skip
    print(f"\n{APPLICATIONS} applications filed in {filed_in:.0f}s; webhook endpoint down {partner.down_seconds:.0f}s")
    print("\n".join(faults.log))
    print(report.table())
    print("\n".join(platform.events))
    assert report.faults["NATS stream leader SIGKILL"] >= 2
    assert report.faults["service replica SIGKILL"] >= len(platform.groups) == 5
    assert any("SIGKILL portal-" in line for line in faults.log), "the portal lost a replica too"
    assert report.faults["PostgreSQL backends terminated"] >= 2
    assert partner.down_seconds > 0
    assert sum(1 for e in platform.events if "restarted" in e) >= 6, "the supervisor brought every killed node back"
    assert report.clean, report.table()
