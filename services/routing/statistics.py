"""Demand against capacity (for supervisors) and anonymised open data (for anyone).

Open data: cases and decisions by month of arrival, referrals to partners by month and service type, and what
residents said (their ratings) per office, program and channel with take-up, and the take-up of proactive offers per
program and district (found eligible, applied, granted). Every dataset comes with its metadata (DCAT-style: title,
description, licence, update frequency, publisher, each field and its meaning), in the catalogue (``GET
/v1/open-data``) and with its rows.

A count from 1 to k - 1 is never shown (null), where k is the dataset's minimum group size (``open_data_min_count``;
for what residents said ``open_data_feedback_min_group_size``, 10; for the take-up of offers ``take_up_min_group``,
10), and complementary cells are suppressed too, so that a hidden count cannot be recovered by subtraction from its
row or from a published total: within every group of cells that add up to a total someone could know (a row's approved
and denied; a column's cells of one month and department; a column's departments of one month; a program's channels at
one office) either no cell or at least two are hidden. Zero is shown: it identifies nobody. A rate (a share, a mean)
is shown only where the count it is taken over is shown.
"""

from __future__ import annotations

import datetime as dt
import statistics as stats
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from services.routing.context import RoutingContext
from services.routing.models import Case, CaseStatus, Office, ReferralStatus
from services.routing.repository import Repository
from services.routing.schemas import (
    CapacityReport,
    Dataset,
    DatasetField,
    DatasetInfo,
    Distribution,
    ExpectedDemand,
    HouseholdCaseCount,
    Licence,
    OfficeCapacity,
    OfficeDemand,
    OfficeName,
    ProgramDemand,
)
from services.routing.settings import RoutingSettings
from shared.auth import Principal, Role
from shared.events import Decision, Department, Localized
from shared.problems import Forbidden, NotFound

# ---------------------------------------------------------------------------------------------- capacity


async def capacity(
    repo: Repository, ctx: RoutingContext, principal: Principal, office_codes: Sequence[str] | None
) -> CapacityReport:
    """The capacity report of the offices asked for (default: every office the principal may see). Admins see every
    office, supervisors the offices they supervise; asking for another office is a 403 naming it."""
    scope: list[str] | None = None if principal.role is Role.ADMIN else sorted(principal.offices)
    if office_codes:
        outside = [o for o in office_codes if scope is not None and o not in scope]
        if outside:
            raise Forbidden(f"You do not supervise {', '.join(sorted(outside))}.")
        scope = sorted(set(office_codes))
    return await capacity_report(repo, ctx, scope)


async def capacity_report(repo: Repository, ctx: RoutingContext, office_codes: Sequence[str] | None) -> CapacityReport:
    """Per office and program: open work, arrivals, time to decision and SLA compliance over the window."""
    today = ctx.clock.today()
    days = ctx.settings.capacity_window_days
    since = today - dt.timedelta(days=days - 1)
    offices = [o for o in await repo.all_offices() if office_codes is None or o.code in office_codes]
    by_office: dict[str, list[Case]] = defaultdict(list)
    for case in await repo.cases_for_capacity([o.code for o in offices], since):
        by_office[case.office_code].append(case)
    expected = await expected_demand(repo, ctx, [o.code for o in offices])
    reports = [_office_demand(ctx, office, by_office[office.code], since, today, days) for office in offices]
    households = await repo.household_counts([o.code for o in offices])
    loads = await repo.office_loads()
    for report, office in zip(reports, offices, strict=True):
        report.expected_demand = expected.get(report.office_code, [])
        _add_households(report, office, households, loads)
    return CapacityReport(window_days=days, window_start=since, today=today, offices=reports)


