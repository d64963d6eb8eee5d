"""The notify HTTP API: thin routes over the domain modules (a plain read: one scoped query of the repository).

Residents: their inbox (and, for a representative the resident named to read their messages, that resident's), their
preferences and who read their messages for them. Administrators: partner grants, dead notification deliveries.
Partners: their subscriptions and webhook deliveries. Every object a caller may not see answers 404.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse

from services.notify import delivery as resident_delivery
from services.notify import inbox, letters, partners, preferences, resident_data, subscriptions
from services.notify.context import ContextDep
from services.notify.models import (
    Delivery,
    DeliveryStatus,
    LetterStatus,
    Partner,
    Preference,
    Subscription,
    WebhookDelivery,
)
from services.notify.partners import PARTNER_ID_PATTERN
from services.notify.rendering import Renderer
from services.notify.repository import RepositoryDep, WriteRepositoryDep
from services.notify.schemas import (
    AccessLogPage,
    GrantOut,
    GrantsIn,
    InboxMessage,
    InboxPage,
    LetterOut,
    NotificationDeliveryOut,
    PartnerOut,
    PreferencesIn,
    PreferencesOut,
    QuietHours,
    RotatedSecret,
    RotateSecretIn,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionOut,
    WebhookDeliveryOut,
)
from services.notify.settings import NotifySettings
from shared.auth import Principal, Role, require_roles
from shared.deps import IdempotentDep, PrincipalDep
from shared.events import partner_subject
from shared.idempotency import CREATED_AT_LOCATION
from shared.personal_data import ResidentDataPart
from shared.problems import problem_responses


async def get_settings(ctx: ContextDep) -> NotifySettings:
    return ctx.settings


async def get_renderer(ctx: ContextDep) -> Renderer:
    return ctx.renderer


SettingsDep = Annotated[NotifySettings, Depends(get_settings)]
RendererDep = Annotated[Renderer, Depends(get_renderer)]
Resident = Annotated[Principal, Depends(require_roles(Role.RESIDENT))]
Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
PartnerCaller = Annotated[Principal, Depends(require_roles(Role.PARTNER))]
PartnerOrAdmin = Annotated[Principal, Depends(require_roles(Role.PARTNER, Role.ADMIN))]
PartnerId = Annotated[str, Path(pattern=PARTNER_ID_PATTERN, description="The partner's id (lower-case, - and _)")]
Limit = Annotated[int, Query(ge=1, le=200)]


async def _resident_id(principal: Resident) -> uuid.UUID:
    assert principal.resident_id is not None  # a resident token always names the resident (shared.auth)
    return principal.resident_id


ResidentId = Annotated[uuid.UUID, Depends(_resident_id)]  # the calling resident's own id


async def _reader(
    principal: Resident,
    repo: RepositoryDep,
    ctx: ContextDep,
    resident_id: uuid.UUID | None = Query(
        default=None, description="A resident who named you representative to read their messages (default: you)"
    ),
) -> inbox.Reader:
    return await inbox.reader(repo, principal, resident_id, ctx.clock.today())


Reader = Annotated[inbox.Reader, Depends(_reader)]  # whose inbox: the caller's, or a represented resident's


# ================================================================================================ inbox

inbox_router = APIRouter(prefix="/v1/inbox", tags=["inbox"])


def _inbox_message(message: inbox.Message, renderer: Renderer) -> InboxMessage:
    notification = message.notification
    rendered = renderer.text(resident_delivery.message_input(notification, message.language))
    return InboxMessage.from_row(
        notification,
        language=message.language,
        title=rendered.subject,
        body=rendered.text,
        link=rendered.link,
        created_at=notification.released_at,
    )


@inbox_router.get("", summary="My messages, newest first", responses=problem_responses(403, 404))
async def list_inbox(
    reader: Reader,
    repo: RepositoryDep,
    renderer: RendererDep,
    unread: bool = Query(default=False, description="Only messages not read yet"),
    before: dt.datetime | None = Query(default=None, description="Only messages older than this (paging)"),
    limit: Limit = 50,
) -> InboxPage:
    found = await inbox.messages(repo, reader, unread_only=unread, before=before, limit=limit)
    items = [_inbox_message(m, renderer) for m in found.page]
    return InboxPage(
        items=items, unread=found.unread, next_before=items[-1].created_at if len(items) == limit else None
    )


@inbox_router.get("/{notification_id}", summary="One of my messages", responses=problem_responses(403, 404))
async def get_inbox_message(
    notification_id: uuid.UUID, reader: Reader, repo: RepositoryDep, renderer: RendererDep
) -> InboxMessage:
    return _inbox_message(await inbox.message(repo, reader, notification_id), renderer)


@inbox_router.post(
    "/{notification_id}/read", summary="Mark one of my messages read", responses=problem_responses(403, 404)
)
async def mark_read(
    notification_id: uuid.UUID, reader: Reader, repo: RepositoryDep, renderer: RendererDep
) -> InboxMessage:
    return _inbox_message(await inbox.mark_read(repo, reader, notification_id), renderer)


# ================================================================================================ access log

access_log_router = APIRouter(prefix="/v1/access-log", tags=["inbox"])


@access_log_router.get(
    "", summary="Who read my messages for me (a representative), when and under which authority, newest first",
    responses=problem_responses(403),
)  # fmt: skip
async def read_access_log(
    resident_id: ResidentId,
    repo: RepositoryDep,
    limit: Limit = 50,
    cursor: str | None = Query(default=None, max_length=20, pattern=r"^[0-9]{1,18}$"),
) -> AccessLogPage:
    return await inbox.access_log(repo, resident_id, cursor=cursor, limit=limit)


# ================================================================================================ preferences

preferences_router = APIRouter(prefix="/v1/preferences", tags=["preferences"])


def _preferences_out(resident_id: uuid.UUID, preference: Preference | None) -> PreferencesOut:
    if preference is None:
        return PreferencesOut(
            resident_id=resident_id, channels=None, language=None, quiet_hours=None, timezone=None, updated_at=None
        )
    quiet = None
    if preference.quiet_hours_start is not None and preference.quiet_hours_end is not None:
        quiet = QuietHours(
            start=preference.quiet_hours_start.strftime("%H:%M"), end=preference.quiet_hours_end.strftime("%H:%M")
        )
    return PreferencesOut.from_row(preference, quiet_hours=quiet)


@preferences_router.get("", summary="My notification preferences", responses=problem_responses(403))
async def get_preferences(resident_id: ResidentId, repo: RepositoryDep) -> PreferencesOut:
    return _preferences_out(resident_id, await repo.preference(resident_id))


@preferences_router.put(
    "",
    summary="Set my notification preferences (each overrides what I told intake; null falls back to it)",
    responses=problem_responses(403),
)
async def put_preferences(body: PreferencesIn, resident_id: ResidentId, repo: RepositoryDep) -> PreferencesOut:
    return _preferences_out(resident_id, await preferences.replace(repo, resident_id, body))


# ================================================================================================ admin: deliveries

admin_router = APIRouter(prefix="/v1/notification-deliveries", tags=["administration"])


def _delivery_out(delivery: Delivery) -> NotificationDeliveryOut:
    notification = delivery.notification
    return NotificationDeliveryOut.from_row(
        delivery, application_id=notification.application_id, kind=notification.kind
    )


@admin_router.get("", summary="Resident notification deliveries (e.g. the dead ones)", responses=problem_responses(403))
async def list_notification_deliveries(
    principal: Admin,
    repo: RepositoryDep,
    status: DeliveryStatus | None = None,
    channel: Annotated[str | None, Query(pattern="^(inbox|email|sms|post)$")] = None,
    resident_id: uuid.UUID | None = None,
    limit: Limit = 100,
) -> list[NotificationDeliveryOut]:
    rows = await repo.notification_deliveries(
        status=status.value if status else None, channel=channel, resident_id=resident_id, limit=limit
    )
    return [_delivery_out(d) for d in rows]


@admin_router.post(
    "/{delivery_id}/retry",
    summary="Try a dead (or failing) delivery again, with a fresh round of attempts",
    responses=problem_responses(403, 404, 409),
)
async def retry_notification_delivery(
    delivery_id: uuid.UUID, principal: Admin, repo: RepositoryDep
) -> NotificationDeliveryOut:
    return _delivery_out(await resident_delivery.retry(repo, delivery_id))


# ================================================================================================ admin: letters

letters_router = APIRouter(prefix="/v1/letters", tags=["administration"])


@letters_router.get(
    "", summary="Letters for residents without a digital channel, oldest first: to print and post, or sent",
    responses=problem_responses(403),
)  # fmt: skip
async def list_letters(
    principal: Admin, repo: RepositoryDep, status: LetterStatus | None = LetterStatus.TO_SEND, limit: Limit = 100
) -> list[LetterOut]:
    return [LetterOut.from_row(letter) for letter in await repo.letters(status=status.value if status else None,
                                                                          limit=limit)]  # fmt: skip


@letters_router.get(
    "/{letter_id}/pdf",
    summary="The print-ready letter (it carries the resident's name and address: the read is audited)",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}, **problem_responses(403, 404)},
)
async def get_letter_pdf(letter_id: uuid.UUID, principal: Admin, repo: RepositoryDep, ctx: ContextDep) -> Response:
    content = await letters.pdf(repo, ctx.letters, principal, letter_id)
    return Response(content, media_type="application/pdf", headers={"Cache-Control": "no-store"})


@letters_router.post(
    "/{letter_id}/sent", summary="The office printed and posted the letter", responses=problem_responses(403, 404, 409)
)
async def mark_letter_sent(letter_id: uuid.UUID, principal: Admin, repo: RepositoryDep) -> LetterOut:
    return LetterOut.from_row(await letters.mark_sent(repo, principal, letter_id))


# ================================================================================================ partners

partners_router = APIRouter(prefix="/v1/partners", tags=["partners"])


def _partner_out(partner: Partner, prefix: str) -> PartnerOut:
    return PartnerOut.from_row(
        partner,
        grants=[GrantOut.from_row(g) for g in partner.grants],
        nats_user=f"partner-{partner.id}",
        nats_subjects=partner_subject(prefix, partner.id, ">"),
    )


@partners_router.get("", summary="Partners and what they are granted", responses=problem_responses(403))
async def list_partners(principal: Admin, repo: RepositoryDep, settings: SettingsDep) -> list[PartnerOut]:
    return [_partner_out(p, settings.bus_prefix) for p in await repo.partners()]


@partners_router.get(
    "/{partner_id}", summary="A partner (administrators; a partner sees itself)", responses=problem_responses(404)
)
async def get_partner(
    partner_id: PartnerId, principal: PartnerOrAdmin, repo: RepositoryDep, settings: SettingsDep
) -> PartnerOut:
    return _partner_out(await partners.visible(repo, principal, partner_id), settings.bus_prefix)


@partners_router.put(
    "/{partner_id}/grants",
    summary="Set the event types a partner may receive, each with its purpose (replaces the list; creates the partner)",
    responses=problem_responses(403),
)
async def put_grants(
    partner_id: PartnerId, body: GrantsIn, principal: Admin, repo: RepositoryDep, settings: SettingsDep
) -> PartnerOut:
    partner = await partners.set_grants(repo, principal, partner_id, body.grants)
    return _partner_out(partner, settings.bus_prefix)


# ================================================================================================ subscriptions

subscriptions_router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


def _subscription_out(subscription: Subscription, prefix: str) -> SubscriptionOut:
    return SubscriptionOut.from_row(subscription, nats_subjects=subscriptions.nats_subjects(prefix, subscription))


def _subscription_created(subscription: Subscription, prefix: str) -> SubscriptionCreated:
    """With the signing secret: shown only now."""
    return SubscriptionCreated.from_row(subscription, nats_subjects=subscriptions.nats_subjects(prefix, subscription))


@subscriptions_router.post(
    "",
    status_code=201,
    response_model=SubscriptionCreated,
    summary="Subscribe to granted event types, by webhook or NATS (Idempotency-Key supported)",
    responses={
        **CREATED_AT_LOCATION,
        **problem_responses(403, 409),
    },
)
async def create_subscription(
    body: SubscriptionIn,
    principal: PartnerCaller,
    repo: RepositoryDep,
    settings: SettingsDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    async def create() -> SubscriptionCreated:
        return _subscription_created(await subscriptions.create(repo, settings, principal, body), settings.bus_prefix)

    return await idempotent.create(body, create, location=lambda created: f"/v1/subscriptions/{created['id']}")


@subscriptions_router.get("", summary="My subscriptions (administrators: all)", responses=problem_responses(403))
async def list_subscriptions(
    principal: PartnerOrAdmin,
    repo: RepositoryDep,
    settings: SettingsDep,
    partner_id: Annotated[str | None, Query(pattern=PARTNER_ID_PATTERN)] = None,
    limit: Limit = 100,
) -> list[SubscriptionOut]:
    rows = await repo.visible_subscriptions(principal, partner_id=partner_id, limit=limit)
    return [_subscription_out(s, settings.bus_prefix) for s in rows]


@subscriptions_router.get("/{subscription_id}", summary="One subscription", responses=problem_responses(404))
async def get_subscription(
    subscription_id: uuid.UUID, principal: PartnerOrAdmin, repo: RepositoryDep, settings: SettingsDep
) -> SubscriptionOut:
    return _subscription_out(await subscriptions.read(repo, principal, subscription_id), settings.bus_prefix)


@subscriptions_router.delete(
    "/{subscription_id}",
    status_code=204,
    summary="Unsubscribe: nothing more is sent, queued deliveries are cancelled",
    responses=problem_responses(404),
)
async def delete_subscription(subscription_id: uuid.UUID, principal: PartnerOrAdmin, repo: RepositoryDep) -> Response:
    await subscriptions.delete(repo, principal, subscription_id)
    return Response(status_code=204)


@subscriptions_router.post(
    "/{subscription_id}/rotate-secret",
    summary="New webhook signing secret; the old one keeps signing during the grace period",
    responses=problem_responses(404, 409),
)
async def rotate_secret(
    subscription_id: uuid.UUID,
    principal: PartnerCaller,
    repo: RepositoryDep,
    settings: SettingsDep,
    body: RotateSecretIn | None = None,
) -> RotatedSecret:
    subscription = await subscriptions.rotate_secret(repo, settings, principal, subscription_id, body)
    return RotatedSecret.from_row(subscription, subscription_id=subscription.id)


@subscriptions_router.post(
    "/{subscription_id}/pause", summary="Stop sending; deliveries queue up", responses=problem_responses(404)
)
async def pause_subscription(
    subscription_id: uuid.UUID, principal: PartnerOrAdmin, repo: RepositoryDep, settings: SettingsDep
) -> SubscriptionOut:
    return _subscription_out(await subscriptions.pause(repo, principal, subscription_id), settings.bus_prefix)


@subscriptions_router.post(
    "/{subscription_id}/resume",
    summary="Resume a paused subscription: its queued deliveries go out, in order",
    responses=problem_responses(404),
)
async def resume_subscription(
    subscription_id: uuid.UUID, principal: PartnerOrAdmin, repo: RepositoryDep, settings: SettingsDep
) -> SubscriptionOut:
    return _subscription_out(await subscriptions.resume(repo, principal, subscription_id), settings.bus_prefix)


# ================================================================================================ deliveries

deliveries_router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])


def _webhook_delivery_out(delivery: WebhookDelivery) -> WebhookDeliveryOut:
    return WebhookDeliveryOut.from_row(delivery, sequence=delivery.seq)


@deliveries_router.get(
    "", summary="Webhook deliveries and withdrawn NATS copies, newest first (partners: their own; administrators: all)",
    responses=problem_responses(403),
)  # fmt: skip
async def list_deliveries(
    principal: PartnerOrAdmin,
    repo: RepositoryDep,
    status: DeliveryStatus | None = None,
    subscription_id: uuid.UUID | None = None,
    event_type: Annotated[str | None, Query(max_length=80)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="Only deliveries with a lower sequence")] = None,
    limit: Limit = 100,
) -> list[WebhookDeliveryOut]:
    rows = await repo.visible_webhook_deliveries(
        principal,
        status=status.value if status else None,
        subscription_id=subscription_id,
        event_type=event_type,
        limit=limit,
        before_seq=before,
    )
    return [_webhook_delivery_out(d) for d in rows]


@deliveries_router.get("/{delivery_id}", summary="One webhook delivery", responses=problem_responses(404))
async def get_delivery(delivery_id: uuid.UUID, principal: PartnerOrAdmin, repo: RepositoryDep) -> WebhookDeliveryOut:
    return _webhook_delivery_out(await subscriptions.visible_delivery(repo, principal, delivery_id))


@deliveries_router.post(
    "/{delivery_id}/redeliver",
    status_code=202,
    summary="Send a delivery again (unless withdrawn by the resident), in its place in the subscription's order",
    responses=problem_responses(404, 409),
)
async def redeliver(delivery_id: uuid.UUID, principal: PartnerOrAdmin, repo: RepositoryDep) -> WebhookDeliveryOut:
    return _webhook_delivery_out(await subscriptions.redeliver(repo, principal, delivery_id))


# ================================================================================================ a resident's data

residents_router = APIRouter(prefix="/v1/residents", tags=["rights"])


@residents_router.get(
    "/{resident_id}/data",
    summary="Everything notify holds about a resident: their part of the resident's export (the resident, or intake "
    "gathering it)",
    responses=problem_responses(404),
)
async def resident_data_part(
    resident_id: uuid.UUID,
    principal: PrincipalDep,
    repo: WriteRepositoryDep,
    export_id: uuid.UUID | None = Query(default=None, description="The export this read is for (in the audit log)"),
) -> ResidentDataPart:
    return await resident_data.part(repo, principal, resident_id, export_id)


ROUTERS = (
    residents_router,
    inbox_router,
    access_log_router,
    preferences_router,
    admin_router,
    letters_router,
    partners_router,
    subscriptions_router,
    deliveries_router,
)
