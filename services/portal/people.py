"""The demonstration city's people: whom the embedded identity provider lets one sign in as, and the residents
``onestop run`` registers with intake (through its public API, each with their own token) so that they exist when
they first sign in."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.auth import Role, TokenIssuer
from shared.yamlfile import load_yaml

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPerson:
    key: str
    role: Role
    subject: str
    name: str
    about: dict[str, str]
    resident_id: uuid.UUID | None = None
    offices: tuple[str, ...] = ()
    life_event: str | None = None
    # A resident's record as intake registers it, and the consents they start with.
    record: dict[str, Any] = field(default_factory=dict)
    consents: dict[str, bool] = field(default_factory=dict)

    def claims(self) -> dict[str, Any]:
        """What the provider puts in the person's tokens besides the standard claims."""
        claims: dict[str, Any] = {"role": self.role.value, "name": self.name}
        if self.resident_id is not None:
            claims["resident_id"] = str(self.resident_id)
        if self.offices:
            claims["offices"] = sorted(self.offices)
        return claims


@dataclass(frozen=True)
class DemoPeople:
    people: tuple[DemoPerson, ...]

    @classmethod
    def load(cls, path: Path) -> DemoPeople:
        raw = load_yaml(path)
        people: list[DemoPerson] = []
        for r in raw.get("residents", []):
            record = {k: v for k, v in r.items() if k not in ("key", "id", "life_event", "about", "consents")}
            record.setdefault("preferred_channels", ["inbox"])
            people.append(
                DemoPerson(
                    key=r["key"],
                    role=Role.RESIDENT,
                    subject=f"resident:{r['id']}",
                    name=r["name"],
                    about=r["about"],
                    resident_id=uuid.UUID(r["id"]),
                    life_event=r["life_event"],
                    record=record,
                    consents=dict(r.get("consents") or {}),
                )
            )
        for c in raw.get("caseworkers", []):
            people.append(
                DemoPerson(
                    key=f"caseworker-{c['office'].lower()}",
                    role=Role.CASEWORKER,
                    subject=c["subject"],
                    name=c["name"],
                    about={"ko": f"담당자 — {c['office']}", "en": f"Caseworker — {c['office']}"},
                    offices=(c["office"],),
                )
            )
        for s in raw.get("supervisors", []):
            people.append(
                DemoPerson(s["key"], Role.SUPERVISOR, s["subject"], s["name"], s["about"], offices=tuple(s["offices"]))
            )
        for a in raw.get("administrators", []):
            people.append(DemoPerson(a["key"], Role.ADMIN, a["subject"], a["name"], a["about"]))
        keys = [p.key for p in people]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{path}: every person needs a key of their own")
        return cls(tuple(people))

    def get(self, key: str) -> DemoPerson | None:
        return next((p for p in self.people if p.key == key), None)

    def of_role(self, role: Role) -> list[DemoPerson]:
        return [p for p in self.people if p.role is role]

    @property
    def residents(self) -> list[DemoPerson]:
        return self.of_role(Role.RESIDENT)


def register_residents(people: DemoPeople, intake_url: str, issuer: TokenIssuer, *, timeout: float = 20) -> str:
    """Register each demo resident who is not registered yet (safe to repeat): their record, then their consents.
    Through intake's public API with the resident's own token, as the resident would."""
    added = 0
    with httpx.Client(base_url=intake_url, timeout=timeout) as client:
        for person in people.residents:
            assert person.resident_id is not None
            auth = {"Authorization": f"Bearer {issuer.mint(Role.RESIDENT, resident_id=person.resident_id)}"}
            found = client.get(f"/v1/residents/{person.resident_id}", headers=auth)
            if found.status_code == 200:
                continue
            if found.status_code != 404:
                raise RuntimeError(f"intake answered {found.status_code} for demo resident {person.key}")
            created = client.post(
                "/v1/residents",
                json=person.record,
                headers={**auth, "Idempotency-Key": f"demo-{person.key}"},
            )
            if created.status_code >= 300:
                raise RuntimeError(f"registering demo resident {person.key}: {created.status_code} {created.text}")
            if person.consents:
                consented = client.put(
                    f"/v1/residents/{person.resident_id}/consents", json={"consents": person.consents}, headers=auth
                )
                if consented.status_code >= 300:
                    raise RuntimeError(f"consents of demo resident {person.key}: {consented.text}")
            added += 1
    return f"{added} demo residents registered ({len(people.residents) - added} already were)"
