"""Demand against capacity (for supervisors) and anonymised open data (for anyone).

Open data is aggregated by month of arrival; a count from 1 to ``open_data_min_count - 1`` is never shown (null),
and complementary cells are suppressed too, so that a hidden count cannot be recovered by subtraction from its row
or from a published total: within every group of cells that add up to a total someone could know (a row's approved
and denied; a column's cells of one month and department; a column's departments of one month) either no cell or at
least two are hidden. Zero is shown: it identifies nobody.
"""

from __future__ import annotations

import datetime as dt
import statistics as stats
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.routing.context import RoutingContext
from services.routing.models import Case, CaseStatus, Office
from services.routing.repository import Repository
from services.routing.schemas import (
    CapacityReport,
    Dataset,
    DatasetInfo,
    ExpectedDemand,
    OfficeCapacity,
    OfficeDemand,
    OfficeName,
    ProgramDemand,
)
from services.routing.settings import RoutingSettings
from shared.auth import Principal, Role
from shared.events import Decision, Department
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
    for report in reports:
        report.expected_demand = expected.get(report.office_code, [])
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


@dataclass(frozen=True)
class DatasetSpec:
    info: DatasetInfo
    build: Callable[[Sequence[Any], RoutingContext], list[dict[str, Any]]]
    # Which cells add up to totals someone could know (see the module docstring).
    groups: Callable[[list[dict[str, Any]]], list[list[tuple[int, str]]]]
    counts: tuple[str, ...]
    # What it aggregates (default: the applications' cases) and the smallest count it shows.
    load: Callable[[Repository], Awaitable[Sequence[Any]]] | None = None
    min_count: Callable[[RoutingSettings], int] = lambda settings: settings.open_data_min_count
    # Columns worked out from the counts once they are suppressed (a rate of hidden counts is hidden too).
    derive: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None


def _month(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _cases_rows(cases: Sequence[Any], ctx: RoutingContext) -> list[dict[str, Any]]:
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


def _cases_groups(rows: list[dict[str, Any]]) -> list[list[tuple[int, str]]]:
    groups: list[list[tuple[int, str]]] = [[(i, "approved"), (i, "denied")] for i in range(len(rows))]
    groups += _column_groups(rows, ("cases", "approved", "denied", "closed_without_decision"), ("month", "department"))
    groups += _column_groups(rows, ("cases",), ("month", "district_code"))
    return groups


def _sla_rows(cases: Sequence[Any], ctx: RoutingContext) -> list[dict[str, Any]]:
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


def _sla_groups(rows: list[dict[str, Any]]) -> list[list[tuple[int, str]]]:
    return _column_groups(rows, ("decided",), ("month",))


def _column_groups(
    rows: list[dict[str, Any]], columns: Iterable[str], by: tuple[str, ...]
) -> list[list[tuple[int, str]]]:
    groups: list[list[tuple[int, str]]] = []
    for column in columns:
        buckets: dict[Hashable, list[tuple[int, str]]] = defaultdict(list)
        for i, row in enumerate(rows):
            buckets[tuple(row[b] for b in by)].append((i, column))
        groups += list(buckets.values())
    return groups


def _take_up_rows(rows: Sequence[Any], ctx: RoutingContext) -> list[dict[str, Any]]:
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


def _take_up_rates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        found, applied = row["found_eligible"], row["applied"]
        row["take_up_rate"] = round(applied / found, 3) if found and applied is not None else None
    return rows


DATASETS: dict[str, DatasetSpec] = {
    "cases": DatasetSpec(
        DatasetInfo(
            dataset="cases",
            description="Cases by month of arrival, resident's district and department, with their decisions so far.",
            columns=["month", "district_code", "department", "cases", "approved", "denied", "closed_without_decision"],
        ),
        _cases_rows,
        _cases_groups,
        ("cases", "approved", "denied", "closed_without_decision"),
    ),
    "sla": DatasetSpec(
        DatasetInfo(
            dataset="sla",
            description="Caseworker decisions by month of arrival and department: share decided within the SLA, "
            "median working days to decision.",
            columns=["month", "department", "decided", "within_sla_share", "median_working_days_to_decision"],
        ),
        _sla_rows,
        _sla_groups,
        ("decided",),
    ),
    "take_up": DatasetSpec(
        DatasetInfo(
            dataset="take_up",
            description="Proactive offers by program and the resident's district: residents found eligible (offered), "
            "those who applied for the program since, and those granted it since; take-up is applied / found. "
            "The counts are nested (not parts of a total), so each is held to the minimum on its own.",
            columns=[
                "program_code",
                "department",
                "district_code",
                "found_eligible",
                "applied",
                "granted",
                "take_up_rate",
            ],
        ),
        _take_up_rows,
        lambda rows: [],
        ("found_eligible", "applied", "granted"),
        load=lambda repo: repo.take_up(),
        min_count=lambda settings: settings.take_up_min_group,
        derive=_take_up_rates,
    ),
}


def suppress(
    rows: list[dict[str, Any]], counts: Sequence[str], groups: list[list[tuple[int, str]]], min_count: int
) -> list[dict[str, Any]]:
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


def catalogue() -> list[DatasetInfo]:
    return [spec.info for spec in DATASETS.values()]


async def open_dataset(repo: Repository, ctx: RoutingContext, name: str) -> Dataset:
    spec = DATASETS.get(name)
    if spec is None:
        raise DatasetNotFound(name)
    k = spec.min_count(ctx.settings)
    source = await spec.load(repo) if spec.load is not None else await repo.cases_for_open_data()
    rows = spec.build(source, ctx)
    shown = suppress(rows, spec.counts, spec.groups(rows), k)
    return Dataset(
        **spec.info.model_dump(),
        generated_on=ctx.clock.today(),
        suppression=f"counts from 1 to {k - 1} and complementary cells are null",
        rows=spec.derive(shown) if spec.derive is not None else shown,
    )
