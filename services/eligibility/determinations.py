"""Determinations: evaluating an application's programs, storing each round, and emitting ``eligibility.determined``;
keeping what is known of residents (registry, consents, department facts) and re-evaluating when it changes; and
reading an application's rounds back.

Everything here runs inside the caller's transaction (an event handler's or a request's) and never commits.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from services.eligibility import triggers
from services.eligibility.catalogue import Catalogue
from services.eligibility.facts import FactLayers, FactValueError, ReportedValue, registry_facts
from services.eligibility.models import (
    ApplicationRow,
    DepartmentFactRow,
    EvaluationRoundRow,
    audit_log,
)
from services.eligibility.repository import Repository
from services.eligibility.schemas import ApplicationDeterminations, RoundOut
from services.eligibility.screening_metrics import ScreeningMetrics
from services.eligibility.settings import EligibilitySettings
from services.eligibility.store import CatalogueStore
from shared.auth import Principal
from shared.events import (
    ApplicationInfoProvided,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    CloudEvent,
    ConsentChanged,
    EligibilityDetermined,
    FactsReported,
    ProgramDetermination,
    ReportedFact,
    ResidentContext,
    ResidentUpdated,
)
from shared.outbox import Outbox
from shared.problems import NotFound

log = logging.getLogger(__name__)

Trigger = Literal["submitted", "info_provided", "facts_reported", "registry_updated", "consent_changed"]

OPEN, PENDING, WITHDRAWN = "open", "pending", "withdrawn"
# Reports dated further ahead than this are refused: a clock that wrong is a source's error, not a fact.
CLOCK_SKEW = dt.timedelta(hours=1)


@dataclass
class FactProblem:
    index: int
    field: str
    message: str


@dataclass
class ReportResult:
    report_id: uuid.UUID
    accepted: int
    problems: list[FactProblem] = field(default_factory=list)
    reevaluated: int = 0
    new_rounds: int = 0


# Determinations evaluated ahead of the consumer's transaction (Eligibility.prepare), by their inputs, until used.
Evaluated = tuple[list[dict[str, Any]], dict[str, str]]
PREPARED_KEPT = 1000


class Eligibility:
    """The eligibility service's domain: one per process (kept in the service's context)."""

    def __init__(
        self, settings: EligibilitySettings, outbox: Outbox, screening_metrics: ScreeningMetrics | None = None
    ) -> None:
        self.settings = settings
        self.store = CatalogueStore(settings)
        self.outbox = outbox
        self._prepared: collections.OrderedDict[bytes, Evaluated] = collections.OrderedDict()
        self.screening_metrics = screening_metrics

    # ------------------------------------------------------------------------------------------ ahead of a batch

    async def prepare(self, repo: Repository, events: Sequence[CloudEvent], now: dt.datetime) -> None:
        """Run the rules, ahead of the consumer's transaction and outside it (``repo`` is on a read-only session), for
        every evaluation the batch's events will ask for — submissions and answers, and the re-evaluations a
        department's report, a consent or a registry change makes: the transaction then finds each result by its
        inputs instead of evaluating while it holds the database's writer lock. Nothing is written here; each event's
        effect on what is known is played forward in memory, in the batch's order. A result whose inputs turn out
        otherwise (another process wrote in between, a fact the transaction refuses) does not match, and the
        transaction evaluates afresh."""
        ahead = _Ahead(repo, await self.store.get(repo), now)
        for event in events:
            if event.event_type == ApplicationSubmitted.event_type:
                submitted = ApplicationSubmitted.model_validate(event.data)
                app = await ahead.application(submitted.application_id)
                if app is not None and app.status != PENDING:
                    continue
                app = _ahead(app, submitted.application_id, submitted.resident_id, submitted.life_event)
                app.application_date = submitted.application_date
                app.programs = list(submitted.program_codes) or None
                merge_answers(app, submitted.answers, submitted.submitted_at)
                ahead.opened(app)
                apps = [app]
            elif event.event_type == ApplicationInfoProvided.event_type:
                provided = ApplicationInfoProvided.model_validate(event.data)
                app = await ahead.application(provided.application_id)
                if app is None or app.status != OPEN:
                    continue
                app = _ahead(app, app.application_id, app.resident_id, app.life_event)
                merge_answers(app, provided.answers, provided.provided_at)
                ahead.opened(app)
                apps = [app]
            elif event.event_type == FactsReported.event_type:
                reported = FactsReported.model_validate(event.data)
                if not ahead.reported(reported):
                    continue
                apps = await ahead.open_applications(reported.resident_id)
            elif event.event_type == ConsentChanged.event_type:
                changed = ConsentChanged.model_validate(event.data)
                await ahead.consented(changed)
                apps = await ahead.open_applications(changed.resident_id)
            elif event.event_type == ResidentUpdated.event_type:
                updated = ResidentUpdated.model_validate(event.data)
                await ahead.registered(updated)
                apps = await ahead.open_applications(updated.resident_id)
            else:
                continue
            for app in apps:
                if app.withdrawn_at is not None or app.application_date is None:
                    continue
                key, layers = await ahead.inputs(app)
                if key not in self._prepared:
                    self._prepared[key] = _run_rules(ahead.catalogue, app, layers, now)
                    if len(self._prepared) > PREPARED_KEPT:
                        self._prepared.popitem(last=False)
                await asyncio.sleep(0)  # one evaluation at a time: requests get the loop in between

    # ------------------------------------------------------------------------------------------ events in

    async def on_submitted(self, repo: Repository, data: ApplicationSubmitted, now: dt.datetime) -> None:
        app = await repo.application(data.application_id, for_update=True)
        if app is not None and app.status != PENDING:
            log.info("submission already known", extra={"application_id": str(data.application_id)})
            return
        if app is None:
            app = ApplicationRow(
                application_id=data.application_id,
                resident_id=data.resident_id,
                status=OPEN,
                declared={},
                answered_at={},
                round=0,
                updated_at=now,
            )
            repo.session.add(app)
        # Answers that arrived before the submission (a reordered info_provided) are newer and stay.
        merge_answers(app, data.answers, data.submitted_at)
        app.status = WITHDRAWN if app.withdrawn_at is not None else OPEN
        app.life_event = data.life_event
        app.application_date = data.application_date
        app.channel = data.channel.value
        app.resident_context = data.resident.model_dump(mode="json")
        app.programs = list(data.program_codes) or None
        app.submitted_at = data.submitted_at
        app.updated_at = now
        # Not written yet: a batch writes its applications, rounds and events together at its end.
        if app.status == OPEN:
            await self.evaluate(repo, app, "submitted", now, always=True)

    async def on_info_provided(self, repo: Repository, data: ApplicationInfoProvided, now: dt.datetime) -> None:
        app = await repo.application(data.application_id, for_update=True)
        if app is None:
            app = ApplicationRow(
                application_id=data.application_id,
                resident_id=data.resident_id,
                status=PENDING,
                declared={},
                answered_at={},
                round=0,
                updated_at=now,
            )
            repo.session.add(app)
            merge_answers(app, data.answers, data.provided_at)
            return
        merge_answers(app, data.answers, data.provided_at)
        app.updated_at = now
        if app.status == OPEN:
            await self.evaluate(repo, app, "info_provided", now, always=True)

    async def on_withdrawn(self, repo: Repository, data: ApplicationWithdrawn, now: dt.datetime) -> None:
        app = await repo.application(data.application_id, for_update=True)
        if app is None:
            repo.session.add(
                ApplicationRow(
                    application_id=data.application_id,
                    resident_id=data.resident_id,
                    status=PENDING,
                    declared={},
                    answered_at={},
                    round=0,
                    withdrawn_at=data.withdrawn_at,
                    updated_at=now,
                )
            )
            return
        app.withdrawn_at = app.withdrawn_at or data.withdrawn_at
        if app.status == OPEN:
            app.status = WITHDRAWN
        app.updated_at = now

    async def on_resident_updated(self, repo: Repository, data: ResidentUpdated, now: dt.datetime) -> None:
        row = await repo.resident_or_new(data.resident_id)
        if row.registry_version is not None and data.version <= row.registry_version:
            return  # an older (or the same) version arriving late
        row.registry_version = data.version
        row.birth_date = data.birth_date
        row.district_code = data.district_code
        row.household = [m.model_dump(mode="json") for m in data.household]
        row.vulnerability = [v.value for v in data.vulnerability]
        row.preferred_language = data.preferred_language.value
        row.registry_updated_at = data.updated_at
        await repo.session.flush()
        if row.proactive_screening:
            await triggers.queue(repo, data.resident_id, "registry_updated", now)
        for app in await repo.open_applications(data.resident_id):
            context = dict(app.resident_context or {})
            context.update(
                district_code=data.district_code,
                preferred_language=data.preferred_language.value,
                vulnerability=[v.value for v in data.vulnerability],
            )
            app.resident_context = context
            # The registry is a fact source like any other: a new round only if an outcome changed.
            await self.evaluate(repo, app, "registry_updated", now, always=False)

    async def on_consent_changed(self, repo: Repository, data: ConsentChanged, now: dt.datetime) -> None:
        row = await repo.resident_or_new(data.resident_id)
        if row.consent_version is not None and data.version <= row.consent_version:
            return
        reasons = triggers.consent_reasons(row.consents, data.consents)
        row.consent_version = data.version
        row.consents = dict(data.consents)
        row.consent_changed_at = data.changed_at
        row.proactive_screening = bool(data.consents.get("proactive_screening", False))
        await repo.session.flush()
        for reason in reasons:
            await triggers.queue(repo, data.resident_id, reason, now)
        await self.reevaluate_resident(repo, data.resident_id, "consent_changed", now)

    async def on_facts_reported(self, repo: Repository, data: FactsReported, now: dt.datetime) -> None:
        result = await self.record_report(
            repo,
            report_id=data.report_id,
            resident_id=data.resident_id,
            department=data.department.value,
            source=data.source,
            facts=data.facts,
            reported_at=data.reported_at,
            now=now,
            strict=False,
        )
        for problem in result.problems:
            # The fact's name is not personal data; its value may be, and is never logged.
            log.warning(
                "reported fact ignored",
                extra={"report_id": str(data.report_id), "field": problem.field, "reason": problem.message},
            )

    # ------------------------------------------------------------------------------------------ facts

    async def record_report(
        self,
        repo: Repository,
        *,
        report_id: uuid.UUID,
        resident_id: uuid.UUID,
        department: str,
        source: str,
        facts: Sequence[ReportedFact],
        reported_at: dt.datetime,
        now: dt.datetime,
        strict: bool,
    ) -> ReportResult:
        """Store a department's report and re-evaluate the resident's open applications. With ``strict`` (the HTTP
        path) any unfit fact refuses the whole report; from the bus, unfit facts are skipped and the rest kept."""
        catalogue = await self.store.get(repo)
        if await repo.report_seen(report_id):
            return ReportResult(report_id, 0)
        if await repo.erased(resident_id):
            # The resident's data was erased here: a department's report about them is not stored again.
            return ReportResult(report_id, 0)
        problems = check_report(catalogue, department, facts, now)
        if problems and strict:
            return ReportResult(report_id, 0, problems)
        bad = {p.index for p in problems}
        accepted = 0
        repo.facts_changed(resident_id)
        for index, fact in enumerate(facts):
            if index in bad:
                continue
            repo.session.add(
                DepartmentFactRow(
                    report_id=report_id,
                    resident_id=resident_id,
                    name=fact.name,
                    value=catalogue.facts.coerce_json(fact.name, fact.value),
                    department=department,
                    source=source,
                    observed_at=_aware(fact.observed_at),
                    valid_until=_aware(fact.valid_until) if fact.valid_until is not None else None,
                    reported_at=reported_at,
                )
            )
            accepted += 1
        if not accepted:
            return ReportResult(report_id, 0, problems)
        await repo.session.flush()
        resident = await repo.resident(resident_id)
        if resident is not None and resident.proactive_screening:
            await triggers.queue(repo, resident_id, "facts_reported", now)
        reevaluated, new_rounds = await self.reevaluate_resident(repo, resident_id, "facts_reported", now)
        return ReportResult(report_id, accepted, problems, reevaluated, new_rounds)

    async def reevaluate_resident(
        self, repo: Repository, resident_id: uuid.UUID, trigger: Trigger, now: dt.datetime
    ) -> tuple[int, int]:
        """Re-evaluate the resident's open applications; a new round only where an outcome changed."""
        apps = await repo.open_applications(resident_id)
        new_rounds = 0
        for app in apps:
            if await self.evaluate(repo, app, trigger, now, always=False):
                new_rounds += 1
        return len(apps), new_rounds

    # ------------------------------------------------------------------------------------------ evaluating

    async def evaluate(
        self, repo: Repository, app: ApplicationRow, trigger: Trigger, now: dt.datetime, *, always: bool
    ) -> bool:
        """Evaluate an open application and, when ``always`` or when an outcome changed, store a new round and emit
        ``eligibility.determined``. Returns whether a round was emitted."""
        catalogue = await self.store.get(repo)
        assert app.application_date is not None
        layers = await repo.layers_for(app.resident_id, app.declared)
        evaluated = self._prepared.pop(_inputs(catalogue, app, layers, now), None)
        if evaluated is None:
            evaluated = _run_rules(catalogue, app, layers, now)
        determinations, rejected = evaluated
        if rejected:
            log.info(
                "declared answers ignored",
                extra={"application_id": str(app.application_id), "facts": sorted(rejected)},
            )
        if not always and app.round > 0:
            previous = await repo.round_determinations(app.application_id, app.round)
            if outcome_signature(d.determination for d in previous) == outcome_signature(determinations):
                return False
        app.round += 1
        app.updated_at = now
        determination_id = uuid.uuid4()
        repo.session.add(
            EvaluationRoundRow(
                determination_id=determination_id,
                application_id=app.application_id,
                round=app.round,
                trigger=trigger,
                evaluated_at=now,
            )
        )
        await repo.add_determinations(
            [
                {
                    "application_id": app.application_id,
                    "resident_id": app.resident_id,
                    "round": app.round,
                    "program_code": d["program_code"],
                    "rule_version": d["rule_version"],
                    "outcome": d["outcome"],
                    "amount": d["amount"],
                    "determination": d,
                    "evaluated_at": now,
                }
                for d in determinations
            ]
        )
        await self.outbox.emit(
            repo.session,
            EligibilityDetermined(
                determination_id=determination_id,
                application_id=app.application_id,
                resident_id=app.resident_id,
                round=app.round,
                trigger=trigger,
                application_date=app.application_date,
                evaluated_at=now,
                resident=resident_context(app),
                programs=[ProgramDetermination.model_validate(d) for d in determinations],
            ),
            subject=str(app.application_id),
        )
        log.info(
            "application evaluated",
            extra={
                "application_id": str(app.application_id),
                "round": app.round,
                "trigger": trigger,
                "programs": len(determinations),
                "catalogue_revision": catalogue.revision,
            },
        )
        return True


