"""The routing policy and the priority of a case: pure functions over offices and their loads, so the decision table
can be read (and tested) without a database.

Routing, in order (the rule that chose is stored on the case with every candidate considered):

1. The *responsible* offices are those serving the resident's district for the program's department. When none
   does (a district outside the city, or a department no local office covers) the city-wide *fallback* offices for
   that department are responsible instead (rule ``fallback``; the seed has Seoul City Hall for every department).
2. An office *has room* while its weighted load (the sum of the case weights of its open cases) is below its
   active-case ceiling.
3. When the resident's preferred language is not Korean, a responsible office with room that speaks it is chosen
   first; failing that (a responsible office has room but none speaks it), if the program allows overflow, a
   neighbour with room that speaks it (rule ``overflow_language``).
4. Otherwise the least-loaded responsible office with room (rule ``jurisdiction``, or ``fallback``).
5. Otherwise, if the program allows overflow, the least-loaded neighbour with room, preferring one that speaks the
   resident's language (rule ``overflow_capacity``).
6. Otherwise the least-loaded responsible office even though it is full (rule ``over_capacity``): the work stays
   where it belongs and the overload shows in ``GET /v1/capacity``.

When not even a fallback office handles the department (an administrator took it away, or a department is new), the
case is not lost: the least-loaded city-wide office (any office marked ``fallback``, preferring one that speaks the
resident's language) holds it (rule ``unserved``), whatever its load, so it shows in a queue and in the resident's
status, until an office is given the department and the case is transferred there. Only when there is no fallback
office at all is there nowhere to hold it (``NoOfficeServes``).

"Least loaded" compares utilisation (load / ceiling), then load, then the office code (so the choice is stable).
A case whose office does not speak the resident's language is flagged ``interpreter_needed``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from services.routing.sla import WorkingCalendar
from shared.events import Vulnerability

KOREAN = "ko"


class Rule(StrEnum):
    JURISDICTION = "jurisdiction"
    FALLBACK = "fallback"
    OVERFLOW_LANGUAGE = "overflow_language"
    OVERFLOW_CAPACITY = "overflow_capacity"
    OVER_CAPACITY = "over_capacity"
    UNSERVED = "unserved"


@dataclass(frozen=True)
class OfficeView:
    """What the policy needs to know of an office."""

    code: str
    departments: frozenset[str]
    districts: frozenset[str]
    languages: frozenset[str]
    ceiling: float
    neighbours: tuple[str, ...] = ()
    fallback: bool = False

    def serves(self, district: str, department: str) -> bool:
        return department in self.departments and district in self.districts


@dataclass(frozen=True)
class Candidate:
    office_code: str
    role: Literal["responsible", "fallback", "neighbour"]
    load: float
    ceiling: float
    has_room: bool
    speaks_language: bool

    @property
    def utilisation(self) -> float:
        return self.load / self.ceiling if self.ceiling > 0 else float("inf")


@dataclass(frozen=True)
class RoutingDecision:
    office_code: str
    rule: Rule
    explanation: str
    district_code: str
    department: str
    language: str
    language_matched: bool
    overflow_allowed: bool
    candidates: tuple[Candidate, ...]

    @property
    def interpreter_needed(self) -> bool:
        return not self.language_matched

    def as_record(self) -> dict[str, Any]:
        """The decision as stored with its case (JSON), its fields in order. Made field by field, not by ``asdict``,
        whose deep copy of each value cost as much as the rest of the case's routing decision."""
        return {
            "office_code": self.office_code,
            "rule": self.rule.value,
            "explanation": self.explanation,
            "district_code": self.district_code,
            "department": self.department,
            "language": self.language,
            "language_matched": self.language_matched,
            "overflow_allowed": self.overflow_allowed,
            "candidates": [
                {
                    "office_code": c.office_code,
                    "role": c.role,
                    "load": c.load,
                    "ceiling": c.ceiling,
                    "has_room": c.has_room,
                    "speaks_language": c.speaks_language,
                }
                for c in self.candidates
            ],
        }


class NoOfficeServes(LookupError):
    """No office handles the department and there is no city-wide fallback office to hold the case: an administrator
    has to add one."""


