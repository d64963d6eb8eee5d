"""The notify service's long-lived resources: HTTP clients, the senders, the two delivery loops and the loop
publishing the aggregate feed's ended periods.

Each delivery loop wakes when a transaction that created work due now for it commits (a hook on the database), and
otherwise every ``worker_interval_seconds`` to pick up what came due since (bundles whose window closed, retries);
the aggregate loop looks every ``worker_interval_seconds`` whether a period ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify import resident_data
from services.notify.aggregates import AggregatePublisher
from services.notify.channels import email_sender, sms_sender
from services.notify.contacts import ContactDirectory
from services.notify.context import NotifyContext
from services.notify.delivery import ResidentDelivery, Senders
from services.notify.letters import LetterPrinter
from services.notify.notifications import PARTNER_WORK, RESIDENT_WORK, WORK_PENDING
from services.notify.partner_delivery import PartnerDelivery
from services.notify.rendering import Renderer
from services.notify.settings import NotifySettings
from shared.clock import Clock
from shared.db import background
from shared.runtime import Runtime
from shared.tls import verifying_context

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running(runtime: Runtime, settings: NotifySettings) -> AsyncIterator[NotifyContext]:
    """Notify's context for the service's lifetime: the clients, the senders and the two delivery loops."""
    token = settings.service_token.get_secret_value() if settings.service_token else None
    intake_client = httpx.AsyncClient(
        timeout=settings.intake_timeout_seconds, follow_redirects=False, verify=verifying_context()
    )
    # Outbound calls to the SMS gateway and partner endpoints: no cookies, no redirects, no environment proxies.
    outbound = httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        verify=verifying_context(trust_env=False),
        headers={"user-agent": "OneStop-Notify/1.0"},
    )
    contacts = ContactDirectory(intake_client, settings.intake_url, token, cache_seconds=settings.contact_cache_seconds)
    renderer = Renderer(settings.app_base_url)
    clock = Clock.from_settings(settings)
    attempts = Counter(
        "onestop_notify_delivery_attempts",
        "Delivery attempts by transport (resident/webhook), channel and result (sent/failed/dead)",
        ["transport", "channel", "result"],
        registry=runtime.metrics.registry,
    )
    residents = ResidentDelivery(
        db=runtime.db,
        outbox=runtime.outbox,
        settings=settings,
        contacts=contacts,
        renderer=renderer,
        senders=Senders(
            email=email_sender(settings),
            sms=sms_sender(settings, outbound),
            post=LetterPrinter.from_settings(settings),
        ),
        clock=clock,
        attempts=attempts,
    )
    partners = PartnerDelivery(db=runtime.db, settings=settings, client=outbound, attempts=attempts)
    runtime.housekeeping.register("erasure", lambda now: resident_data.purge(runtime.db, clock, now))
    aggregates = AggregatePublisher(db=runtime.db, outbox=runtime.outbox, settings=settings)
    wakes = {RESIDENT_WORK: asyncio.Event(), PARTNER_WORK: asyncio.Event()}

    def wake() -> None:
        for event in wakes.values():
            event.set()

    def on_commit(session: AsyncSession) -> None:
        for worker in session.info.pop(WORK_PENDING, ()):
            wakes[worker].set()

    runtime.db.on_commit(on_commit)
    # Named apart from the consumers (notify-residents-0 ...): what each costs is measured by its task's name.
    tasks = [
        asyncio.create_task(
            _loop("resident-delivery", residents.run_once, wakes[RESIDENT_WORK], settings),
            name="notify-resident-delivery",
        ),
        asyncio.create_task(
            _loop("partner-delivery", partners.run_once, wakes[PARTNER_WORK], settings), name="notify-partner-delivery"
        ),
        # Nothing wakes it: a period ends on the clock.
        asyncio.create_task(
            _loop("aggregate-feed", aggregates.run_once, asyncio.Event(), settings), name="notify-aggregate-feed"
        ),
    ]
    try:
        yield NotifyContext(settings, runtime.outbox, contacts, renderer, residents, partners, aggregates, wake, clock)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await intake_client.aclose()
        await outbound.aclose()


async def _loop(
    name: str, run_once: Callable[[], Awaitable[int]], wake: asyncio.Event, settings: NotifySettings
) -> None:
    background()
    while True:
        wake.clear()
        try:
            worked = await run_once()
        except Exception:
            log.exception("worker pass failed", extra={"worker": name})
            worked = 0
        if worked:
            continue  # more may be due right behind (the next webhook of a subscription, say)
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as the wake
        # fires (a commit at shutdown), the loop then never ends and the service's shutdown hangs.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.worker_interval_seconds):
                await wake.wait()