async def application_determinations(
    repo: Repository, principal: Principal, application_id: uuid.UUID, round_: int | None
) -> ApplicationDeterminations:
    """An application's latest round (or round ``round_``) with its explanations, and the list of its rounds, for
    whoever may read it (:func:`services.eligibility.repository.application_scope`: its resident; a caseworker or
    supervisor while a case of it is in one of their offices; an administrator). To anyone else it does not exist.
    Staff reads are audited."""
    app = await repo.visible_application(principal, application_id)
    if app is None or app.status == PENDING:
        raise NotFound(f"No application {application_id}.")
    history = await repo.rounds(application_id)
    chosen = history[-1] if history and round_ is None else next((r for r in history if r.round == round_), None)
    if round_ is not None and chosen is None:
        raise NotFound(f"Application {application_id} has no round {round_}.")
    rows = await repo.round_determinations(application_id, chosen.round) if chosen else []
    if principal.is_staff:
        await audit_log.record(
            repo.session,
            principal,
            resident_id=app.resident_id,
            action="read_determinations",
            record_type="application",
            record_id=application_id,
            purpose="case review",
        )
    return ApplicationDeterminations.model_validate(
        {
            "application_id": app.application_id,
            "resident_id": app.resident_id,
            "status": app.status,
            "life_event": app.life_event,
            "application_date": app.application_date,
            "round": chosen.round if chosen else 0,
            "trigger": chosen.trigger if chosen else None,
            "evaluated_at": chosen.evaluated_at if chosen else None,
            "determination_id": chosen.determination_id if chosen else None,
            "programs": [r.determination for r in rows],
            "rounds": [
                RoundOut(
                    round=r.round, trigger=r.trigger, evaluated_at=r.evaluated_at, determination_id=r.determination_id
                )
                for r in history
            ],
        }
    )