def _least_loaded_key(candidate: Candidate) -> tuple[float, float, str]:
    return (candidate.utilisation, candidate.load, candidate.office_code)


class Offices:
    """Offices indexed by what routing looks them up by: those serving a district for a department, the city-wide
    ones for a department, and all the city-wide ones, each in code order. Made once for the many cases routed
    among the same offices (a consumer's transaction), instead of every office tested for every case."""

    def __init__(self, offices: Iterable[OfficeView]) -> None:
        self.by_code = {o.code: o for o in offices}  # the last of one code counts
        ordered = sorted(self.by_code.values(), key=lambda o: o.code)
        self._serving: dict[tuple[str, str], list[OfficeView]] = {}
        self._fallback: dict[str, list[OfficeView]] = {}
        self.fallbacks = [o for o in ordered if o.fallback]
        for office in ordered:
            for department in office.departments:
                for district in office.districts:
                    self._serving.setdefault((district, department), []).append(office)
                if office.fallback:
                    self._fallback.setdefault(department, []).append(office)

    def serving(self, district: str, department: str) -> list[OfficeView]:
        """The offices that serve ``district`` for ``department`` (:meth:`OfficeView.serves`)."""
        return list(self._serving.get((district, department), ()))

    def fallback_for(self, department: str) -> list[OfficeView]:
        """The city-wide offices that handle ``department``."""
        return list(self._fallback.get(department, ()))


def route(
    offices: Iterable[OfficeView] | Offices,
    loads: Mapping[str, float],
    *,
    district_code: str,
    department: str,
    language: str = KOREAN,
    overflow_allowed: bool = False,
) -> RoutingDecision:
    """Choose the office for one case (see the module docstring for the rules). ``offices`` indexed once
    (:class:`Offices`) when many cases are routed among them."""
    index = offices if isinstance(offices, Offices) else Offices(offices)
    by_code = index.by_code
    primary = index.serving(district_code, department)
    role: Literal["responsible", "fallback"] = "responsible"
    if not primary:
        role = "fallback"
        primary = index.fallback_for(department)
    # Nobody handles the department: a city-wide desk holds the case rather than lose it (see the module docstring).
    unserved = not primary
    if unserved:
        primary = list(index.fallbacks)
    if not primary:
        raise NoOfficeServes(
            f"no office handles {department} for district {district_code}, and there is no city-wide fallback "
            "office to hold the case"
        )
    base_rule = Rule.JURISDICTION if role == "responsible" else Rule.FALLBACK

    neighbours: list[OfficeView] = []
    if overflow_allowed and not unserved:
        primary_codes = {o.code for o in primary}
        seen: set[str] = set()
        for office in primary:
            for code in office.neighbours:
                other = by_code.get(code)
                if other is None or code in primary_codes or code in seen or department not in other.departments:
                    continue
                seen.add(code)
                neighbours.append(other)

    def candidate(office: OfficeView, kind: Literal["responsible", "fallback", "neighbour"]) -> Candidate:
        load = float(loads.get(office.code, 0.0))
        return Candidate(
            office_code=office.code,
            role=kind,
            load=round(load, 3),
            ceiling=office.ceiling,
            has_room=load < office.ceiling,
            speaks_language=language in office.languages,
        )

    primary_c = [candidate(o, role) for o in primary]
    neighbour_c = [candidate(o, "neighbour") for o in neighbours]
    needs_language = language != KOREAN

    def decide(chosen: Candidate, rule: Rule, why: str) -> RoutingDecision:
        return RoutingDecision(
            office_code=chosen.office_code,
            rule=rule,
            explanation=why,
            district_code=district_code,
            department=department,
            language=language,
            language_matched=chosen.speaks_language,
            overflow_allowed=overflow_allowed,
            candidates=tuple(primary_c + neighbour_c),
        )

    serving = (
        f"serves district {district_code} for {department}"
        if role == "responsible"
        else f"is the city-wide office for {department} (no office serves district {district_code} for it)"
    )
    if unserved:
        chosen = min(primary_c, key=lambda c: (needs_language and not c.speaks_language, *_least_loaded_key(c)))
        return decide(
            chosen,
            Rule.UNSERVED,
            f"No office handles {department} for district {district_code}, not even a city-wide fallback office; "
            f"{chosen.office_code}, a city-wide desk, holds the case until an administrator gives an office "
            f"{department} and the case is transferred there.",
        )
    with_room = [c for c in primary_c if c.has_room]
    neighbours_with_room = [c for c in neighbour_c if c.has_room]

    if needs_language:
        speaking = [c for c in with_room if c.speaks_language]
        if speaking:
            chosen = min(speaking, key=_least_loaded_key)
            return decide(chosen, base_rule, f"{chosen.office_code} {serving}, has room and speaks '{language}'.")
        # Only language moves the case here: a full responsible office is a capacity overflow (below).
        speaking = [c for c in neighbours_with_room if c.speaks_language] if with_room else []
        if speaking:
            chosen = min(speaking, key=_least_loaded_key)
            return decide(
                chosen,
                Rule.OVERFLOW_LANGUAGE,
                f"No responsible office with room speaks '{language}'; the program allows overflow, so the "
                f"neighbouring office {chosen.office_code}, which does and has room, takes it.",
            )
    if with_room:
        chosen = min(with_room, key=_least_loaded_key)
        return decide(chosen, base_rule, f"{chosen.office_code} {serving} and has room.")
    if neighbours_with_room:
        chosen = min(
            neighbours_with_room, key=lambda c: (needs_language and not c.speaks_language, *_least_loaded_key(c))
        )
        return decide(
            chosen,
            Rule.OVERFLOW_CAPACITY,
            f"{_full(primary_c)}; the program allows overflow, so the least-loaded neighbour with room, "
            f"{chosen.office_code} ({_load(chosen)}), takes it.",
        )
    chosen = min(primary_c, key=_least_loaded_key)
    if not overflow_allowed:
        why = "the program does not allow overflow"
    elif neighbour_c:
        why = "no neighbour has room"
    else:
        why = "it has no neighbour handling this department"
    return decide(
        chosen,
        Rule.OVER_CAPACITY,
        f"{chosen.office_code} {serving}; it is at or over its ceiling ({_load(chosen)}), but {why}.",
    )


