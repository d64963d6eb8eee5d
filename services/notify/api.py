"""The notify HTTP API: thin routes over the repository and the domain modules.

Residents: their inbox and their preferences. Administrators: partner grants, dead notification deliveries.
Partners: their subscriptions and webhook deliveries. Every object a caller may not see answers 404.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, cast

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from services.notify import repository
from services.notify.delivery import retry_dead
from services.notify.models import (
    RETRYABLE,
    Delivery,
    DeliveryStatus,
    Notification,
    Partner,
    Preference,
    Subscription,
    SubscriptionStatus,
    Transport,
    WebhookDelivery,
    utcnow,
)
from services.notify.notifications import mark_work
from services.notify.partners import (
    PARTNER_ID_PATTERN,
    check_event_types,
    nats_subjects,
    new_subscription,
    require_granted,
    set_grants,
)
from services.notify.rendering import MessageInput, Renderer
from services.notify.schemas import (
    GrantsIn,
    InboxMessage,
    InboxPage,
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
from services.notify.webhooks import AddressPolicy, UnsafeUrl, check_url, new_secret
from services.notify.worker import EXTRAS_KEY, NotifyComponents
from shared.auth import Principal, Role, require_roles
from shared.deps import IdempotencyDep, SessionDep, get_runtime
from shared.events import partner_subject
from shared.problems import Conflict, NotFound, UnprocessableContent, problem_responses


def get_settings(request: Request) -> NotifySettings:
    return cast(NotifySettings, get_runtime(request).settings)


def get_renderer(request: Request) -> Renderer:
    components = get_runtime(request).extras.get(EXTRAS_KEY)
    if isinstance(components, NotifyComponents):
        return components.renderer
    return Renderer(get_settings(request).app_base_url)


SettingsDep = Annotated[NotifySettings, Depends(get_settings)]
RendererDep = Annotated[Renderer, Depends(get_renderer)]
Resident = Annotated[Principal, Depends(require_roles(Role.RESIDENT))]
Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
PartnerCaller = Annotated[Principal, Depends(require_roles(Role.PARTNER))]
PartnerOrAdmin = Annotated[Principal, Depends(require_roles(Role.PARTNER, Role.ADMIN))]
PartnerId = Annotated[str, Path(pattern=PARTNER_ID_PATTERN, description="The partner's id (lower-case, - and _)")]
Limit = Annotated[int, Query(ge=1, le=200)]


def _resident_id(principal: Principal) -> uuid.UUID:
    assert principal.resident_id is not None  # a resident token always names the resident (shared.auth)
    return principal.resident_id


# ================================================================================================ inbox

inbox_router = APIRouter(prefix="/v1/inbox", tags=["inbox"])


def _inbox_message(notification: Notification, renderer: Renderer, preference: Preference | None) -> InboxMessage:
    language = preference.language if preference is not None and preference.language else notification.language
    rendered = renderer.render(
        MessageInput(
            kind=notification.kind,
            language=language,
            application_id=str(notification.application_id) if notification.application_id else None,
            items=[item.data for item in notification.items],
        )
    )
    assert notification.released_at is not None
    return InboxMessage(
        id=notification.id,
        kind=notification.kind,
        application_id=notification.application_id,
        language=language,
        title=rendered.subject,
        body=rendered.text,
        link=rendered.link,
        created_at=notification.released_at,
        read_at=notification.read_at,
    )


@inbox_router.get("", summary="My messages, newest first", responses=problem_responses(403))
async def list_inbox(
    principal: Resident,
    session: SessionDep,
    renderer: RendererDep,
    unread: bool = Query(default=False, description="Only messages not read yet"),
    before: dt.datetime | None = Query(default=None, description="Only messages older than this (paging)"),
    limit: Limit = 50,
) -> InboxPage:
    resident_id = _resident_id(principal)
    if before is not None and before.tzinfo is None:
        before = before.replace(tzinfo=dt.UTC)
    rows = await repository.inbox(session, resident_id, unread_only=unread, limit=limit, before=before)
    preference = await repository.preference(session, resident_id)
    items = [_inbox_message(n, renderer, preference) for n in rows]
    return InboxPage(
        items=items,
        unread=await repository.unread_count(session, resident_id),
        next_before=items[-1].created_at if len(items) == limit else None,
    )


@inbox_router.get("/{notification_id}", summary="One of my messages", responses=problem_responses(403, 404))
async def get_inbox_message(
    notification_id: uuid.UUID, principal: Resident, session: SessionDep, renderer: RendererDep
) -> InboxMessage:
    notification = await repository.inbox_item(session, principal, notification_id)
    if notification is None:
        raise NotFound("No such message in your inbox.")
    preference = await repository.preference(session, _resident_id(principal))
    return _inbox_message(notification, renderer, preference)


@inbox_router.post(
    "/{notification_id}/read", summary="Mark one of my messages read", responses=problem_responses(403, 404)
)
async def mark_read(
    notification_id: uuid.UUID, principal: Resident, session: SessionDep, renderer: RendererDep
) -> InboxMessage:
    notification = await repository.inbox_item(session, principal, notification_id)
    if notification is None:
        raise NotFound("No such message in your inbox.")
    if notification.read_at is None:
        notification.read_at = utcnow()
    preference = await repository.preference(session, _resident_id(principal))
    return _inbox_message(notification, renderer, preference)


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
    return PreferencesOut(
        resident_id=resident_id,
        channels=preference.channels,
        language=preference.language,
        quiet_hours=quiet,
        timezone=preference.timezone,
        updated_at=preference.updated_at,
    )


@preferences_router.get("", summary="My notification preferences", responses=problem_responses(403))
async def get_preferences(principal: Resident, session: SessionDep) -> PreferencesOut:
    resident_id = _resident_id(principal)
    return _preferences_out(resident_id, await repository.preference(session, resident_id))


@preferences_router.put(
    "",
    summary="Set my notification preferences (each overrides what I told intake; null falls back to it)",
    responses=problem_responses(403),
)
async def put_preferences(body: PreferencesIn, principal: Resident, session: SessionDep) -> PreferencesOut:
    resident_id = _resident_id(principal)
    preference = await repository.preference(session, resident_id)
    if preference is None:
        preference = Preference(resident_id=resident_id, updated_at=utcnow())
        session.add(preference)
    start, end = body.quiet_hours.times() if body.quiet_hours else (None, None)
    preference.channels = list(body.channels) if body.channels is not None else None
    preference.language = body.language
    preference.quiet_hours_start, preference.quiet_hours_end = start, end
    preference.timezone = body.timezone
    preference.updated_at = utcnow()
    await session.flush()
    # Text messages held back by the old quiet hours are looked at again now, under the new ones.
    await repository.recheck_waiting_sms(session, resident_id)
    mark_work(session)
    return _preferences_out(resident_id, preference)


# ================================================================================================ admin: deliveries

admin_router = APIRouter(prefix="/v1/notification-deliveries", tags=["administration"])


def _delivery_out(delivery: Delivery) -> NotificationDeliveryOut:
    notification = delivery.notification
    return NotificationDeliveryOut(
        id=delivery.id,
        notification_id=delivery.notification_id,
        resident_id=delivery.resident_id,
        application_id=notification.application_id,
        kind=notification.kind,
        channel=delivery.channel,
        status=delivery.status,
        attempts=delivery.attempts,
        last_error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at,
        created_at=delivery.created_at,
        updated_at=delivery.updated_at,
        sent_at=delivery.sent_at,
    )


@admin_router.get("", summary="Resident notification deliveries (e.g. the dead ones)", responses=problem_responses(403))
async def list_notification_deliveries(
    principal: Admin,
    session: SessionDep,
    status: DeliveryStatus | None = None,
    channel: Annotated[str | None, Query(pattern="^(inbox|email|sms)$")] = None,
    resident_id: uuid.UUID | None = None,
    limit: Limit = 100,
) -> list[NotificationDeliveryOut]:
    rows = await repository.notification_deliveries(
        session, status=status.value if status else None, channel=channel, resident_id=resident_id, limit=limit
    )
    return [_delivery_out(d) for d in rows]


@admin_router.post(
    "/{delivery_id}/retry",
    summary="Try a dead (or failing) delivery again, with a fresh round of attempts",
    responses=problem_responses(403, 404, 409),
)
async def retry_notification_delivery(
    delivery_id: uuid.UUID, principal: Admin, session: SessionDep
) -> NotificationDeliveryOut:
    delivery = await repository.notification_delivery(session, delivery_id)
    if delivery is None:
        raise NotFound(f"No delivery {delivery_id}.")
    if delivery.status not in (DeliveryStatus.DEAD.value, DeliveryStatus.FAILED.value):
        raise Conflict(f"The delivery is {delivery.status}; only dead or failed deliveries can be retried.")
    if delivery.claimed_until is not None and delivery.claimed_until > utcnow():
        raise Conflict("The delivery is being attempted right now.")
    await retry_dead(session, delivery)
    await session.refresh(delivery)
    mark_work(session)
    return _delivery_out(delivery)


# ================================================================================================ partners

partners_router = APIRouter(prefix="/v1/partners", tags=["partners"])


def _partner_out(partner: Partner, prefix: str) -> PartnerOut:
    return PartnerOut(
        id=partner.id,
        name=partner.name,
        grants=partner.granted_types,
        nats_user=f"partner-{partner.id}",
        nats_subjects=partner_subject(prefix, partner.id, ">"),
        updated_at=partner.updated_at,
        updated_by=partner.updated_by,
    )


@partners_router.get("", summary="Partners and what they are granted", responses=problem_responses(403))
async def list_partners(principal: Admin, session: SessionDep, settings: SettingsDep) -> list[PartnerOut]:
    return [_partner_out(p, settings.bus_prefix) for p in await repository.partners(session)]


@partners_router.get(
    "/{partner_id}", summary="A partner (administrators; a partner sees itself)", responses=problem_responses(404)
)
async def get_partner(
    partner_id: PartnerId, principal: PartnerOrAdmin, session: SessionDep, settings: SettingsDep
) -> PartnerOut:
    partner = await repository.visible_partner(session, principal, partner_id)
    if partner is None:
        raise NotFound(f"No partner {partner_id}.")
    return _partner_out(partner, settings.bus_prefix)


@partners_router.put(
    "/{partner_id}/grants",
    summary="Set the event types a partner may receive (replaces the list; creates the partner)",
    responses=problem_responses(403),
)
async def put_grants(
    partner_id: PartnerId, body: GrantsIn, principal: Admin, session: SessionDep, settings: SettingsDep
) -> PartnerOut:
    event_types = check_event_types(body.event_types)
    partner = await set_grants(session, partner_id, event_types, by=principal.subject)
    return _partner_out(partner, settings.bus_prefix)


# ================================================================================================ subscriptions

subscriptions_router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


def _subscription_out(subscription: Subscription, prefix: str) -> SubscriptionOut:
    return SubscriptionOut(
        id=subscription.id,
        partner_id=subscription.partner_id,
        transport=subscription.transport,
        event_types=subscription.event_types,
        url=subscription.url,
        description=subscription.description,
        status=subscription.status,
        consecutive_failures=subscription.consecutive_failures,
        paused_reason=subscription.paused_reason,
        paused_at=subscription.paused_at,
        nats_subjects=nats_subjects(prefix, subscription),
        previous_secret_expires_at=subscription.previous_secret_expires_at,
        created_at=subscription.created_at,
        updated_at=subscription.updated_at,
    )


@subscriptions_router.post(
    "",
    status_code=201,
    response_model=SubscriptionCreated,
    summary="Subscribe to granted event types, by webhook or NATS (Idempotency-Key supported)",
    responses={
        201: {"headers": {"Location": {"required": True, "schema": {"type": "string"}}}},
        **problem_responses(403, 409),
    },
)
async def create_subscription(
    request: Request,
    body: SubscriptionIn,
    principal: PartnerCaller,
    session: SessionDep,
    idempotency: IdempotencyDep,
    settings: SettingsDep,
) -> JSONResponse:
    partner_id = principal.partner_id
    assert partner_id is not None  # a partner token always names the partner (shared.auth)

    async def create() -> SubscriptionCreated:
        event_types = check_event_types(body.event_types)
        transport = Transport(body.transport)
        if transport is Transport.WEBHOOK:
            if body.url is None:
                raise UnprocessableContent.for_field("url", "a webhook subscription needs a url", type_="missing")
            try:
                await check_url(body.url, AddressPolicy.from_settings(
                    settings.webhook_forbidden_networks, settings.webhook_allowed_networks))  # fmt: skip
            except UnsafeUrl as exc:
                raise UnprocessableContent.for_field("url", str(exc), type_="forbidden_url") from None
        elif body.url is not None:
            raise UnprocessableContent.for_field("url", "a NATS subscription has no url", type_="unexpected")
        await require_granted(session, partner_id, event_types)
        secret = new_secret() if transport is Transport.WEBHOOK else None
        subscription = new_subscription(
            partner_id=partner_id,
            transport=transport,
            event_types=event_types,
            url=body.url,
            description=body.description,
            secret=secret,
            by=principal.subject,
        )
        session.add(subscription)
        await session.flush()
        return SubscriptionCreated(**_subscription_out(subscription, settings.bus_prefix).model_dump(), secret=secret)

    answer = await idempotency.run(request, session, principal, body, create)
    return answer.response(headers={"Location": f"/v1/subscriptions/{answer.body['id']}"})


@subscriptions_router.get("", summary="My subscriptions (administrators: all)", responses=problem_responses(403))
async def list_subscriptions(
    principal: PartnerOrAdmin,
    session: SessionDep,
    settings: SettingsDep,
    partner_id: Annotated[str | None, Query(pattern=PARTNER_ID_PATTERN)] = None,
    limit: Limit = 100,
) -> list[SubscriptionOut]:
    rows = await repository.visible_subscriptions(session, principal, partner_id=partner_id, limit=limit)
    return [_subscription_out(s, settings.bus_prefix) for s in rows]


async def _subscription(session: SessionDep, principal: PartnerOrAdmin, subscription_id: uuid.UUID) -> Subscription:
    subscription = await repository.visible_subscription(session, principal, subscription_id, for_update=True)
    if subscription is None:
        raise NotFound(f"No subscription {subscription_id}.")
    return subscription


VisibleSubscription = Annotated[Subscription, Depends(_subscription)]


@subscriptions_router.get("/{subscription_id}", summary="One subscription", responses=problem_responses(404))
async def get_subscription(subscription: VisibleSubscription, settings: SettingsDep) -> SubscriptionOut:
    return _subscription_out(subscription, settings.bus_prefix)


@subscriptions_router.delete(
    "/{subscription_id}",
    status_code=204,
    summary="Unsubscribe: nothing more is sent, queued deliveries are cancelled",
    responses=problem_responses(404),
)
async def delete_subscription(subscription: VisibleSubscription, session: SessionDep) -> Response:
    now = utcnow()
    subscription.status = SubscriptionStatus.DELETED.value
    subscription.deleted_at = now
    subscription.updated_at = now
    subscription.secret = subscription.previous_secret = None
    await repository.cancel_queued_webhooks(session, subscription.id, "subscription deleted")
    return Response(status_code=204)


@subscriptions_router.post(
    "/{subscription_id}/rotate-secret",
    summary="New webhook signing secret; the old one keeps signing during the grace period",
    responses=problem_responses(404, 409),
)
async def rotate_secret(
    subscription_id: uuid.UUID,
    principal: PartnerCaller,
    session: SessionDep,
    settings: SettingsDep,
    body: RotateSecretIn | None = None,
) -> RotatedSecret:
    subscription = await _subscription(session, principal, subscription_id)
    if subscription.transport != Transport.WEBHOOK.value:
        raise Conflict("Only webhook subscriptions have a signing secret.")
    now = utcnow()
    grace = body.grace_seconds if body is not None and body.grace_seconds is not None else None
    grace_seconds = settings.webhook_secret_grace_seconds if grace is None else float(grace)
    subscription.previous_secret = subscription.secret if grace_seconds > 0 else None
    subscription.previous_secret_expires_at = now + dt.timedelta(seconds=grace_seconds) if grace_seconds > 0 else None
    subscription.secret = new_secret()
    subscription.updated_at = now
    return RotatedSecret(
        subscription_id=subscription.id,
        secret=subscription.secret,
        previous_secret_expires_at=subscription.previous_secret_expires_at,
    )


@subscriptions_router.post(
    "/{subscription_id}/pause", summary="Stop sending; deliveries queue up", responses=problem_responses(404)
)
async def pause_subscription(subscription: VisibleSubscription, settings: SettingsDep) -> SubscriptionOut:
    if subscription.status == SubscriptionStatus.ACTIVE.value:
        now = utcnow()
        subscription.status = SubscriptionStatus.PAUSED.value
        subscription.paused_at = now
        subscription.paused_reason = "paused on request"
        subscription.updated_at = now
    return _subscription_out(subscription, settings.bus_prefix)


@subscriptions_router.post(
    "/{subscription_id}/resume",
    summary="Resume a paused subscription: its queued deliveries go out, in order",
    responses=problem_responses(404),
)
async def resume_subscription(
    subscription: VisibleSubscription, session: SessionDep, settings: SettingsDep
) -> SubscriptionOut:
    if subscription.status == SubscriptionStatus.PAUSED.value:
        subscription.status = SubscriptionStatus.ACTIVE.value
        subscription.paused_at = None
        subscription.paused_reason = None
        subscription.consecutive_failures = 0
        subscription.updated_at = utcnow()
        await repository.wake_queue_head(session, subscription.id)
        mark_work(session)
    return _subscription_out(subscription, settings.bus_prefix)


# ================================================================================================ deliveries

deliveries_router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])


def _webhook_delivery_out(delivery: WebhookDelivery) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        id=delivery.id,
        sequence=delivery.seq,
        subscription_id=delivery.subscription_id,
        partner_id=delivery.partner_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
    )


@deliveries_router.get(
    "", summary="Webhook deliveries, newest first (partners: their own; administrators: all)",
    responses=problem_responses(403),
)  # fmt: skip
async def list_deliveries(
    principal: PartnerOrAdmin,
    session: SessionDep,
    status: DeliveryStatus | None = None,
    subscription_id: uuid.UUID | None = None,
    event_type: Annotated[str | None, Query(max_length=80)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="Only deliveries with a lower sequence")] = None,
    limit: Limit = 100,
) -> list[WebhookDeliveryOut]:
    rows = await repository.visible_webhook_deliveries(
        session,
        principal,
        status=status.value if status else None,
        subscription_id=subscription_id,
        event_type=event_type,
        limit=limit,
        before_seq=before,
    )
    return [_webhook_delivery_out(d) for d in rows]


@deliveries_router.get("/{delivery_id}", summary="One webhook delivery", responses=problem_responses(404))
async def get_delivery(delivery_id: uuid.UUID, principal: PartnerOrAdmin, session: SessionDep) -> WebhookDeliveryOut:
    delivery = await repository.visible_webhook_delivery(session, principal, delivery_id)
    if delivery is None:
        raise NotFound(f"No delivery {delivery_id}.")
    return _webhook_delivery_out(delivery)


@deliveries_router.post(
    "/{delivery_id}/redeliver",
    status_code=202,
    summary="Send a delivery again (whatever its status), in its place in the subscription's order",
    responses=problem_responses(404, 409),
)
async def redeliver(delivery_id: uuid.UUID, principal: PartnerOrAdmin, session: SessionDep) -> WebhookDeliveryOut:
    delivery = await repository.visible_webhook_delivery(session, principal, delivery_id, for_update=True)
    if delivery is None:
        raise NotFound(f"No delivery {delivery_id}.")
    subscription = await session.get(Subscription, delivery.subscription_id)
    if subscription is None or subscription.status == SubscriptionStatus.DELETED.value:
        raise Conflict("The subscription was deleted.")
    now = utcnow()
    if delivery.status in RETRYABLE and delivery.claimed_until is not None and delivery.claimed_until > now:
        raise Conflict("The delivery is being attempted right now.")
    delivery.status = DeliveryStatus.PENDING.value
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.last_error = None
    delivery.updated_at = now
    mark_work(session)
    return _webhook_delivery_out(delivery)


ROUTERS = (
    inbox_router,
    preferences_router,
    admin_router,
    partners_router,
    subscriptions_router,
    deliveries_router,
)