class _Ahead:
    """What a batch's events will have made known, played forward in memory over what the database holds (for
    :meth:`Eligibility.prepare`): the applications as the batch leaves them, and per resident the registry, the
    consents and the department facts the batch adds — as the handlers will store them."""

    def __init__(self, repo: Repository, catalogue: Catalogue, now: dt.datetime) -> None:
        self.repo, self.catalogue, self.now = repo, catalogue, now
        self.applications: dict[uuid.UUID, ApplicationRow] = {}
        self.registry: dict[uuid.UUID, dict[str, Any]] = {}
        self.consents: dict[uuid.UUID, dict[str, bool]] = {}
        self.facts: dict[uuid.UUID, list[ReportedValue]] = collections.defaultdict(list)
        self.reports: set[uuid.UUID] = set()
        self.versions: dict[tuple[uuid.UUID, str], int | None] = {}

    async def application(self, application_id: uuid.UUID) -> ApplicationRow | None:
        return self.applications.get(application_id) or await self.repo.application(application_id)

    def opened(self, app: ApplicationRow) -> None:
        self.applications[app.application_id] = app

    async def open_applications(self, resident_id: uuid.UUID) -> list[ApplicationRow]:
        """The resident's open applications as the handler will find them (those the batch opened included)."""
        found = {a.application_id: a for a in await self.repo.open_applications(resident_id, for_update=False)}
        found.update({k: a for k, a in self.applications.items() if a.resident_id == resident_id})
        return [a for a in found.values() if a.status == OPEN]

    def reported(self, data: FactsReported) -> bool:
        """The facts of a report the handler will keep (it skips what the catalogue refuses); False when none."""
        if data.report_id in self.reports:
            return False
        self.reports.add(data.report_id)
        bad = {p.index for p in check_report(self.catalogue, data.department.value, data.facts, self.now)}
        kept = [
            ReportedValue(
                fact.name,
                self.catalogue.facts.coerce_json(fact.name, fact.value),
                data.department.value,
                data.source,
                _aware(fact.observed_at),
                _aware(fact.valid_until) if fact.valid_until is not None else None,
            )
            for index, fact in enumerate(data.facts)
            if index not in bad
        ]
        self.facts[data.resident_id].extend(kept)
        return bool(kept)

    async def _newer(self, resident_id: uuid.UUID, kind: str, version: int) -> bool:
        """Whether the event's version is newer than what is known (the handlers ignore a late, older one)."""
        key = (resident_id, kind)
        if key not in self.versions:
            row = await self.repo.resident(resident_id)
            self.versions[key] = None if row is None else getattr(row, f"{kind}_version")
        known = self.versions[key]
        if known is not None and version <= known:
            return False
        self.versions[key] = version
        return True

    async def consented(self, data: ConsentChanged) -> None:
        if await self._newer(data.resident_id, "consent", data.version):
            self.consents[data.resident_id] = dict(data.consents)

    async def registered(self, data: ResidentUpdated) -> None:
        if await self._newer(data.resident_id, "registry", data.version):
            self.registry[data.resident_id] = registry_facts(
                birth_date=data.birth_date,
                district_code=data.district_code,
                household=[m.model_dump(mode="json") for m in data.household],
                vulnerability=[v.value for v in data.vulnerability],
            )

    async def inputs(self, app: ApplicationRow) -> tuple[bytes, FactLayers]:
        layers = await self.repo.layers_for(app.resident_id, app.declared)
        resident = app.resident_id
        if resident in self.registry:
            layers.registry = self.registry[resident]
        if resident in self.consents:
            layers.consents = self.consents[resident]
        if self.facts.get(resident):
            layers.reported = [*layers.reported, *self.facts[resident]]
        return _inputs(self.catalogue, app, layers, self.now), layers


