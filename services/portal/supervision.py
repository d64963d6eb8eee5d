"""The supervisor's pages: demand against capacity per office and program (a chart drawn on the server, and its
table), assigning cases to caseworkers, and the cases past their due date (SLA breaches)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from services.portal.backends import Conflict, Invalid
from services.portal.casework import sla_badge, today
from services.portal.chart import capacity_chart
from services.portal.web import Page, SupervisorPage

router = APIRouter(include_in_schema=False)


def _offices(page: Page, report_offices: list[dict[str, Any]] | None = None) -> list[str]:
    if page.me.offices:
        return list(page.me.offices)
    return [o["office_code"] for o in report_offices or []]


@router.get("/supervise")
async def capacity(page: SupervisorPage) -> Response:
    report = await page.up.get("routing", "/v1/capacity")
    # Routing counts by program code; the catalogue names each program in both languages.
    catalogue = await page.up.get("eligibility", "/v1/programs")
    names = {program["code"]: program["name"] for program in catalogue}
    return page.render("supervisor/capacity.html", report=report, chart=capacity_chart(report), names=names)


async def _cases(page: Page, *, unassigned: bool) -> list[dict[str, Any]]:
    report = await page.up.get("routing", "/v1/capacity") if not page.me.offices else None
    on = today(page)
    cases: list[dict[str, Any]] = []
    for office in _offices(page, report["offices"] if report else None):
        params: dict[str, Any] = {"limit": 200, "purpose": "supervision"}
        if unassigned:
            params.update(unassigned="true", status=["open"])
        found = await page.up.get("routing", f"/v1/queues/{office}", params=params)
        cases += [{**c, "sla": sla_badge(c, on)} for c in found["items"]]
    return cases


@router.get("/supervise/breaches")
async def breaches(page: SupervisorPage) -> Response:
    late = [c for c in await _cases(page, unassigned=False) if c["sla"] in ("breached", "overdue")]
    return page.render("supervisor/breaches.html", cases=sorted(late, key=lambda c: c["due_date"]))


@router.get("/supervise/assign")
async def assignment(page: SupervisorPage) -> Response:
    return await _assignment(page)


async def _assignment(page: Page, *, status: int = 200, **extra: Any) -> Response:
    cases = await _cases(page, unassigned=True)
    known = sorted(
        {p.subject for p in page.context.people.people if p.role.value == "caseworker"}
        if page.context.people
        else set()
    )
    return page.render("supervisor/assign.html", status=status, cases=cases, caseworkers=known,
                       idempotency_key=str(uuid.uuid4()), **extra)  # fmt: skip


@router.post("/supervise/cases/{case_id}/assign")
async def assign(page: SupervisorPage, case_id: uuid.UUID) -> Response:
    form = await page.form()
    assignee = str(form.get("assignee") or "").strip()
    if not assignee:
        return await _assignment(page, status=422, errors={str(case_id): "case.error.required"})
    try:
        await page.up.post(
            "routing",
            f"/v1/cases/{case_id}/assign",
            {"assignee": assignee},
            idempotency_key=str(uuid.uuid4()),
        )
    except Conflict as exc:
        return await _assignment(page, status=409, conflict=exc.detail)
    except Invalid as exc:
        return await _assignment(page, status=422, errors={str(case_id): "case.error.refused"}, refused=exc.detail)
    return page.redirect("/supervise/assign?assigned=1")
