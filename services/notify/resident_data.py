"""What notify holds about a resident — their part of the resident's export — and their erasure here.

The part (``GET /v1/residents/{id}/data``, for the resident or intake gathering their export): their preferences,
the consents and language notify was told, the representatives who may read their messages (and whose messages they
may read), the applications messages were about, every message with its deliveries and letters, their consents to
partners, and what went to which partner about them, when (each webhook delivery, or its drop, with what the partner
got), and who read their messages. After an erasure, only what is kept, with why and until when (retention.yaml).

The erasure (``resident.erasure_requested``) runs in both of notify's consumers, each in stream order with what it
handles: the residents' consumer erases messages, letters (their PDFs too), preferences and the copies of consents
and representations; the partners' consumer drops the resident's consents to partners, withdraws what is queued for
partners about them (webhooks and NATS copies, as a withdrawn consent does) and empties what was delivered of its
content and the resident's id. Whichever finishes second answers ``resident.erased``. From then on nothing about the
resident is stored, and nothing reaches a partner (:func:`erased`). The housekeeping pass destroys the erasure's
notice after 30 days and the rest when due (:func:`purge`). Nothing here commits but the purge."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.models import (
    ApplicationProgram,
    Delivery,
    Letter,
    Notification,
    NotificationItem,
    PartnerConsent,
    Preference,
    Representation,
    ResidentErasure,
    ResidentState,
    TrackedApplication,
    WebhookDelivery,
    audit_log,
    platform,
    utcnow,
)
from services.notify.partner_consent import PartnerConsents
from services.notify.repository import Repository
from services.notify.settings import NotifySettings
from shared.auth import Principal
from shared.clock import Clock
from shared.db import Database, dialect_insert, get_unflushed
from shared.events import CloudEvent, KeptRecords, ResidentErased, ResidentErasureRequested
from shared.outbox import Outbox
from shared.personal_data import (
    PURPOSE_EXPORT,
    ErasureState,
    ResidentDataPart,
    RetentionSchedule,
    may_read_part,
    row_data,
    rows_data,
)
from shared.problems import NotFound

log = logging.getLogger(__name__)

SERVICE = "notify"
SCHEDULE = RetentionSchedule.load(Path(__file__).resolve().parent / "retention.yaml")
NOTICE_KIND = "resident.erasure_completed"


async def _all(session: AsyncSession, model: Any, *where: Any) -> list[Any]:
    return list((await session.scalars(select(model).where(*where))).all())


async def _delete(session: AsyncSession, model: Any, *where: Any) -> int:
    result = await session.execute(delete(model).where(*where))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _count(session: AsyncSession, model: Any, *where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# The residents a transaction found not erased: a consumer's batch asks about the same residents event after event.
_NOT_ERASED = "notify_not_erased"


async def erased(session: AsyncSession, resident_id: uuid.UUID) -> bool:
    """Whether the resident asked for erasure (then nothing about them is stored or goes to a partner)."""
    known: set[uuid.UUID] = session.info.setdefault(_NOT_ERASED, set())
    if resident_id in known:
        return False
    # Without writing what is pending first: a batch's rows go out together at its end. An erasure the transaction
    # handled itself is among its new rows; its residents were looked up at its start (Repository.load_erasures).
    if await get_unflushed(session, ResidentErasure, resident_id) is not None:
        return True
    known.add(resident_id)
    return False


# ---------------------------------------------------------------------------------------------- the part


def _delivery_to_partner(delivery: WebhookDelivery) -> dict[str, Any]:
    data = row_data(delivery, exclude=("payload", "claim_token", "claimed_until"))
    # What the partner got (or would have): the envelope it was sent, its data only.
    data["sent"] = orjson.loads(delivery.payload).get("data") if delivery.payload else None
    return data


async def part(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, export_id: uuid.UUID | None
) -> ResidentDataPart:
    if not may_read_part(principal, resident_id):
        raise NotFound(f"No resident {resident_id}.")
    session = repo.session
    await audit_log.record(
        session,
        principal,
        action="export",
        record_type="resident_data",
        record_id=export_id or resident_id,
        purpose=PURPOSE_EXPORT,
        resident_id=resident_id,
    )
    notifications = sorted(
        await _all(session, Notification, Notification.resident_id == resident_id), key=lambda n: (n.created_at, n.id)
    )
    applications = await _all(session, TrackedApplication, TrackedApplication.resident_id == resident_id)
    application_ids = [a.application_id for a in applications]
    table = audit_log.table
    log_entries = (
        (await session.execute(select(table).where(table.c.resident_id == resident_id).order_by(table.c.id)))
        .mappings()
        .all()
    )
    deliveries = await _all(session, WebhookDelivery, WebhookDelivery.resident_id == resident_id)
    records: dict[str, list[dict[str, Any]]] = {
        "preferences": rows_data(await _all(session, Preference, Preference.resident_id == resident_id)),
        "resident": rows_data(await _all(session, ResidentState, ResidentState.resident_id == resident_id)),
        "representations": rows_data(
            await _all(
                session,
                Representation,
                or_(Representation.resident_id == resident_id, Representation.representative_id == resident_id),
            )
        ),
        "applications": rows_data(applications),
        "application_programs": rows_data(
            await _all(session, ApplicationProgram, ApplicationProgram.application_id.in_(application_ids))
        )
        if application_ids
        else [],
        "notifications": [
            {
                **row_data(n, exclude=("claim_token", "claimed_until")),
                "items": rows_data(n.items),
                "deliveries": rows_data(
                    await _all(session, Delivery, Delivery.notification_id == n.id),
                    exclude=("claim_token", "claimed_until"),
                ),
            }
            for n in notifications
        ],
        "letters": rows_data(await _all(session, Letter, Letter.resident_id == resident_id)),
        "partner_consents": rows_data(await _all(session, PartnerConsent, PartnerConsent.resident_id == resident_id)),
        "partner_deliveries": [_delivery_to_partner(d) for d in sorted(deliveries, key=lambda d: d.seq)],
        "access_log": [dict(e) for e in log_entries],
    }
    row = await session.get(ResidentErasure, resident_id)
    return ResidentDataPart(
        service=SERVICE,
        resident_id=resident_id,
        generated_at=dt.datetime.now(dt.UTC),
        records=records,
        erasure=ErasureState(
            erasure_id=row.erasure_id,
            requested_at=row.requested_at,
            erased_at=row.reported_at,
            erased=dict(row.erased),
            kept=[KeptRecords.model_validate(k) for k in row.kept],
        )
        if row
        else None,
        retention=SCHEDULE.rules,
    )


# ---------------------------------------------------------------------------------------------- the erasure


class Erasure:
    """Both halves of notify's erasure, and the answer once both are done."""

    def __init__(self, outbox: Outbox, settings: NotifySettings, clock: Clock) -> None:
        self.outbox = outbox
        self.settings = settings
        self.clock = clock
        self.consents = PartnerConsents(settings.bus_prefix)

    async def _ledger(self, session: AsyncSession, data: ResidentErasureRequested) -> ResidentErasure:
        row = await session.get(ResidentErasure, data.resident_id, with_for_update=True)
        session.info.get(_NOT_ERASED, set()).discard(data.resident_id)  # erased from here on in this transaction
        if row is None:
            # Both consumers handle the request, at the same time on PostgreSQL: whichever makes the row first, the
            # other waits for it and finds it, rather than failing its whole batch on the key.
            made = await session.scalar(
                dialect_insert(session)(ResidentErasure)
                .values(
                    resident_id=data.resident_id,
                    erasure_id=data.erasure_id,
                    requested_at=data.requested_at,
                    erased={},
                    kept=[],
                )
                .on_conflict_do_nothing(index_elements=["resident_id"])
                .returning(ResidentErasure)
            )
            row = made or await session.get(
                ResidentErasure, data.resident_id, with_for_update=True, populate_existing=True
            )
            assert row is not None
        return row

    async def residents_part(self, session: AsyncSession, event: CloudEvent, data: ResidentErasureRequested) -> None:
        """Messages, letters, preferences, the copies of consents and representations."""
        row = await self._ledger(session, data)
        if row.residents_erased_at is not None:
            return
        rid = data.resident_id
        counts: dict[str, int] = {}
        counts["preferences"] = await _delete(session, Preference, Preference.resident_id == rid) + await _delete(
            session, ResidentState, ResidentState.resident_id == rid
        )
        counts["representations"] = await _delete(session, Representation, Representation.resident_id == rid)
        letters = await _all(session, Letter, Letter.resident_id == rid)
        for letter in letters:
            (self.settings.data_dir / "post" / letter.file_name).unlink(missing_ok=True)
        await _delete(session, Letter, Letter.resident_id == rid)
        notifications = select(Notification.id).where(Notification.resident_id == rid)
        await Repository(session).write_new_items()  # a message of the same batch: deleted too
        await _delete(session, Delivery, Delivery.notification_id.in_(notifications))
        await _delete(session, NotificationItem, NotificationItem.notification_id.in_(notifications))
        counts["messages"] = await _delete(session, Notification, Notification.resident_id == rid) + len(letters)
        applications = select(TrackedApplication.application_id).where(TrackedApplication.resident_id == rid)
        await Repository(session).write_new_programs()  # an eligibility result of the same batch: deleted too
        await _delete(session, ApplicationProgram, ApplicationProgram.application_id.in_(applications))
        await _delete(session, TrackedApplication, TrackedApplication.resident_id == rid)
        dead = platform.dead_letters
        counts["stored_answers"] = int(
            (await session.execute(delete(dead).where(dead.c.payload.contains(str(rid))))).rowcount or 0  # type: ignore[attr-defined]
        )
        row.erased = {**row.erased, **counts}
        row.residents_erased_at = utcnow()
        await self._report_if_done(session, row)

    async def partners_part(self, session: AsyncSession, event: CloudEvent, data: ResidentErasureRequested) -> None:
        """Nothing more to any partner: the consents to partners go, what is queued is withdrawn (recorded as a
        withdrawn consent's drops are), and no delivery keeps the resident's id or what was sent."""
        row = await self._ledger(session, data)
        if row.partners_erased_at is not None:
            return
        rid = data.resident_id
        repo = Repository(session)
        consent = await repo.partner_consent(rid)
        consent.purposes = []
        consent.updated_at = utcnow()
        await session.flush()
        await self.consents.drop_uncovered(repo, consent)
        await session.delete(consent)
        anonymised = await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.resident_id == rid)
            .values(resident_id=None, payload="", updated_at=utcnow())
        )
        row.erased = {**row.erased, "partner_consents": 1, "partner_deliveries": int(anonymised.rowcount or 0)}  # type: ignore[attr-defined]
        row.partners_erased_at = utcnow()
        await self._report_if_done(session, row)

    async def _report_if_done(self, session: AsyncSession, row: ResidentErasure) -> None:
        await session.flush()
        if row.residents_erased_at is None or row.partners_erased_at is None or row.reported_at is not None:
            return
        today = self.clock.today()
        kept = []
        entries = await _count(session, audit_log.table, audit_log.table.c.resident_id == row.resident_id)
        if entries:
            kept.append(SCHEDULE.rule("access_log").kept(entries, today))
        kept.append(SCHEDULE.rule("erasure_record").kept(1, today))
        now = utcnow()
        row.kept = [k.model_dump(mode="json") for k in kept]
        row.reported_at = now
        await self.outbox.emit(
            session,
            ResidentErased(
                erasure_id=row.erasure_id,
                resident_id=row.resident_id,
                service=SERVICE,
                erased={k: int(v) for k, v in row.erased.items()},
                kept=kept,
                erased_at=now,
            ),
            subject=str(row.resident_id),
        )