async def expected_demand(
    repo: Repository, ctx: RoutingContext, office_codes: Sequence[str]
) -> dict[str, list[ExpectedDemand]]:
    """Per office: the offers standing in its districts for its programs, and the applications they may bring at the
    program's take-up so far (accepted of answered offers, city-wide; none until ``take_up_min_group`` answered)."""
    standing = await repo.standing_offers_by_office(office_codes)
    answered = await repo.answered_offers()
    weights = await repo.program_weights()
    k = ctx.settings.take_up_min_group
    out: dict[str, list[ExpectedDemand]] = defaultdict(list)
    for (office, program, department), count in sorted(standing.items()):
        total, accepted, _ = answered.get(program, (0, 0, department))
        rate = round(accepted / total, 3) if total >= k else None
        expected = round(count * rate, 2) if rate is not None else None
        out[office].append(
            ExpectedDemand(
                program_code=program,
                department=Department(department),
                standing_offers=count,
                take_up_rate=rate,
                expected_applications=expected,
                expected_weighted_load=round(expected * weights.get(program, 1.0), 3) if expected is not None else None,
            )
        )
    return out


def _add_households(
    report: OfficeDemand,
    office: Office,
    counts: dict[tuple[str, str, str], int],
    loads: dict[str, tuple[int, float]],
) -> None:
    """An integrated case-management office's household cases per district; the running ones are its load (as the
    routing policy counts it)."""
    by_district: dict[str, HouseholdCaseCount] = {}
    for (office_code, district, status), n in sorted(counts.items()):
        if office_code != office.code:
            continue
        row = by_district.setdefault(district, HouseholdCaseCount(district_code=district, open=0, active=0, closed=0))
        setattr(row, status, getattr(row, status) + n)
    report.household_cases = list(by_district.values())
    running = sum(r.open + r.active for r in report.household_cases)
    if not running:
        return
    _count_all, weighted_all = loads.get(office.code, (0, 0.0))
    household_weight = weighted_all - sum(p.weighted_load for p in report.programs)
    report.open_cases += running
    report.weighted_load = round(report.weighted_load + max(household_weight, 0.0), 3)
    ceiling = office.active_case_ceiling
    report.utilisation = round(report.weighted_load / ceiling, 3) if ceiling > 0 else None
    report.over_capacity = report.weighted_load >= ceiling


def _office_demand(
    ctx: RoutingContext, office: Office, cases: list[Case], since: dt.date, today: dt.date, days: int
) -> OfficeDemand:
    by_program: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        by_program[case.program_code].append(case)
    programs = [_program_demand(ctx, code, items, since, days) for code, items in sorted(by_program.items())]
    weighted = sum(p.weighted_load for p in programs)
    ceiling = office.active_case_ceiling
    arrivals = sum(p.arrivals for p in programs)
    return OfficeDemand(
        office_code=office.code,
        name=OfficeName(ko=office.name_ko, en=office.name_en),
        capacity=OfficeCapacity(
            caseworker_hours_week=office.caseworker_hours_week, active_case_ceiling=office.active_case_ceiling
        ),
        open_cases=sum(p.open_cases for p in programs),
        weighted_load=round(weighted, 3),
        utilisation=round(weighted / ceiling, 3) if ceiling > 0 else None,
        over_capacity=weighted >= ceiling,
        arrivals_per_day=round(arrivals / days, 3),
        weighted_load_per_caseworker_hour=(
            round(weighted / office.caseworker_hours_week, 3) if office.caseworker_hours_week else None
        ),
        programs=programs,
    )


def _on_time(ctx: RoutingContext, case: Any) -> bool:
    """Decided without a breach, and before a working day after the due date had begun (the timer's rule)."""
    return (
        case.breached_on is None
        and case.decided_on is not None
        and not ctx.calendar.is_late(case.due_date, case.decided_on)
    )