def _run_rules(catalogue: Catalogue, app: ApplicationRow, layers: FactLayers, now: dt.datetime) -> Evaluated:
    """The determinations of an application's programs, and the declared answers that were ignored."""
    assert app.application_date is not None
    env = catalogue.environment(app.application_date, layers, now)
    if app.programs:  # an accepted offer: the offered programs, where still in force
        codes = [
            c
            for c in app.programs
            if c in catalogue.programs and catalogue.programs[c].version_on(env.application_date)
        ]
    else:
        codes = catalogue.programs_for(app.life_event, env)
    results = catalogue.evaluate(env, codes)
    return [r.determination(catalogue.facts) for r in results], dict(env.rejected)


def _inputs(catalogue: Catalogue, app: ApplicationRow, layers: FactLayers, now: dt.datetime) -> bytes:
    """Everything an evaluation depends on, as a digest: the catalogue's revision, the day, the life event or the
    offered programs, and what is known of the resident (the department reports that hold ``now``)."""

    def dump(value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)

    reported = sorted(
        dump([r.name, r.value, r.department, r.source, r.observed_at, r.valid_until])
        for r in layers.reported
        if r.valid_at(now)
    )
    inputs = [
        catalogue.revision,
        app.application_date,
        app.life_event,
        app.programs,
        layers.declared,
        layers.registry,
        layers.consents,
    ]
    return hashlib.blake2b(dump(inputs) + b"".join(reported), digest_size=20).digest()


