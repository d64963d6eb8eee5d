"""Seed data of notify: the partners in services/notify/partners.yaml, their grants (each with its purpose) and NATS
subscriptions.

Safe to repeat: a partner, grant or subscription that exists is left as it is (an administrator's later changes to
grants are kept; grants are only ever added here, never revoked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from services.notify.models import (
    GrantPurpose,
    Partner,
    PartnerGrant,
    Subscription,
    SubscriptionStatus,
    Transport,
    utcnow,
)
from services.notify.partners import PARTNER_ID_PATTERN, check_event_types, check_grants
from services.notify.schemas import GrantIn
from services.notify.settings import NotifySettings
from services.notify.subscriptions import new_subscription
from shared.db import Database
from shared.settings import ServiceSettings
from shared.yamlfile import load_yaml

SEEDER = "seed:partners.yaml"


class SeedSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transport: Transport
    event_types: list[str] = Field(min_length=1)
    description: str | None = None


class SeedPartner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=PARTNER_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    grants: list[GrantIn] = []
    subscriptions: list[SeedSubscription] = []

    @property
    def purposes(self) -> dict[str, GrantPurpose]:
        """Event type -> purpose (valid once loaded through :func:`load_partners`)."""
        return {g.event_type: GrantPurpose(g.purpose) for g in self.grants}


def load_partners(path: Path) -> list[SeedPartner]:
    raw: Any = load_yaml(path) or {}
    partners = [SeedPartner.model_validate(p) for p in raw.get("partners", [])]
    for partner in partners:
        purposes = check_grants(partner.grants, f"{partner.id}.grants")
        partner.grants = [GrantIn(event_type=t, purpose=p.value) for t, p in purposes.items()]
        for sub in partner.subscriptions:
            if sub.transport is Transport.WEBHOOK:
                raise ValueError(f"{partner.id}: seed webhook subscriptions need a URL; create them through the API")
            sub.event_types = check_event_types(sub.event_types, f"{partner.id}.subscriptions")
            if not set(sub.event_types) <= set(purposes):
                raise ValueError(f"{partner.id}: a subscription covers types the partner is not granted")
    return partners


async def seed(settings: ServiceSettings) -> str:
    assert isinstance(settings, NotifySettings)
    partners = load_partners(settings.partners_file)
    db = Database(settings.database_url)
    added = {"partners": 0, "grants": 0, "subscriptions": 0}
    try:
        async with db.session() as session:
            for spec in partners:
                now = utcnow()
                partner = await session.get(Partner, spec.id)
                if partner is None:
                    partner = Partner(id=spec.id, name=spec.name, created_at=now, updated_at=now, updated_by=SEEDER)
                    session.add(partner)
                    await session.flush()
                    added["partners"] += 1
                have = set(
                    await session.scalars(select(PartnerGrant.event_type).where(PartnerGrant.partner_id == spec.id))
                )
                for event_type, purpose in spec.purposes.items():
                    if event_type not in have:
                        session.add(PartnerGrant(partner_id=spec.id, event_type=event_type, purpose=purpose.value,
                                                 granted_at=now, granted_by=SEEDER))  # fmt: skip
                        added["grants"] += 1
                existing = list(
                    await session.scalars(
                        select(Subscription).where(
                            Subscription.partner_id == spec.id,
                            Subscription.status != SubscriptionStatus.DELETED.value,
                        )
                    )
                )
                for sub in spec.subscriptions:
                    if any(s.transport == sub.transport.value and s.event_types == sub.event_types for s in existing):
                        continue
                    session.add(
                        new_subscription(
                            partner_id=spec.id,
                            transport=sub.transport,
                            event_types=sub.event_types,
                            url=None,
                            description=sub.description,
                            secret=None,
                            by=SEEDER,
                        )
                    )
                    added["subscriptions"] += 1
    finally:
        await db.dispose()
    return (
        f"{len(partners)} partners ({added['partners']} new), {added['grants']} grants and "
        f"{added['subscriptions']} subscriptions added"
    )