def _program_demand(ctx: RoutingContext, code: str, cases: list[Case], since: dt.date, days: int) -> ProgramDemand:
    active = [c for c in cases if c.status in CaseStatus.ACTIVE]
    arrived = [c for c in cases if c.routed_on >= since]
    decided = [
        c for c in cases if c.status == CaseStatus.DECIDED and c.decided_on is not None and c.decided_on >= since
    ]
    durations = [ctx.calendar.working_days_between(c.routed_on, c.decided_on) for c in decided if c.decided_on]
    on_time = [c for c in decided if _on_time(ctx, c)]
    return ProgramDemand(
        program_code=code,
        department=Department(cases[0].department),
        open_cases=len(active),
        waiting_on_resident=sum(1 for c in active if c.status == CaseStatus.WAITING_ON_RESIDENT),
        weighted_load=round(sum(c.case_weight for c in active), 3),
        arrivals=len(arrived),
        arrivals_per_day=round(len(arrived) / days, 3),
        decided=len(decided),
        median_working_days_to_decision=float(stats.median(durations)) if durations else None,
        sla_compliance=round(len(on_time) / len(decided), 3) if decided else None,
        breached_open=sum(1 for c in active if c.breached_on is not None),
    )


# ---------------------------------------------------------------------------------------------- open data