def _ahead(
    app: ApplicationRow | None, application_id: uuid.UUID, resident_id: uuid.UUID, life_event: str | None
) -> ApplicationRow:
    """A detached copy of an application to work ahead on (never added to a session)."""
    copy = ApplicationRow(
        application_id=application_id,
        resident_id=resident_id,
        status=OPEN,
        declared=dict(app.declared or {}) if app is not None else {},
        answered_at=dict(app.answered_at or {}) if app is not None else {},
        round=0,
    )
    copy.life_event = life_event
    copy.application_date = app.application_date if app is not None else None
    copy.withdrawn_at = app.withdrawn_at if app is not None else None
    copy.programs = list(app.programs) if app is not None and app.programs else None
    return copy


def merge_answers(app: ApplicationRow, answers: Mapping[str, Any], at: dt.datetime) -> None:
    declared = dict(app.declared or {})
    times = dict(app.answered_at or {})
    for name, value in answers.items():
        previous = times.get(name)
        if previous is None or dt.datetime.fromisoformat(previous) <= at:
            declared[name] = value
            times[name] = at.isoformat()
    app.declared = declared
    app.answered_at = times


def resident_context(app: ApplicationRow) -> ResidentContext:
    return ResidentContext.model_validate(app.resident_context or {"district_code": "unknown"})


