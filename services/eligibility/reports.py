"""Facts a department source reports through the API (``POST /v1/facts``): who may report, for which department,
and the report itself. Stored and followed by re-evaluation as a ``facts.reported`` event would be
(Eligibility.record_report), except that here one unfit fact refuses the whole report."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

from services.eligibility.determinations import Eligibility
from services.eligibility.repository import Repository
from services.eligibility.schemas import FactReportIn, FactReportOut
from shared.auth import Principal, Role
from shared.events import Department
from shared.problems import Conflict, Forbidden, UnprocessableContent


def reporting_department(
    principal: Principal, named: Department | None, partner_departments: Mapping[str, Department]
) -> Department:
    """The department a report speaks for: a partner's own (it may name only that one), or the one an administrator
    names. Nobody else reports facts."""
    if principal.role is Role.ADMIN:
        if named is None:
            raise UnprocessableContent.for_field("department", "an administrator must name the reporting department")
        return named
    if principal.role is Role.PARTNER:
        mapped = partner_departments.get(principal.partner_id or "")
        if mapped is None:
            raise Forbidden("This partner is not registered as a department source.")
        if named is not None and named != mapped:
            raise Forbidden(f"This partner reports for {mapped.value} only.")
        return mapped
    raise Forbidden("Only department sources (partners) and administrators report facts.")


async def report_facts(
    repo: Repository, service: Eligibility, principal: Principal, body: FactReportIn, *, now: dt.datetime
) -> FactReportOut:
    department = reporting_department(principal, body.department, service.settings.partner_departments)
    report_id = body.report_id or uuid.uuid4()
    if body.report_id is not None and await repo.report_seen(report_id):
        raise Conflict(
            f"Report {report_id} was already received.",
            errors=[{"field": "report_id", "message": "already received", "type": "duplicate"}],
        )
    source = body.source or (principal.partner_id or principal.subject)
    result = await service.record_report(
        repo,
        report_id=report_id,
        resident_id=body.resident_id,
        department=department.value,
        source=source,
        facts=body.facts,
        reported_at=now,
        now=now,
        strict=True,
    )
    if result.problems:
        raise UnprocessableContent(
            f"Facts that cannot be accepted: {', '.join(p.field for p in result.problems)}",
            errors=[{"field": p.field, "message": p.message, "type": "invalid"} for p in result.problems],
        )
    return FactReportOut(
        report_id=report_id,
        resident_id=body.resident_id,
        department=department,
        source=source,
        accepted=result.accepted,
        reevaluated_applications=result.reevaluated,
        new_rounds=result.new_rounds,
    )
