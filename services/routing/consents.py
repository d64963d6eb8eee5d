"""Residents' consents as routing knows them: a projection of intake's ``consent.changed`` (each event carries the
full current set, with a version), kept so that a caseworker can refer a resident to a partner only with the
resident's ``partner:<partner id>`` consent.

The highest version wins: a late or redelivered older set changes nothing. A resident routing never heard of has
consented to nothing."""

from __future__ import annotations

import uuid

from services.routing.context import RoutingContext
from services.routing.models import ResidentConsents
from services.routing.repository import Repository
from shared.events import ConsentChanged


def partner_purpose(partner_id: str) -> str:
    return f"partner:{partner_id}"


async def record(repo: Repository, ctx: RoutingContext, data: ConsentChanged) -> None:
    now = ctx.clock.now()
    current = await repo.resident_consents(data.resident_id)
    if current is None:
        repo.session.add(
            ResidentConsents(
                resident_id=data.resident_id, version=data.version, consents=dict(data.consents), updated_at=now
            )
        )
    elif data.version > current.version:
        current.version = data.version
        current.consents = dict(data.consents)
        current.updated_at = now
    await repo.session.flush()


async def consented_to_partner(repo: Repository, resident_id: uuid.UUID, partner_id: str) -> bool:
    consents = await repo.resident_consents(resident_id)
    return consents is not None and consents.consented(partner_purpose(partner_id))