def _load(candidate: Candidate) -> str:
    return f"load {candidate.load:g} of {candidate.ceiling:g}"


def _full(responsible: Sequence[Candidate]) -> str:
    """Names the responsible office(s) that were full, with their load, so the explanation says who and why."""
    named = ", ".join(f"{c.office_code} ({_load(c)})" for c in responsible)
    return (
        f"The responsible office {named} is at or over its ceiling"
        if len(responsible) == 1
        else (f"The responsible offices {named} are at or over their ceilings")
    )


# ---------------------------------------------------------------------------------------------- priority

ROUTINE, ELEVATED, HIGH, URGENT = 1, 2, 3, 4
PRIORITY_NAMES = {ROUTINE: "routine", ELEVATED: "elevated", HIGH: "high", URGENT: "urgent"}
# Flags that on their own raise a case to high: a child heading a household, an elderly person living alone.
SEVERE_FLAGS = frozenset(
    {Vulnerability.CHILD_HEAD_OF_HOUSEHOLD.value, Vulnerability.ELDERLY_ALONE.value, Vulnerability.CRISIS.value}
)


def priority(
    vulnerability: Sequence[str],
    *,
    due_date: dt.date | None,
    today: dt.date,
    calendar: WorkingCalendar,
    due_soon_working_days: int,
    escalated: bool = False,
) -> int:
    """1 routine .. 4 urgent. Any vulnerability flag raises it one level, two flags or a severe one another; a due
    date at most ``due_soon_working_days`` working days away (or past) one more; an escalated case is urgent."""
    if escalated:
        return URGENT
    level = ROUTINE
    flags = set(vulnerability)
    if flags:
        level += 1
    if len(flags) >= 2 or flags & SEVERE_FLAGS:
        level += 1
    if due_date is not None and calendar.working_days_between(today, due_date) <= due_soon_working_days:
        level += 1
    return min(level, URGENT)