def outcome_signature(determinations: Iterable[Mapping[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What a resident (and routing) sees change: per program, the outcome, amount, rule version and missing facts."""
    return {
        d["program_code"]: (
            d["outcome"],
            d["amount"],
            d["rule_version"],
            tuple(sorted(m["name"] for m in d.get("missing") or ())),
        )
        for d in determinations
    }


def check_report(
    catalogue: Catalogue, department: str, facts: Sequence[ReportedFact], now: dt.datetime
) -> list[FactProblem]:
    """Which reported facts cannot be accepted: unknown or derived names, a department that is no authority for the
    fact, values of the wrong type, impossible validity."""
    problems: list[FactProblem] = []
    seen: set[str] = set()
    for index, fact in enumerate(facts):
        fact_type = catalogue.facts.types.get(fact.name)
        where = f"facts[{index}]"
        if fact_type is None:
            problems.append(FactProblem(index, f"{where}.name", f"'{fact.name}' is not a known fact"))
            continue
        if fact_type.derived:
            inputs = ", ".join(fact_type.inputs)
            problems.append(
                FactProblem(index, f"{where}.name", f"'{fact.name}' is derived from {inputs}; report those")
            )
            continue
        if department not in fact_type.authorities:
            allowed = ", ".join(sorted(fact_type.authorities)) or "no department"
            problems.append(
                FactProblem(
                    index, f"{where}.name", f"{department} is not an authority for '{fact.name}' ({allowed} is)"
                )
            )
            continue
        if fact.name in seen:
            problems.append(FactProblem(index, f"{where}.name", f"'{fact.name}' is reported twice"))
            continue
        seen.add(fact.name)
        try:
            catalogue.facts.coerce(fact.name, fact.value)
        except FactValueError as exc:
            problems.append(FactProblem(index, f"{where}.value", exc.message))
            continue
        observed = _aware(fact.observed_at)
        if observed > now + CLOCK_SKEW:
            problems.append(FactProblem(index, f"{where}.observed_at", "must not be in the future"))
        elif fact.valid_until is not None and _aware(fact.valid_until) <= observed:
            problems.append(FactProblem(index, f"{where}.valid_until", "must be after observed_at"))
    return problems


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
