"""The caseworker's console: an office's queue (filters, sort, SLA badges, pages) and the case page (each criterion
with its values and their sources, why the case is at this office, its history and notes) with every action — claim,
release, request information, decide with a reason code, transfer, escalate, note. An action that lost a race (409)
is explained on the case as it now is; nothing was done."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from services.portal.backends import Conflict, Invalid, Upstream
from services.portal.web import Page, StaffPage

router = APIRouter(include_in_schema=False)

STATUSES = ("open", "assigned", "waiting_on_resident", "decided", "closed")
ACTIVE = ("open", "assigned", "waiting_on_resident")
SORTS = ("urgency", "due", "newest")
PAGE_SIZE = 20


def today(page: Page) -> dt.date:
    return dt.datetime.now(ZoneInfo(page.context.settings.timezone)).date()


def sla_badge(case: dict[str, Any], on: dt.date) -> str:
    """How the case stands against its due date: breached, due within two days, or on time."""
    if case.get("breached"):
        return "breached"
    if case["status"] in ("decided", "closed"):
        return "done"
    due = dt.date.fromisoformat(str(case["due_date"]))
    if due < on:
        return "overdue"
    if (due - on).days <= 2:
        return "soon"
    return "on_time"


@dataclass
class QueueQuery:
    status: list[str]
    program: str
    priority: str
    due_before: str
    unassigned: bool
    mine: bool
    sort: str
    cursor: str | None

    @classmethod
    def from_request(cls, request: Request) -> QueueQuery:
        q = request.query_params
        statuses = [s for s in q.getlist("status") if s in STATUSES] or list(ACTIVE)
        priority = q.get("priority", "")
        due_before = q.get("due_before", "")
        try:
            dt.date.fromisoformat(due_before)
        except ValueError:
            due_before = ""
        return cls(
            status=statuses,
            program=q.get("program", "").strip()[:100],
            priority=priority if priority in ("1", "2", "3", "4") else "",
            due_before=due_before,
            unassigned=q.get("unassigned") == "1",
            mine=q.get("mine") == "1",
            sort=q.get("sort", "urgency") if q.get("sort") in SORTS else "urgency",
            cursor=q.get("cursor") or None,
        )

    def params(self, subject: str) -> dict[str, Any]:
        params: dict[str, Any] = {"status": self.status, "sort": self.sort, "limit": PAGE_SIZE}
        if self.program:
            params["program"] = self.program
        if self.priority:
            params["priority"] = self.priority
        if self.due_before:
            params["due_before"] = self.due_before
        if self.unassigned:
            params["unassigned"] = "true"
        if self.mine:
            params["assignee"] = subject
        if self.cursor:
            params["cursor"] = self.cursor
        return params

    def link(self, **changes: Any) -> str:
        """The query string of this queue with some parameters changed (for the next page, say)."""
        from urllib.parse import urlencode

        values: list[tuple[str, str]] = [("status", s) for s in self.status]
        for name in ("program", "priority", "due_before", "sort"):
            value = changes.get(name, getattr(self, name))
            if value:
                values.append((name, str(value)))
        if changes.get("unassigned", self.unassigned):
            values.append(("unassigned", "1"))
        if changes.get("mine", self.mine):
            values.append(("mine", "1"))
        if changes.get("cursor"):
            values.append(("cursor", str(changes["cursor"])))
        return "?" + urlencode(values)


@router.get("/work")
async def work(page: StaffPage) -> Response:
    offices = list(page.me.offices)
    if not offices:  # an administrator works in every office: start with the list
        return RedirectResponse("/admin/offices", status_code=303)
    return RedirectResponse(f"/work/queue/{offices[0]}", status_code=303)


@router.get("/work/queue/{office}")
async def queue(page: StaffPage, request: Request, office: str) -> Response:
    query = QueueQuery.from_request(request)
    try:
        found = await page.up.get("routing", f"/v1/queues/{office}", params=query.params(page.me.subject))
    except Invalid as exc:
        if query.cursor is None or "cursor" not in exc.field_errors():
            raise
        # A cursor marks a place in the order it was made for only (a link kept from another sort, say): start over.
        return RedirectResponse(f"/work/queue/{office}{query.link(cursor=None)}", status_code=303)
    on = today(page)
    items = [{**c, "sla": sla_badge(c, on)} for c in found["items"]]
    return page.render(
        "staff/queue.html",
        office=office,
        offices=list(page.me.offices),
        items=items,
        next_cursor=found["next_cursor"],
        query=query,
        statuses=STATUSES,
        sorts=SORTS,
    )


# ---------------------------------------------------------------------------------------------- the case


async def case_page_values(up: Upstream, case_id: uuid.UUID) -> dict[str, Any]:
    case = await up.get("routing", f"/v1/cases/{case_id}")
    determinations = await up.get("eligibility", f"/v1/applications/{case['application_id']}/determinations")
    program = next((p for p in determinations["programs"] if p["program_code"] == case["program_code"]), None)
    reason_codes = await up.get("routing", "/v1/reason-codes")
    offices = await up.get("routing", "/v1/offices", params={"department": case["department"]})
    notes = [h for h in case["history"] if h["action"] == "note"]
    return {
        "case": case,
        "determination": program,
        "round": determinations.get("round"),
        "reason_codes": reason_codes,
        "transfer_offices": [o for o in offices if o["code"] != case["office_code"]],
        "notes": notes,
    }


async def render_case(page: Page, case_id: uuid.UUID, *, status: int = 200, **extra: Any) -> Response:
    values = await case_page_values(page.up, case_id)
    values["sla"] = sla_badge(values["case"], today(page))
    return page.render("staff/case.html", status=status, idempotency_key=str(uuid.uuid4()), **values, **extra)


@router.get("/work/cases/{case_id}")
async def case(page: StaffPage, case_id: uuid.UUID) -> Response:
    return await render_case(page, case_id)


ACTIONS = ("claim", "release", "request-info", "decide", "transfer", "escalate", "notes")


def action_body(action: str, form: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The body an action sends, or the fields that are wrong (message keys) when a required one is empty."""
    errors: dict[str, str] = {}

    def required(name: str) -> str:
        value = str(form.get(name) or "").strip()
        if not value:
            errors[name] = "case.error.required"
        return value

    if action in ("claim", "release"):
        return None, errors
    if action == "request-info":
        text = required("question")
        fact = str(form.get("fact") or "").strip()
        return {"questions": [{"text": text, **({"fact": fact} if fact else {})}]}, errors
    if action == "decide":
        decision = str(form.get("decision") or "")
        if decision not in ("approved", "denied"):
            errors["decision"] = "case.error.required"
        body: dict[str, Any] = {"decision": decision, "reason_code": required("reason_code"), "note": required("note")}
        amount = str(form.get("amount") or "").replace(",", "").strip()
        if amount:
            if not amount.isdigit():
                errors["amount"] = "answer.error.integer"
            else:
                body["amount"] = int(amount)
        return body, errors
    if action == "transfer":
        return {"office_code": required("office_code"), "reason": required("reason")}, errors
    if action == "escalate":
        return {"reason": required("reason")}, errors
    return {"text": required("text")}, errors  # notes


