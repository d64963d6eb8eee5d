"""The administrator's pages: every service's dead letters, with replay, and the offices' capacity."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from services.portal.backends import SERVICES, Invalid, NotVisible, Unavailable
from services.portal.web import AdminPage

router = APIRouter(include_in_schema=False)

# The fields of an office an administrator's PUT carries (routing replaces the office whole).
OFFICE_FIELDS = ("name", "kind", "departments", "districts", "languages", "capacity", "neighbours", "supervisors",
                 "fallback")  # fmt: skip


@router.get("/admin")
async def dead_letters(page: AdminPage, replayed: bool = False) -> Response:
    letters: dict[str, list[dict[str, Any]]] = {}
    unreachable: list[str] = []
    for service in SERVICES:
        try:
            letters[service] = await page.up.get(
                service, "/v1/admin/dead-letters", params={"include_replayed": str(replayed).lower(), "limit": 100}
            )
        except Unavailable:
            unreachable.append(service)
    return page.render("admin/dead_letters.html", letters=letters, unreachable=unreachable, replayed=replayed)


@router.post("/admin/dead-letters/{service}/{letter_id}/replay")
async def replay(page: AdminPage, service: str, letter_id: int) -> Response:
    await page.form()
    if service not in SERVICES:
        raise NotVisible({"detail": service})
    result = await page.up.post(service, f"/v1/admin/dead-letters/{letter_id}/replay")
    outcome = "handled" if result.get("handled") else "failed"
    return page.redirect(f"/admin?replay={outcome}#{service}")


@router.get("/admin/offices")
async def offices(page: AdminPage) -> Response:
    return page.render("admin/offices.html", offices=await page.up.get("routing", "/v1/offices"))


@router.post("/admin/offices/{code}/capacity")
async def set_capacity(page: AdminPage, code: str) -> Response:
    form = await page.form()
    office = await page.up.get("routing", f"/v1/offices/{code}")
    errors: dict[str, str] = {}
    capacity: dict[str, Any] = {}
    for name, kind in (("caseworker_hours_week", int), ("active_case_ceiling", float)):
        raw = str(form.get(name) or "").replace(",", "").strip()
        try:
            value = kind(raw)
            if value < 0:
                raise ValueError
            capacity[name] = value
        except ValueError:
            errors[f"{code}.{name}"] = "answer.error.integer" if kind is int else "answer.error.number"
    if errors:
        offices = await page.up.get("routing", "/v1/offices")
        return page.render("admin/offices.html", status=422, offices=offices, errors=errors, entered=dict(form))
    body = {k: office[k] for k in OFFICE_FIELDS if k in office and office[k] is not None}
    body["capacity"] = capacity
    try:
        await page.up.put("routing", f"/v1/offices/{code}", body)
    except Invalid as exc:
        offices = await page.up.get("routing", "/v1/offices")
        errors = {f"{code}.{name}": "case.error.refused" for name in exc.field_errors()}
        return page.render("admin/offices.html", status=422, offices=offices, errors=errors, refused=exc.detail)
    return page.redirect(f"/admin/offices?saved={code}#office-{code}")