Rows = list[dict[str, Any]]
Groups = list[list[tuple[int, str]]]
FieldType = Literal["string", "integer", "number"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    title: str
    description: str
    type: FieldType
    nullable: bool = False

    def info(self) -> DatasetField:
        return DatasetField(
            name=self.name, title=self.title, description=self.description, type=self.type, nullable=self.nullable
        )


@dataclass(frozen=True)
class DatasetSpec:
    """One open dataset: its metadata, where its records come from, how they are aggregated, which counts are
    suppressed (and which cells add up to totals someone could know), and the rates taken after suppression."""

    name: str
    title: Localized
    description: str
    keywords: tuple[str, ...]
    fields: tuple[FieldSpec, ...]
    load: Callable[[Repository], Awaitable[Sequence[Any]]]
    build: Callable[[Sequence[Any], RoutingContext], Rows]
    groups: Callable[[Rows], Groups]
    counts: tuple[str, ...]
    # The smallest count shown (default: the settings' open_data_min_count).
    min_group: Callable[[RoutingSettings], int] = lambda settings: settings.open_data_min_count
    # Rates over the counts as shown: (the rows as built, the rows after suppression) -> the published rows.
    rates: Callable[[Rows, Rows], Rows] | None = None

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    def min_group_size(self, ctx: RoutingContext) -> int:
        return self.min_group(ctx.settings)

    def info(self, ctx: RoutingContext) -> DatasetInfo:
        settings, k = ctx.settings, self.min_group_size(ctx)
        return DatasetInfo(
            dataset=self.name,
            title=self.title,
            description=self.description,
            keywords=list(self.keywords),
            publisher=settings.open_data_publisher,
            licence=Licence(name=settings.open_data_licence, url=settings.open_data_licence_url),
            update_frequency="continuous: regenerated from the live records on every request",
            update_frequency_uri=CONTINUOUS,
            min_group_size=k,
            suppression=f"counts from 1 to {k - 1}, complementary cells and rates over them are null",
            columns=self.columns,
            fields=[f.info() for f in self.fields],
            distributions=[
                Distribution(media_type="application/json", access_url=f"/v1/open-data/{self.name}"),
                Distribution(media_type="text/csv", access_url=f"/v1/open-data/{self.name}?format=csv"),
            ],
        )


CONTINUOUS = "http://publications.europa.eu/resource/authority/frequency/UPDATE_CONT"


def _month(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _count(name: str, description: str) -> FieldSpec:
    return FieldSpec(name, name.replace("_", " ").capitalize(), description, "integer", nullable=True)


DEPARTMENT = FieldSpec("department", "Department", "welfare, health, housing, tax, civil_registry or labour.", "string")


# ------------------------------------------------------------------------------------------------ cases, sla


def _cases_rows(cases: Sequence[Any], ctx: RoutingContext) -> Rows:
    table: dict[tuple[str, str, str], dict[str, Any]] = {}
    for case in cases:
        key = (_month(case.routed_on), case.district_code, case.department)
        row = table.setdefault(
            key,
            {"month": key[0], "district_code": key[1], "department": key[2], "cases": 0, "approved": 0, "denied": 0,
             "closed_without_decision": 0},
        )  # fmt: skip
        row["cases"] += 1
        if case.decision == Decision.APPROVED.value:
            row["approved"] += 1
        elif case.decision == Decision.DENIED.value:
            row["denied"] += 1
        elif case.status == CaseStatus.CLOSED:
            row["closed_without_decision"] += 1
    return [table[k] for k in sorted(table)]


def _cases_groups(rows: Rows) -> Groups:
    groups: Groups = [[(i, "approved"), (i, "denied")] for i in range(len(rows))]
    groups += _column_groups(rows, ("cases", "approved", "denied", "closed_without_decision"), ("month", "department"))
    groups += _column_groups(rows, ("cases",), ("month", "district_code"))
    return groups


def _sla_rows(cases: Sequence[Any], ctx: RoutingContext) -> Rows:
    decided: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for case in cases:
        if case.status == CaseStatus.DECIDED and not case.automatic and case.decided_on is not None:
            decided[(_month(case.routed_on), case.department)].append(case)
    rows = []
    k = ctx.settings.open_data_min_count
    for (month, department), items in sorted(decided.items()):
        durations = [ctx.calendar.working_days_between(c.routed_on, c.decided_on) for c in items if c.decided_on]
        on_time = sum(1 for c in items if _on_time(ctx, c))
        enough = len(items) >= k
        rows.append(
            {
                "month": month,
                "department": department,
                "decided": len(items),
                # Rates and medians of fewer than k cases are withheld with the count.
                "within_sla_share": round(on_time / len(items), 2) if enough else None,
                "median_working_days_to_decision": float(stats.median(durations)) if enough else None,
            }
        )
    return rows


def _sla_groups(rows: Rows) -> Groups:
    return _column_groups(rows, ("decided",), ("month",))


# ------------------------------------------------------------------------------------------------ referrals


def _referral_rows(referrals: Sequence[Any], ctx: RoutingContext) -> Rows:
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for referral in referrals:
        key = (_month(referral.referred_on), referral.service_type)
        row = table.setdefault(
            key,
            {"month": key[0], "service_type": key[1], "referrals": 0, "accepted": 0, "declined": 0, "completed": 0},
        )
        row["referrals"] += 1
        if referral.status in (ReferralStatus.ACCEPTED, ReferralStatus.COMPLETED):
            row["accepted"] += 1
        if referral.status == ReferralStatus.DECLINED:
            row["declined"] += 1
        if referral.status == ReferralStatus.COMPLETED:
            row["completed"] += 1
    return [table[k] for k in sorted(table)]


def _referral_groups(rows: Rows) -> Groups:
    # Accepted and declined, with those awaiting an answer, make up a row's referrals.
    groups: Groups = [[(i, "accepted"), (i, "declined")] for i in range(len(rows))]
    groups += _column_groups(rows, ("referrals", "accepted", "declined", "completed"), ("month",))
    return groups


# ------------------------------------------------------------------------------------------------ what residents said

UNKNOWN_CHANNEL = "unknown"
SATISFIED = 4  # a score of 4 or 5 of 5


def _feedback_rows(cases: Sequence[Any], ctx: RoutingContext) -> Rows:
    """Per office, program and channel: the cases, how many of them were approved (take-up), and the ratings of
    their applications (one rating per application counts for each of its programs)."""
    table: dict[tuple[str, str, str], dict[str, Any]] = {}
    for case in cases:
        key = (case.office_code, case.program_code, case.channel or UNKNOWN_CHANNEL)
        row = table.setdefault(
            key,
            {"office_code": key[0], "program_code": key[1], "channel": key[2], "cases": 0, "approved": 0,
             "ratings": 0, "score_total": 0, "satisfied": 0},
        )  # fmt: skip
        row["cases"] += 1
        if case.decision == Decision.APPROVED.value:
            row["approved"] += 1
        if case.score is not None:
            row["ratings"] += 1
            row["score_total"] += case.score
            row["satisfied"] += case.score >= SATISFIED
    return [table[k] for k in sorted(table)]


def _feedback_groups(rows: Rows) -> Groups:
    # A program's channels at an office add up to its total there.
    return _column_groups(rows, ("cases", "ratings"), ("office_code", "program_code"))


def _feedback_rates(built: Rows, shown: Rows) -> Rows:
    out = []
    for raw, row in zip(built, shown, strict=True):
        cases, ratings = row["cases"], row["ratings"]
        out.append(
            {
                **row,
                "take_up_share": round(raw["approved"] / cases, 2) if cases else None,
                "mean_score": round(raw["score_total"] / ratings, 2) if ratings else None,
                "satisfied_share": round(raw["satisfied"] / ratings, 2) if ratings else None,
            }
        )
    return out


def _column_groups(rows: Rows, columns: Iterable[str], by: tuple[str, ...]) -> Groups:
    groups: Groups = []
    for column in columns:
        buckets: dict[Hashable, list[tuple[int, str]]] = defaultdict(list)
        for i, row in enumerate(rows):
            buckets[tuple(row[b] for b in by)].append((i, column))
        groups += list(buckets.values())
    return groups


# ------------------------------------------------------------------------------------------------ take-up of offers


def _take_up_rows(rows: Sequence[Any], ctx: RoutingContext) -> Rows:
    return [
        {
            "program_code": r.program_code,
            "department": r.department,
            "district_code": r.district_code,
            "found_eligible": int(r.found_eligible),
            "applied": int(r.applied or 0),
            "granted": int(r.granted or 0),
        }
        for r in rows
    ]


def _take_up_rates(built: Rows, shown: Rows) -> Rows:
    """Applied of found eligible, over the counts as shown (a rate of a withheld count is withheld)."""
    out = []
    for row in shown:
        found, applied = row["found_eligible"], row["applied"]
        out.append({**row, "take_up_rate": round(applied / found, 3) if found and applied is not None else None})
    return out


async def _cases(repo: Repository) -> Sequence[Any]:
    return await repo.cases_for_open_data()


async def _referrals(repo: Repository) -> Sequence[Any]:
    return await repo.referrals_for_open_data()


async def _feedback(repo: Repository) -> Sequence[Any]:
    return await repo.cases_for_feedback_data()


# ------------------------------------------------------------------------------------------------ household cases

HOUSEHOLD_OUTCOMES = ("goals_met", "moved_away", "declined", "referred_on")


async def _households(repo: Repository) -> Sequence[Any]:
    return await repo.households_for_open_data()


def _households_rows(households: Sequence[Any], ctx: RoutingContext) -> Rows:
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for household in households:
        key = (_month(household.opened_on), household.district_code)
        row = table.setdefault(
            key,
            {
                "month": key[0],
                "district_code": key[1],
                "opened": 0,
                "closed": 0,
                **dict.fromkeys(HOUSEHOLD_OUTCOMES, 0),
            },
        )
        row["opened"] += 1
        if household.outcome is not None:
            row["closed"] += 1
            row[household.outcome] += 1
    return [table[k] for k in sorted(table)]


def _households_groups(rows: Rows) -> Groups:
    # A row's outcomes add up to its closed; a month's districts add up to the month's total.
    groups: Groups = [[(i, o) for o in HOUSEHOLD_OUTCOMES] for i in range(len(rows))]
    groups += _column_groups(rows, ("opened", "closed", *HOUSEHOLD_OUTCOMES), ("month",))
    return groups


async def _take_up(repo: Repository) -> Sequence[Any]:
    return await repo.take_up()


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="household_cases",
            title=Localized(ko="월별·지역별 통합사례관리 가구", en="Households in integrated case management"),
            description="Households taken on for integrated case management (통합사례관리) by month of opening and "
            "district, with how those closed so far ended.",
            keywords=("integrated case management", "households", "districts"),
            fields=(
                FieldSpec("month", "Month of opening", "Month (YYYY-MM) the household cases opened.", "string"),
                FieldSpec("district_code", "District", "Administrative code of the households' district.", "string"),
                _count("opened", "Household cases opened in the month."),
                _count("closed", "Of them, closed so far."),
                _count("goals_met", "Closed with the plan's goals met."),
                _count("moved_away", "Closed as the household moved away."),
                _count("declined", "Closed as the household declined further support."),
                _count("referred_on", "Closed as referred on to another service."),
            ),
            load=_households,
            build=_households_rows,
            groups=_households_groups,
            counts=("opened", "closed", *HOUSEHOLD_OUTCOMES),
        ),
        DatasetSpec(
            name="cases",
            title=Localized(
                ko="월별·지역별·부서별 사례와 결정", en="Cases and decisions by month, district and department"
            ),
            description="Cases by month of arrival, resident's district and department, with their decisions so far.",
            keywords=("cases", "decisions", "public services", "districts"),
            fields=(
                FieldSpec("month", "Month of arrival", "Month (YYYY-MM) the cases reached an office.", "string"),
                FieldSpec("district_code", "District", "Administrative code of the residents' district.", "string"),
                DEPARTMENT,
                _count("cases", "Cases (one per application and program) that arrived in the month."),
                _count("approved", "Of them, approved so far (automatic grants included)."),
                _count("denied", "Of them, denied so far."),
                _count("closed_without_decision", "Of them, closed without a decision (withdrawn, no longer needed)."),
            ),
            load=_cases,
            build=_cases_rows,
            groups=_cases_groups,
            counts=("cases", "approved", "denied", "closed_without_decision"),
        ),
        DatasetSpec(
            name="sla",
            title=Localized(ko="처리 기한 준수", en="Decisions within the service level"),
            description="Caseworker decisions by month of arrival and department: share decided within the SLA, "
            "median working days to decision.",
            keywords=("service level", "timeliness", "decisions"),
            fields=(
                FieldSpec("month", "Month of arrival", "Month (YYYY-MM) the decided cases arrived.", "string"),
                DEPARTMENT,
                _count("decided", "Cases of the month decided by a caseworker (automatic grants left out)."),
                FieldSpec("within_sla_share", "Within the SLA", "Share (0-1) decided by the due date.", "number", True),
                FieldSpec(
                    "median_working_days_to_decision",
                    "Median working days",
                    "Median working days from arrival to decision.",
                    "number",
                    True,
                ),
            ),
            load=_cases,
            build=_sla_rows,
            groups=_sla_groups,
            counts=("decided",),
        ),
        DatasetSpec(
            name="referrals",
            title=Localized(ko="민간·비영리 기관 연계", en="Referrals to partners' services"),
            description="Residents referred by caseworkers, with their consent, to services of NGOs and private "
            "providers, by month of referral and service type, with the partners' answers so far.",
            keywords=("referrals", "partners", "NGOs", "capacity"),
            fields=(
                FieldSpec("month", "Month of referral", "Month (YYYY-MM) the referrals were made.", "string"),
                FieldSpec(
                    "service_type",
                    "Service type",
                    "What the partner's offering provides (childcare, elder_care, food_support, counselling, ...).",
                    "string",
                ),
                _count("referrals", "Referrals made in the month."),
                _count("accepted", "Of them, accepted by the partner (completed ones included)."),
                _count("declined", "Of them, declined by the partner."),
                _count("completed", "Of them, with an outcome reported by the partner."),
            ),
            load=_referrals,
            build=_referral_rows,
            groups=_referral_groups,
            counts=("referrals", "accepted", "declined", "completed"),
        ),
        DatasetSpec(
            name="feedback",
            title=Localized(ko="주민 만족도와 수급률", en="What residents said, and take-up"),
            description="Residents' ratings (1 to 5) of the service, per office, program and channel of application, "
            "beside take-up (the share of cases approved). A rating of an application counts for each of its "
            "programs. All records so far.",
            keywords=("satisfaction", "feedback", "take-up", "channels", "offices"),
            fields=(
                FieldSpec("office_code", "Office", "The office that holds the cases (GET /v1/offices).", "string"),
                FieldSpec("program_code", "Program", "The program (GET /v1/programs of eligibility).", "string"),
                FieldSpec(
                    "channel",
                    "Channel",
                    "How the residents applied: web, mobile, kiosk, phone or visit (unknown when not recorded).",
                    "string",
                ),
                _count("cases", "Cases of the program at the office from applications made through the channel."),
                FieldSpec(
                    "take_up_share",
                    "Take-up",
                    "Share (0-1) of those cases approved so far (automatic grants included; open cases count as "
                    "not yet taken up).",
                    "number",
                    True,
                ),
                _count("ratings", "Of those cases, how many residents rated the service."),
                FieldSpec("mean_score", "Mean score", "Mean rating, 1 (poor) to 5 (excellent).", "number", True),
                FieldSpec("satisfied_share", "Satisfied", "Share (0-1) of ratings of 4 or 5.", "number", True),
            ),
            load=_feedback,
            build=_feedback_rows,
            groups=_feedback_groups,
            counts=("cases", "ratings"),
            # What residents said keeps to the larger minimum group size.
            min_group=lambda settings: settings.open_data_feedback_min_group_size,
            rates=_feedback_rates,
        ),
        DatasetSpec(
            name="take_up",
            title=Localized(
                ko="선제적 안내의 신청·수급 (프로그램·지역별)", en="Take-up of proactive offers by program and district"
            ),
            description="Proactive offers by program and the resident's district: residents found eligible (offered), "
            "those who applied for the program since, and those granted it since; take-up is applied / found. "
            "The counts are nested (not parts of a total), so each is held to the minimum on its own.",
            keywords=("take-up", "proactive screening", "offers", "districts"),
            fields=(
                FieldSpec("program_code", "Program", "The program (GET /v1/programs of eligibility).", "string"),
                DEPARTMENT,
                FieldSpec("district_code", "District", "Administrative code of the residents' district.", "string"),
                _count("found_eligible", "Residents proactive screening found eligible and offered the program."),
                _count("applied", "Of them, those who applied for it since (accepting the offer or otherwise)."),
                _count("granted", "Of them, those granted it since."),
                FieldSpec(
                    "take_up_rate",
                    "Take-up",
                    "Share (0-1) of those found eligible who applied, over the counts as shown.",
                    "number",
                    True,
                ),
            ),
            load=_take_up,
            build=_take_up_rows,
            groups=lambda rows: [],
            counts=("found_eligible", "applied", "granted"),
            min_group=lambda settings: settings.take_up_min_group,
            rates=_take_up_rates,
        ),
    )
}