@router.post("/work/cases/{case_id}/{action}")
async def act(page: StaffPage, case_id: uuid.UUID, action: str) -> Response:
    if action not in ACTIONS:
        return await render_case(page, case_id, status=404)
    form = await page.form()
    body, errors = action_body(action, form)
    if errors:
        return await render_case(page, case_id, status=422, action=action, errors=errors, entered=dict(form))
    key = str(form.get("idempotency_key") or "")
    try:
        uuid.UUID(key)
    except ValueError:
        key = str(uuid.uuid4())
    try:
        await page.up.post("routing", f"/v1/cases/{case_id}/{action}", body, idempotency_key=key)
    except Conflict as exc:
        # Someone else acted first (or the case moved on): show the case as it is now, and why nothing was done.
        return await render_case(page, case_id, status=409, action=action, conflict=exc.detail)
    except Invalid as exc:
        fields = exc.field_errors()
        return await render_case(
            page,
            case_id,
            status=422,
            action=action,
            errors={name: "case.error.refused" for name in fields} or {"": "case.error.refused"},
            refused=exc.detail,
            entered=dict(form),
        )
    if action == "transfer" and page.me.offices:
        # The case is another office's now: this caseworker may no longer see it.
        return page.redirect(f"/work/queue/{page.me.offices[0]}?transferred=1")
    return page.redirect(f"/work/cases/{case_id}?done={action}")


# ---------------------------------------------------------------------------------------------- the household case


@router.get("/work/households/{household_case_id}")
async def household(page: StaffPage, household_case_id: uuid.UUID) -> Response:
    """A household case (통합사례관리) as routing shows it to the caller: the members — with their department cases
    for the lead and the office's supervisors, where the member consented — the plan, follow-ups, conferences and the
    history. Routing decides what the caller may see (another office's staff get "not found")."""
    found = await page.up.get("routing", f"/v1/household-cases/{household_case_id}")
    on = today(page)
    follow_ups = [
        {**f, "state": "done" if f["done_at"] else "missed" if f["missed_on"] else "overdue"
         if dt.date.fromisoformat(f["due_date"]) < on else "due"}
        for f in found["follow_ups"]
    ]  # fmt: skip
    return page.render("staff/household.html", household=found, follow_ups=follow_ups)
