"""The effects checker of the fault suites: it reads every service's state (their databases, JetStream, the mail
relay, the partner's webhook endpoint) and counts every effect per application, against what an application filed
while nothing fails produces. The portal keeps no state to count (no database, no outbox, no consumer): of it, as of
every process, the checker asks only that it serves.

An effect is *lost* when an acknowledged application has fewer of it than the reference, *duplicated* when it has
more. A resend of the same message (the same Message-ID, the same webhook-id: at-least-once transports, which the
receiver drops by that id) is counted apart and is not a duplicate; a second message with a new id is.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
from sqlalchemy import text

from onestop.registry import BY_NAME, SERVICES
from onestop.runner import Platform
from shared.bus import stream_name
from shared.db import create_engine

# Per application: what the reference produced of each, and so what every acknowledged application must have.
EFFECTS = (
    "applications",
    "evaluation rounds",
    "determinations",
    "cases",
    "told by e-mail (sent)",
    "told by e-mail (received)",
    "told in the inbox",
    "webhooks queued",
    "webhooks received",
)

# Events told to the resident; a "received" message notify leaves out by rule is one event fewer in each.
MESSAGES = ("told by e-mail (sent)", "told by e-mail (received)", "told in the inbox")


@dataclass(frozen=True)
class Receipt:
    """What a partner's endpoint received: the webhook-id and the event."""

    webhook_id: str
    event: dict[str, Any]


@dataclass
class Observation:
    """Everything counted, per application, at one moment."""

    effects: dict[str, Counter[str]]
    # Per application: (intake's status, round, sorted (program, case state)): the state the resident sees.
    final_states: dict[str, tuple[Any, ...]]
    # Applications of our residents that intake holds but no client was given (a retry that made a second one).
    applications_of_residents: set[str]
    dead_letters: dict[str, int]
    outbox_backlog: dict[str, int]
    consumer_lag: dict[str, int]
    resent: dict[str, int]  # the same Message-ID / webhook-id received again
    webhook_order_violations: list[str]
    # Work notify still has to do: messages not yet released, e-mails and webhooks waiting for an attempt.
    pending: dict[str, int] = field(default_factory=dict)
    # Applications whose "received" message notify left out by its rule (services/notify/notifications.py,
    # application_submitted: results had gone out first): it handled the submission, told results, and the
    # application was not withdrawn. A fault that delays the submission makes this happen; the message is not lost.
    superseded: set[str] = field(default_factory=set)
    # What does not answer (a service's or the portal's /readyz) or is down for good when the counting is done.
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass
class Row:
    effect: str
    acknowledged: int
    observed: int
    lost: int
    duplicated: int


@dataclass
class Report:
    operations: int
    faults: dict[str, int]
    acknowledged: int
    rows: list[Row]
    reached_final_state: int
    orphaned: list[str]
    resent: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    superseded: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems

    def table(self) -> str:
        faults = sum(self.faults.values())
        lost = sum(r.lost for r in self.rows) + (self.acknowledged - self.reached_final_state)
        duplicated = sum(r.duplicated for r in self.rows) + len(self.orphaned)
        head = ["operations", "faults injected", "acknowledged", "observed", "lost", "duplicated"]
        summary = [self.operations, faults, self.acknowledged, self.reached_final_state, lost, duplicated]
        lines = [
            "  ".join(f"{h:>15}" for h in head),
            "  ".join(f"{v:>15}" for v in summary),
            "faults: " + (", ".join(f"{k} x{v}" for k, v in self.faults.items()) or "none"),
            "resent with the same id (the receiver drops the copy; not a duplicate): "
            + (", ".join(f"{k} {v}" for k, v in self.resent.items()) or "none"),
            f"'received' messages left out by rule (the results had gone out first; not lost): {self.superseded}",
            "",
            f"{'effect':<28}{'acknowledged':>14}{'observed':>10}{'lost':>7}{'duplicated':>12}",
        ]
        for r in self.rows:
            lines.append(f"{r.effect:<28}{r.acknowledged:>14}{r.observed:>10}{r.lost:>7}{r.duplicated:>12}")
        if self.problems:
            lines += ["", "problems:", *(f"  - {p}" for p in self.problems)]
        return "\n".join(lines)