def suppress(rows: Rows, counts: Sequence[str], groups: Groups, min_count: int) -> Rows:
    """Hide counts of 1..min_count-1, then hide complementary cells until no group has exactly one hidden cell."""
    hidden: set[tuple[int, str]] = {(i, c) for i, row in enumerate(rows) for c in counts if 0 < int(row[c]) < min_count}
    changed = True
    while changed:
        changed = False
        for group in groups:
            if sum(1 for cell in group if cell in hidden) != 1:
                continue
            visible = [cell for cell in group if cell not in hidden and int(rows[cell[0]][cell[1]]) > 0]
            if visible:
                hidden.add(min(visible, key=lambda cell: (int(rows[cell[0]][cell[1]]), cell)))
                changed = True
    out = [dict(row) for row in rows]
    for i, column in hidden:
        out[i][column] = None
    return out


class DatasetNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"No dataset {name}; GET /v1/open-data lists them.")


def catalogue(ctx: RoutingContext) -> list[DatasetInfo]:
    """Every open dataset's metadata."""
    return [spec.info(ctx) for spec in DATASETS.values()]


async def open_dataset(repo: Repository, ctx: RoutingContext, name: str) -> Dataset:
    spec = DATASETS.get(name)
    if spec is None:
        raise DatasetNotFound(name)
    built = spec.build(await spec.load(repo), ctx)
    shown = suppress(built, spec.counts, spec.groups(built), spec.min_group_size(ctx))
    if spec.rates is not None:
        shown = spec.rates(built, shown)
    columns = spec.columns
    return Dataset(
        **spec.info(ctx).model_dump(),
        generated_on=ctx.clock.today(),
        rows=[{c: row[c] for c in columns} for row in shown],
    )
