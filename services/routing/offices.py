"""Offices: loading the seed file, an administrator's changes, and the view of them the routing policy takes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import TypeAdapter

from services.routing.models import Office
from services.routing.policy import OfficeView
from services.routing.repository import Repository
from services.routing.schemas import (
    CASE_MANAGEMENT,
    OfficeCapacity,
    OfficeIn,
    OfficeKind,
    OfficeLoad,
    OfficeName,
    OfficeOut,
    OfficeSeed,
)
from shared.auth import Principal
from shared.events import Department, Localized
from shared.problems import NotFound, UnprocessableContent
from shared.yamlfile import load_yaml


class OfficeNotFound(NotFound):
    def __init__(self, code: str) -> None:
        super().__init__(f"No office {code}.")


def load_seed_file(path: Path) -> list[OfficeSeed]:
    """The offices of a YAML file, validated; neighbours must name offices of the same file."""
    raw = load_yaml(path) or {}
    offices = TypeAdapter(list[OfficeSeed]).validate_python(raw.get("offices", []))
    codes = [o.code for o in offices]
    if len(set(codes)) != len(codes):
        raise ValueError(f"{path}: office codes repeat")
    for office in offices:
        unknown = set(office.neighbours) - set(codes)
        if unknown:
            raise ValueError(f"{path}: {office.code} names unknown neighbours {sorted(unknown)}")
    return offices


def apply(office: Office, spec: OfficeIn, now: dt.datetime) -> None:
    office.name_ko = spec.name.ko
    office.name_en = spec.name.en
    office.kind = spec.kind.value
    office.departments = [str(d) for d in spec.departments]
    office.districts = list(spec.districts)
    office.languages = list(spec.languages)
    office.neighbours = list(spec.neighbours)
    office.supervisors = list(spec.supervisors)
    office.caseworker_hours_week = spec.capacity.caseworker_hours_week
    office.active_case_ceiling = spec.capacity.active_case_ceiling
    office.fallback = spec.fallback
    office.updated_at = now


def new_office(code: str, spec: OfficeIn, now: dt.datetime) -> Office:
    office = Office(code=code, created_at=now)
    apply(office, spec, now)
    return office


async def put_office(repo: Repository, code: str, spec: OfficeIn, now: dt.datetime) -> tuple[OfficeOut, bool]:
    """Create or replace an office; returns it (as staff see it) and whether it was created. Cases already routed stay
    where they are: a new capacity or jurisdiction applies to the cases routed from now on."""
    known = {o.code for o in await repo.all_offices()}
    for index, neighbour in enumerate(spec.neighbours):
        if neighbour == code:
            raise UnprocessableContent.for_field(f"neighbours[{index}]", "an office cannot be its own neighbour")
        if neighbour not in known:
            raise UnprocessableContent.for_field(f"neighbours[{index}]", f"no office '{neighbour}'")
    office = await repo.office(code)
    created = office is None
    if office is None:
        office = new_office(code, spec, now)
        repo.session.add(office)
    else:
        apply(office, spec, now)
    await repo.session.flush()
    loads = await repo.office_loads()
    return out(office, loads.get(code), staff=True), created


async def list_offices(
    repo: Repository, principal: Principal, department: Department | None, district: str | None
) -> list[OfficeOut]:
    """The offices handling ``department`` and serving ``district`` (either may be omitted); staff see their load."""
    loads = await repo.office_loads() if principal.is_staff else {}
    return [
        out(o, loads.get(o.code), staff=principal.is_staff)
        for o in await repo.all_offices()
        if (department is None or department.value in o.departments) and (district is None or district in o.districts)
    ]


async def get_office(repo: Repository, principal: Principal, code: str) -> OfficeOut:
    office = await repo.office(code)
    if office is None:
        raise OfficeNotFound(code)
    loads = await repo.office_loads() if principal.is_staff else {}
    return out(office, loads.get(code), staff=principal.is_staff)


def name_of(office: Office) -> Localized:
    return Localized(ko=office.name_ko, en=office.name_en)


def view(office: Office) -> OfficeView:
    return OfficeView(
        code=office.code,
        departments=frozenset(office.departments),
        districts=frozenset(office.districts),
        languages=frozenset(office.languages),
        ceiling=float(office.active_case_ceiling),
        neighbours=tuple(office.neighbours),
        fallback=office.fallback,
    )


def views(offices: Iterable[Office]) -> list[OfficeView]:
    return [view(o) for o in offices]


def out(office: Office, load: tuple[int, float] | None = None, *, staff: bool = False) -> OfficeOut:
    body = OfficeOut(
        code=office.code,
        name=OfficeName(ko=office.name_ko, en=office.name_en),
        kind=OfficeKind(office.kind),
        departments=[d if d == CASE_MANAGEMENT else Department(d) for d in office.departments],
        districts=office.districts,
        languages=office.languages,
        capacity=OfficeCapacity(
            caseworker_hours_week=office.caseworker_hours_week, active_case_ceiling=office.active_case_ceiling
        ),
        neighbours=office.neighbours,
        fallback=office.fallback,
        updated_at=office.updated_at,
    )
    if staff:
        count, weighted = load or (0, 0.0)
        ceiling = office.active_case_ceiling
        body.supervisors = list(office.supervisors)
        body.load = OfficeLoad(
            open_cases=count,
            weighted_load=round(weighted, 3),
            utilisation=round(weighted / ceiling, 3) if ceiling > 0 else None,
            has_room=weighted < ceiling,
        )
    return body


async def seed_offices(repo: Repository, seeds: Sequence[OfficeSeed], now: dt.datetime) -> tuple[int, int]:
    """Add the offices the database lacks; never overwrite one (an administrator may have changed it)."""
    existing = {o.code for o in await repo.all_offices()}
    added = 0
    for seed in seeds:
        if seed.code in existing:
            continue
        repo.session.add(new_office(seed.code, OfficeIn.model_validate(seed.model_dump(exclude={"code"})), now))
        added += 1
    await repo.session.flush()
    return added, len(seeds) - added