# ---------------------------------------------------------------------------------------------- destruction


async def purge(db: Database, clock: Clock, now: dt.datetime) -> dict[str, int]:
    """The housekeeping pass: destroy the erasure's notice and the rest once due (제21조)."""
    today = clock.date_of(now)
    counts = {"erasure_notices": 0, "access_log": 0, "erasure_records": 0}
    notice_rule, log_rule, record_rule = (
        SCHEDULE.rule("erasure_notice"),
        SCHEDULE.rule("access_log"),
        SCHEDULE.rule("erasure_record"),
    )
    async with db.session() as session:
        for row in (await session.scalars(select(ResidentErasure))).all():
            rid = row.resident_id
            notices = [
                n
                for n in await _all(session, Notification, Notification.resident_id == rid)
                if notice_rule.destroy_on(clock.date_of(n.created_at)) <= today
            ]
            for notice in notices:
                await _delete(session, Delivery, Delivery.notification_id == notice.id)
                await _delete(session, NotificationItem, NotificationItem.notification_id == notice.id)
                counts["erasure_notices"] += await _delete(session, Notification, Notification.id == notice.id)
            counts["access_log"] += await audit_log.purge_of_residents(
                session, [rid], before=_years_before(now, log_rule.years)
            )
            left = await _count(session, Notification, Notification.resident_id == rid)
            ended = row.reported_at is not None and record_rule.destroy_on(clock.date_of(row.reported_at)) <= today
            if ended and not left:
                await session.delete(row)
                counts["erasure_records"] += 1
    return counts


def _years_before(now: dt.datetime, years: int) -> dt.datetime:
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)