class MailDir:
    """The e-mails notify wrote to its local sink (no SMTP relay configured): ``<data_dir>/mail/new/*.eml``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # A delivered file never changes: each is parsed once, not at every observation (a settling test observes
        # every second or two, and parsing a thousand e-mails each time took the CPU the platform needed).
        self._parsed: dict[Path, EmailMessage] = {}

    def __iter__(self) -> Iterator[EmailMessage]:
        for path in sorted(self.directory.glob("*.eml")):
            message = self._parsed.get(path)
            if message is None:
                parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                assert isinstance(parsed, EmailMessage)
                message = self._parsed[path] = parsed
            yield message


class Checker:
    def __init__(
        self,
        platform: Platform,
        *,
        mail: Iterable[EmailMessage] | None = None,
        receipts: Sequence[Receipt] | None = None,
    ) -> None:
        self.platform = platform
        self.mail = mail
        self.receipts = receipts

    # ------------------------------------------------------------------------------------------ observing

    def observe(self, residents: Iterable[uuid.UUID]) -> Observation:
        return asyncio.run(self._observe([_id(r) for r in residents]))

    async def _query(self, service: str, sql: str, **params: Any) -> list[Any]:
        engine = create_engine(self.platform.database_url(BY_NAME[service]))
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(text(sql), params)).all())
        finally:
            await engine.dispose()

    async def _observe(self, residents: list[str]) -> Observation:
        effects: dict[str, Counter[str]] = {name: Counter() for name in EFFECTS}
        ours = set(residents)
        intake = await self._query("intake", "SELECT id, resident_id, status FROM applications")
        applications = {_id(a.id): a for a in intake if _id(a.resident_id) in ours}
        for app in applications:
            effects["applications"][app] += 1
        rounds = {_id(r.application_id): r.round for r in await self._query("intake", "SELECT * FROM determinations")}
        cases: dict[str, list[tuple[str, str]]] = {}
        for case in await self._query("intake", "SELECT application_id, program_code, state FROM cases"):
            cases.setdefault(_id(case.application_id), []).append((case.program_code, case.state))
        final_states = {
            app: (row.status, rounds.get(app), tuple(sorted(cases.get(app, [])))) for app, row in applications.items()
        }

        def count(name: str, rows: Iterable[Any]) -> None:
            for row in rows:
                if _id(row[0]) in applications:
                    effects[name][_id(row[0])] += int(row[1])

        per_application = "SELECT application_id, count(*) FROM {} GROUP BY application_id"
        count("evaluation rounds", await self._query("eligibility", per_application.format("evaluation_rounds")))
        count("determinations", await self._query("eligibility", per_application.format("determinations")))
        count("cases", await self._query("routing", per_application.format("cases")))
        # Messages are counted by the events they tell (a message may bundle several events of one kind that arrived
        # together, and how they bundle depends on timing): each event told exactly once, in the inbox and by e-mail.
        told = "(SELECT notification_id, count(*) AS events FROM notification_items GROUP BY notification_id)"
        count("told in the inbox", await self._query(
            "notify", f"SELECT n.application_id, sum(t.events) FROM notifications n JOIN {told} t "  # noqa: S608
            "ON t.notification_id = n.id WHERE n.released_at IS NOT NULL GROUP BY n.application_id"))  # fmt: skip
        deliveries = await self._query(
            "notify",
            f"SELECT d.id, n.application_id, d.status, t.events FROM deliveries d "  # noqa: S608
            f"JOIN notifications n ON n.id = d.notification_id JOIN {told} t ON t.notification_id = n.id "
            "WHERE d.channel = 'email'",
        )
        count("told by e-mail (sent)", [(d.application_id, d.events) for d in deliveries if d.status == "sent"])
        resent: dict[str, int] = {}
        if self.mail is not None:
            by_delivery = {_id(d.id): (_id(d.application_id), d.events) for d in deliveries}
            ids = Counter(str(m["Message-ID"]).strip("<>").partition("@")[0] for m in list(self.mail))
            resent["e-mails"] = sum(n - 1 for n in ids.values())
            count("told by e-mail (received)", [by_delivery.get(i, (None, 0)) for i in ids])
        webhooks = await self._query("notify", "SELECT seq, id, payload, status FROM webhook_deliveries "
                                     "WHERE transport = 'webhook' ORDER BY seq")  # fmt: skip
        # The webhook-id a delivery goes out with (services/notify/partner_delivery.py): msg_<its id in hex>.
        seq_of = {f"msg_{uuid.UUID(_id(w.id)).hex}": w.seq for w in webhooks}
        count("webhooks queued", [(_application_of(w.payload), 1) for w in webhooks])
        order: list[str] = []
        if self.receipts is not None:
            receipts = list(self.receipts)
            first: dict[str, Receipt] = {}
            for receipt in receipts:
                first.setdefault(receipt.webhook_id, receipt)
            resent["webhooks"] = len(receipts) - len(first)
            count("webhooks received", [(r.event.get("data", {}).get("application_id"), 1) for r in first.values()])
            # In order: each subscription's deliveries reach the partner in their queue's order.
            last = 0
            for webhook_id in first:
                seq = seq_of.get(webhook_id)
                if seq is None:
                    order.append(f"webhook {webhook_id} received but never queued by notify")
                    continue
                if seq < last:
                    order.append(f"webhook {webhook_id} (seq {seq}) arrived after seq {last}")
                last = max(last, seq)
        pending = {
            "messages": (await self._query("notify", "SELECT count(*) FROM notifications WHERE status IN "
                                           "('collecting', 'ready')"))[0][0],
            "deliveries": (await self._query("notify", "SELECT count(*) FROM deliveries WHERE status IN "
                                             "('pending', 'failed')"))[0][0],
            "webhooks": (await self._query("notify", "SELECT count(*) FROM webhook_deliveries WHERE status IN "
                                           "('pending', 'failed')"))[0][0],
        }  # fmt: skip
        superseded = await self._superseded_receipts(set(applications))
        dead, backlog = {}, {}
        for entry in SERVICES:
            [(dead[entry.name],)] = await self._query(entry.name, "SELECT count(*) FROM dead_letters")
            [(backlog[entry.name],)] = await self._query(
                entry.name, "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            )
        return Observation(
            effects=effects,
            final_states=final_states,
            applications_of_residents=set(applications),
            dead_letters=dead,
            outbox_backlog=backlog,
            consumer_lag=await self._consumer_lag(),
            resent=resent,
            webhook_order_violations=order,
            pending=pending,
            superseded=superseded,
            unavailable=await self._unavailable(),
        )

    async def _superseded_receipts(self, applications: set[str]) -> set[str]:
        submitted = f"{self.platform.config.bus_prefix}.application.submitted"
        rows = await self._query("intake", "SELECT event_id, payload FROM outbox WHERE subject = :s", s=submitted)
        event_of = {a: r.event_id for r in rows if (a := _application_of(r.payload)) in applications}
        inbox = "SELECT event_id, handled_at FROM inbox WHERE consumer = 'notify-residents'"
        handled = {r.event_id: r.handled_at for r in await self._query("notify", inbox)}
        # When notify handled the first event whose message told results (the inbox's time of its batch).
        results = await self._query(
            "notify",
            "SELECT n.application_id, min(i.handled_at) AS at FROM notifications n "
            "JOIN notification_items t ON t.notification_id = n.id "
            "JOIN inbox i ON i.event_id = t.source_event_id AND i.consumer = 'notify-residents' "
            "WHERE n.kind <> 'application.submitted' GROUP BY n.application_id",
        )
        results_at = {_id(r.application_id): r.at for r in results}
        receipts = "SELECT DISTINCT application_id FROM notifications WHERE kind = 'application.submitted'"
        received = {_id(r.application_id) for r in await self._query("notify", receipts)}
        withdrawn = "SELECT application_id FROM applications WHERE withdrawn_at IS NOT NULL"
        withdrawn_apps = {_id(r.application_id) for r in await self._query("notify", withdrawn)}
        out = set()
        for app, event_id in event_of.items():
            # notify handled the submission, told results, and the application was not withdrawn: the rule left the
            # message out. The times cannot say more: an inbox row carries its batch's start, and a batch that waited
            # for the application's row (FOR UPDATE) behind another replica's batch handled the submission after the
            # results that batch committed, though its time is earlier.
            told, at = results_at.get(app), handled.get(event_id)
            if app not in received and app not in withdrawn_apps and told is not None and at is not None:
                out.add(app)
        return out

    async def _unavailable(self) -> dict[str, str]:
        """Every process the platform started that is down (and not about to be restarted), and every service — and
        the portal, which has no database, outbox or consumers to count, only its availability — whose /readyz does
        not answer 200."""
        out = {name: f"ended with {code}" for name, code in self.platform.exited().items()}
        async with httpx.AsyncClient(timeout=5) as client:
            for group in self.platform.groups:
                try:
                    response = await client.get(f"{self.platform.url(group)}/readyz")
                    if response.status_code != 200:
                        out[group] = f"/readyz {response.status_code}"
                except httpx.HTTPError as exc:
                    out[group] = f"/readyz {type(exc).__name__}"
        return out

    async def _consumer_lag(self) -> dict[str, int]:
        try:
            return await self._ask_consumer_lag()
        except (TimeoutError, OSError, nats.errors.Error) as exc:  # a node restarting: ask again next time
            return {f"(JetStream did not answer: {type(exc).__name__})": 1}

    async def _ask_consumer_lag(self) -> dict[str, int]:
        nc = await nats.connect(self.platform.nats_url.split(","), allow_reconnect=True, connect_timeout=5,
                                **self.platform.nats_credentials())  # fmt: skip
        try:
            infos = await nc.jetstream(timeout=10).consumers_info(stream_name(self.platform.config.bus_prefix))
            services = tuple(f"{s.name}-" for s in SERVICES)
            return {
                info.name: int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                for info in infos
                if info.name.startswith(services)
            }
        finally:
            await nc.close()

    # ------------------------------------------------------------------------------------------ judging

    def reference(self, observation: Observation, applications: Sequence[str]) -> tuple[dict[str, int], Any]:
        """What one application filed while nothing fails produces (every reference application alike)."""
        assert observation.effects["applications"][applications[0]] == 1, "the checker finds the reference"
        per_effect = {}
        for name in EFFECTS:
            # A reference whose "received" message notify left out by rule (two replicas may handle the submission
            # after the results even without a fault) counts as having had it.
            values = {
                observation.effects[name][a] + (1 if name in MESSAGES and a in observation.superseded else 0)
                for a in applications
            }
            assert len(values) == 1, f"the reference applications differ in {name}: {values}"
            per_effect[name] = values.pop()
        states = {observation.final_states.get(a) for a in applications}
        assert len(states) == 1, f"the reference applications end differently: {states}"
        return per_effect, states.pop()

    def report(
        self,
        observation: Observation,
        *,
        acknowledged: Sequence[str],
        expected: dict[str, int],
        final_state: Any,
        operations: int,
        faults: dict[str, int],
        ignore: Iterable[str] = (),
    ) -> Report:
        skip = set(ignore)
        acked = set(acknowledged)
        rows = []
        problems: list[str] = []
        for name in EFFECTS:
            if name in skip:
                continue
            per_app = observation.effects[name]

            def due(app: str, name: str = name) -> int:
                less = name in MESSAGES and app in observation.superseded
                return expected[name] - (1 if less else 0)

            lost = sum(max(due(a) - per_app[a], 0) for a in acked)
            duplicated = sum(max(per_app[a] - due(a), 0) for a in acked)
            rows.append(Row(name, sum(due(a) for a in acked), sum(per_app[a] for a in acked), lost, duplicated))
            if lost or duplicated:
                worst = [a for a in acked if per_app[a] != due(a)][:3]
                problems.append(f"{name}: {lost} lost, {duplicated} duplicated (e.g. {worst}, expected "
                                f"{expected[name]} each)")  # fmt: skip
        reached = [a for a in acked if observation.final_states.get(a) == final_state]
        if len(reached) != len(acked):
            behind = [(a, observation.final_states.get(a)) for a in acked if a not in set(reached)][:3]
            problems.append(f"{len(acked) - len(reached)} applications not in the final state {final_state}: {behind}")
        orphaned = sorted(observation.applications_of_residents - acked)
        if orphaned:
            problems.append(f"{len(orphaned)} applications no client was given (orphans of a retry): {orphaned[:3]}")
        if any(observation.dead_letters.values()):
            problems.append(f"dead letters: {observation.dead_letters}")
        if any(observation.outbox_backlog.values()):
            problems.append(f"outbox backlog: {observation.outbox_backlog}")
        if any(observation.consumer_lag.values()):
            problems.append(f"consumer lag: { {k: v for k, v in observation.consumer_lag.items() if v} }")
        if any(observation.pending.values()):
            problems.append(f"notify still has work: {observation.pending}")
        if observation.webhook_order_violations:
            problems.append(f"webhooks out of order: {observation.webhook_order_violations[:3]}")
        if observation.unavailable:
            problems.append(f"not serving: {observation.unavailable}")
        report = Report(operations, faults, len(acked), rows, len(reached), orphaned, observation.resent, problems)
        report.superseded = len(observation.superseded & acked)
        return report


def _id(value: Any) -> str:
    """An id as the services write it in JSON (a UUID with dashes), whatever the database returns (SQLite keeps UUIDs
    as 32 hex digits)."""
    if value is None:
        return ""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)


def _application_of(payload: str) -> str | None:
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    application = event.get("data", {}).get("application_id") if isinstance(event, dict) else None
    return str(application) if application else None
