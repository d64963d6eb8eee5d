"""Notify's service context: its settings, its outbox, the contact directory (intake over HTTP), the renderer, the
two delivery workers, the hook that wakes them, the publisher of the aggregate feed and the clock (today in the city,
by which representations expire). Made once per running service (:func:`services.notify.worker.running`), handed
to routes through :data:`ContextDep` and to the event handlers when they are made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.notify.aggregates import AggregatePublisher
from services.notify.contacts import ContactDirectory
from services.notify.delivery import ResidentDelivery
from services.notify.letters import LetterPrinter
from services.notify.partner_delivery import PartnerDelivery
from services.notify.rendering import Renderer
from services.notify.settings import NotifySettings
from shared.clock import Clock
from shared.deps import context_dependency
from shared.outbox import Outbox


@dataclass
class NotifyContext:
    settings: NotifySettings
    outbox: Outbox
    contacts: ContactDirectory
    renderer: Renderer
    residents: ResidentDelivery
    partners: PartnerDelivery
    aggregates: AggregatePublisher
    wake: Callable[[], None]
    clock: Clock

    @property
    def letters(self) -> LetterPrinter:
        """Where the post channel writes its letters."""
        return self.residents.senders.post


ContextDep = Annotated[NotifyContext, Depends(context_dependency(NotifyContext))]
