"""The program catalogue in memory: programs with their compiled rule versions, the fact types, the reference tables
and the life events; and the evaluation of many programs against one resident's facts.

The catalogue is data: ``catalogue/*.yaml`` seeds the database (see seed.py), the database is the truth at run time,
and every rule version is compiled once (cached by content) however often the catalogue is reloaded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from services.eligibility.facts import (
    CATALOGUE_DIR,
    NO_DISTRICT_TIERS,
    DistrictTiers,
    Environment,
    FactCatalogue,
    FactLayers,
    MedianIncomeTable,
    MedianIncomeYear,
    build_environment,
    median_income_years,
)
from services.eligibility.rules.compile import RuleInvalid, broken_rule, compile_version
from services.eligibility.rules.evaluate import ProgramOutcome, evaluate_rule, is_relevant
from services.eligibility.rules.lint import find_cycle
from services.eligibility.rules.nodes import CompiledRule
from services.eligibility.specs import ProgramAttributes, ProgramEntry, VersionSpec, VersionStatus, version_document
from shared.events import Outcome
from shared.problems import UnprocessableContent
from shared.yamlfile import load_yaml

log = logging.getLogger(__name__)


def content_hash(document: Any) -> str:
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


# ---------------------------------------------------------------------------------------------- programs


class Versioned(Protocol):
    """A rule version as compiled (:class:`RuleVersion`) or as stored (``RuleVersionRow``)."""

    @property
    def version(self) -> int: ...

    @property
    def effective_from(self) -> dt.date: ...

    @property
    def effective_to(self) -> dt.date | None: ...

    @property
    def superseded(self) -> bool: ...


V = TypeVar("V", bound=Versioned)


def in_force_on(version: Versioned, day: dt.date) -> bool:
    """Whether ``version`` applies on ``day``: not superseded, in effect by then and not ended."""
    return (
        not version.superseded
        and version.effective_from <= day
        and (version.effective_to is None or day <= version.effective_to)
    )


def version_in_force(versions: Iterable[V], day: dt.date) -> V | None:
    """The version in force on ``day``: of those that apply then, the latest to take effect (then the highest
    number). The one rule for every reader of the catalogue, compiled or stored."""
    found: V | None = None
    for version in versions:
        if in_force_on(version, day) and (
            found is None or (version.effective_from, version.version) > (found.effective_from, found.version)
        ):
            found = version
    return found


def version_status(version: Versioned, current: Versioned | None, day: dt.date) -> VersionStatus:
    """Where ``version`` stands on ``day``, given the version in force then (``current``)."""
    if version.superseded:
        return "superseded"
    if version is current:
        return "in_force"
    if version.effective_from > day:
        return "scheduled"
    if version.effective_to is not None and version.effective_to < day:
        return "ended"
    return "replaced"


@dataclass(eq=False)
class RuleVersion:
    version: int
    spec: VersionSpec
    rule: CompiledRule
    superseded: bool = False
    template: dict[str, Any] = field(default_factory=dict)
    amount_period: str | None = None

    @property
    def effective_from(self) -> dt.date:
        return self.spec.effective_from

    @property
    def effective_to(self) -> dt.date | None:
        return self.spec.effective_to


@dataclass(eq=False)
class Program:
    code: str
    attributes: ProgramAttributes
    versions: list[RuleVersion]
    name: dict[str, str] = field(init=False)
    department: str = field(init=False)
    _by_day: dict[dt.date, RuleVersion | None] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.attributes.name.model_dump()
        self.department = self.attributes.department.value
        a = self.attributes
        for version in self.versions:
            # What every determination by this version repeats, made once.
            version.template = {
                "program_code": self.code,
                "program_name": self.name,
                "department": self.department,
                "rule_version": version.version,
                "automatic": a.automatic,
                "sla_days": a.sla_days,
                "overflow_allowed": a.overflow_allowed,
                "case_weight": a.case_weight,
            }
            version.amount_period = version.spec.amount.period if version.spec.amount is not None else None

    def version_on(self, day: dt.date) -> RuleVersion | None:
        """The version in force on ``day`` (see :func:`version_in_force`), remembered for the days asked."""
        try:
            return self._by_day[day]
        except KeyError:
            pass
        found = version_in_force(self.versions, day)
        if len(self._by_day) > 512:
            self._by_day.clear()
        self._by_day[day] = found
        return found


@dataclass(frozen=True)
class ProgramData:
    """A program as stored (or as written in YAML), before compilation."""

    code: str
    attributes: ProgramAttributes
    versions: Sequence[tuple[int, VersionSpec, bool]]  # (number, spec, superseded)


@dataclass(frozen=True)
class LifeEventInfo:
    code: str
    name: Mapping[str, str]
    description: Mapping[str, str] | None = None


@dataclass(frozen=True)
class DepartmentInfo:
    code: str
    name: Mapping[str, str]


# Rules compiled in this process, shared by every CompileCache: a service compiles its catalogue when it seeds and
# again when it serves it, and the test suite makes a service per test (hundreds of compilations of one catalogue).
# Bounded: a catalogue has a few hundred versions; edited catalogues add theirs.
COMPILED_KEPT = 4096
_compiled: OrderedDict[tuple[str, frozenset[str], str, str, str], CompiledRule] = OrderedDict()
_compiled_lock = threading.Lock()


class CompileCache:
    """Compiled rules by what compiling reads: the fact catalogue (by its fingerprint), the programs a rule may name,
    the program's code, the version's content and its node ids' prefix. A catalogue reload compiles only versions
    not seen before; compiled rules are never changed once made, so one serves every catalogue that has it."""

    def get(
        self, facts: FactCatalogue, codes: Iterable[str], code: str, spec: VersionSpec, *, prefix: str = ""
    ) -> CompiledRule:
        key = (facts.fingerprint, frozenset(codes), code, content_hash(version_document(spec)), prefix)
        with _compiled_lock:
            rule = _compiled.get(key)
            if rule is not None:
                _compiled.move_to_end(key)
                return rule
        rule = compile_version(spec, facts, set(codes), own_code=code, prefix=prefix)
        with _compiled_lock:
            _compiled[key] = rule
            while len(_compiled) > COMPILED_KEPT:
                _compiled.popitem(last=False)
        return rule


# ---------------------------------------------------------------------------------------------- results


@dataclass(slots=True)
class ProgramResult:
    program: Program
    version: RuleVersion
    outcome: ProgramOutcome

    def determination(self, facts: FactCatalogue) -> dict[str, Any]:
        """The ``ProgramDetermination`` (shared.events) of this result, as plain data."""
        outcome = self.outcome
        amount = outcome.amount
        out = dict(self.version.template)
        out["outcome"] = outcome.outcome
        out["amount"] = amount
        out["amount_period"] = self.version.amount_period if amount is not None else None
        out["criteria"] = outcome.criteria
        out["missing"] = [facts.missing_fact(name) for name in outcome.missing] if outcome.missing else []
        out["error"] = outcome.error
        return out


class Evaluation:
    """Programs evaluated against one environment; a program another one requires is evaluated once."""

    def __init__(self, catalogue: Catalogue, env: Environment, *, explain: bool = True) -> None:
        self.catalogue = catalogue
        self.env = env
        self.explain = explain
        self.results: dict[str, ProgramResult] = {}
        self._active: set[str] = set()
        self._in_force = catalogue.versions_on(env.application_date)

    def result(self, code: str) -> ProgramResult | None:
        done = self.results.get(code)
        if done is not None:
            return done
        found = self._in_force.get(code)
        if found is None:
            return None
        program, version = found
        if not version.rule.refs:
            outcome = evaluate_rule(version.rule, self.env, self._outcome_of, explain=self.explain)
        elif code in self._active:  # refused when versions are added; kept as a last guard
            outcome = ProgramOutcome(
                Outcome.NEEDS_REVIEW, error=f"program {code} requires itself through other programs"
            )
            return ProgramResult(program, version, outcome)
        else:
            self._active.add(code)
            try:
                outcome = evaluate_rule(version.rule, self.env, self._outcome_of, explain=self.explain)
            finally:
                self._active.discard(code)
        result = ProgramResult(program, version, outcome)
        self.results[code] = result
        return result

    def _outcome_of(self, code: str) -> ProgramOutcome:
        result = self.result(code)
        if result is None:
            return ProgramOutcome(Outcome.NEEDS_REVIEW, error=f"program {code} has no rule in force on this date")
        return result.outcome


# ---------------------------------------------------------------------------------------------- the catalogue


class Catalogue:
    def __init__(
        self,
        *,
        facts: FactCatalogue,
        medians: MedianIncomeTable,
        programs: Iterable[Program],
        life_events: Iterable[LifeEventInfo],
        departments: Iterable[DepartmentInfo],
        revision: int = 0,
        districts: DistrictTiers | None = None,
    ) -> None:
        self.facts = facts
        self.medians = medians
        self.districts = districts if districts is not None else NO_DISTRICT_TIERS
        self.programs: dict[str, Program] = {p.code: p for p in programs}
        self.life_events: dict[str, LifeEventInfo] = {e.code: e for e in life_events}
        self.departments: dict[str, DepartmentInfo] = {d.code: d for d in departments}
        self.revision = revision
        self._by_day: dict[dt.date, dict[str, tuple[Program, RuleVersion]]] = {}
        self.by_life_event: dict[str, list[str]] = {code: [] for code in self.life_events}
        for program in self.programs.values():
            for event in program.attributes.life_events:
                self.by_life_event.setdefault(event.value, []).append(program.code)

    @classmethod
    def build(
        cls,
        *,
        facts: FactCatalogue,
        medians: MedianIncomeTable,
        programs: Iterable[ProgramData],
        life_events: Iterable[LifeEventInfo],
        departments: Iterable[DepartmentInfo],
        cache: CompileCache | None = None,
        revision: int = 0,
        strict: bool = True,
        districts: DistrictTiers | None = None,
    ) -> Catalogue:
        """Compile every version. ``strict`` (seeding, tests) refuses any broken version; otherwise (serving from the
        database) a version that no longer compiles is kept as one that always needs review, and logged."""
        cache = cache or CompileCache()
        data = list(programs)
        codes = [p.code for p in data]
        built = []
        errors: list[dict[str, str]] = []
        for p in data:
            versions = []
            for number, spec, superseded in p.versions:
                try:
                    rule = cache.get(facts, codes, p.code, spec, prefix=f"{p.code}.v{number}.")
                except RuleInvalid as exc:
                    if strict:
                        errors.extend(exc.errors)
                        continue
                    log.error("a stored rule version no longer compiles", extra={"program": p.code, "version": number})
                    rule = broken_rule(f"rule version {number} no longer compiles: {exc}"[:1000])
                versions.append(RuleVersion(number, spec, rule, superseded))
            built.append(Program(p.code, p.attributes, versions))
        if errors:
            raise RuleInvalid(errors)
        cycle = find_cycle({p.code: requires(p) for p in built})
        if cycle and strict:
            raise RuleInvalid([{"field": cycle[0], "message": f"programs require each other: {' -> '.join(cycle)}"}])
        return cls(
            facts=facts,
            medians=medians,
            programs=built,
            life_events=life_events,
            departments=departments,
            revision=revision,
            districts=districts,
        )

    # ------------------------------------------------------------------ evaluating

    def environment(self, application_date: dt.date, layers: FactLayers, now: dt.datetime) -> Environment:
        return build_environment(self.facts, self.medians, application_date, layers, now, districts=self.districts)

    def programs_for(self, life_event: str | None, env: Environment) -> list[str]:
        """The programs an application is judged for: its life event's, and any other whose ``relevant_when`` the
        facts make true — each only if it has a rule version in force on the application date."""
        day = env.application_date
        codes = [c for c in self.by_life_event.get(life_event or "", ()) if self.programs[c].version_on(day)]
        chosen = set(codes)
        for program in self.programs.values():
            if program.code in chosen:
                continue
            version = program.version_on(day)
            if version is not None and version.rule.relevant_when is not None and is_relevant(version.rule, env):
                codes.append(program.code)
        return codes

    def evaluate(self, env: Environment, codes: Iterable[str], *, explain: bool = True) -> list[ProgramResult]:
        evaluation = Evaluation(self, env, explain=explain)
        out = []
        for code in codes:
            result = evaluation.result(code)
            if result is not None:
                out.append(result)
        return out

    def in_force(self, day: dt.date) -> list[str]:
        return list(self.versions_on(day))

    def versions_on(self, day: dt.date) -> dict[str, tuple[Program, RuleVersion]]:
        """Each program with a version in force on ``day``, with that version (kept for the last few days asked)."""
        found = self._by_day.get(day)
        if found is None:
            found = {}
            for code, program in self.programs.items():
                version = program.version_on(day)
                if version is not None:
                    found[code] = (program, version)
            if len(self._by_day) > 64:
                self._by_day.clear()
            self._by_day[day] = found
        return found


def named_programs(catalogue: Catalogue, codes: list[str], day: dt.date, *, field: str) -> list[str]:
    """The programs a request names (once each, in its order), each known and with a version in force on ``day``;
    refuses the request naming every one that is not."""
    errors = []
    for i, code in enumerate(codes):
        program = catalogue.programs.get(code)
        if program is None:
            errors.append({"field": f"{field}[{i}]", "message": f"there is no program '{code}'", "type": "unknown"})
        elif program.version_on(day) is None:
            message = f"'{code}' has no rule version in force on {day.isoformat()}"
            errors.append({"field": f"{field}[{i}]", "message": message, "type": "not_in_force"})
    if errors:
        raise UnprocessableContent(f"Unknown programs: {', '.join(e['field'] for e in errors)}", errors=errors)
    return list(dict.fromkeys(codes))


def requires(program: Program) -> set[str]:
    """The programs any (non-superseded) version of ``program`` requires."""
    out: set[str] = set()
    for version in program.versions:
        if not version.superseded:
            out |= version.rule.refs
    return out


# ---------------------------------------------------------------------------------------------- the YAML files


@dataclass
class CatalogueFiles:
    """The YAML catalogue as written: what seed.py loads and the table-driven tests read directly."""

    facts: FactCatalogue
    median_years: list[MedianIncomeYear]
    programs: list[ProgramEntry]
    life_events: list[LifeEventInfo]
    departments: list[DepartmentInfo]
    sources: dict[str, Path] = field(default_factory=dict)  # program code -> file
    districts: DistrictTiers = NO_DISTRICT_TIERS

    def program_data(self) -> list[ProgramData]:
        return [
            ProgramData(
                p.code,
                ProgramAttributes.model_validate(p.model_dump(exclude={"code", "versions"})),
                [(n, spec, False) for n, spec in enumerate(p.versions, start=1)],
            )
            for p in self.programs
        ]

    def catalogue(self, cache: CompileCache | None = None) -> Catalogue:
        return Catalogue.build(
            facts=self.facts,
            medians=MedianIncomeTable(self.median_years),
            programs=self.program_data(),
            life_events=self.life_events,
            departments=self.departments,
            cache=cache,
            districts=self.districts,
        )


def load_files(directory: Path = CATALOGUE_DIR) -> CatalogueFiles:
    facts = FactCatalogue.load(directory / "facts.yaml")
    median_years = median_income_years(_read(directory / "median_income.yaml"))
    life_events = load_life_events(directory)
    departments = load_departments(directory)
    programs: list[ProgramEntry] = []
    sources: dict[str, Path] = {}
    for path in sorted((directory / "programs").glob("*.yaml")):
        for raw in _read(path)["programs"]:
            entry = ProgramEntry.model_validate(raw)
            if entry.code in sources:
                raise ValueError(f"program {entry.code} is defined in {sources[entry.code]} and {path}")
            sources[entry.code] = path
            programs.append(entry)
    districts = load_district_tiers(directory)
    return CatalogueFiles(facts, median_years, programs, life_events, departments, sources, districts)


def load_district_tiers(directory: Path = CATALOGUE_DIR) -> DistrictTiers:
    """The district tiers are read from the catalogue's files, like the fact types (not seeded into the database)."""
    return DistrictTiers.from_yaml(directory / "district_tiers.yaml")


def load_life_events(directory: Path = CATALOGUE_DIR) -> list[LifeEventInfo]:
    return [
        LifeEventInfo(code, entry["name"], entry.get("description"))
        for code, entry in _read(directory / "life_events.yaml")["life_events"].items()
    ]


def load_departments(directory: Path = CATALOGUE_DIR) -> list[DepartmentInfo]:
    return [
        DepartmentInfo(code, entry["name"])
        for code, entry in _read(directory / "departments.yaml")["departments"].items()
    ]


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(path)
    return data
