"""Intake's service context: its settings, its outbox, its clock, eligibility's catalogue (cached over HTTP), the
worker gathering residents' exports from the services and the offer expiry timer. Made once per running service
(``main.definition``) and handed to routes through :data:`ContextDep` and to the event handlers when they are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends

from services.intake.catalogue import Catalogue
from services.intake.exports import ExportWorker
from services.intake.settings import IntakeSettings
from shared.clock import Clock
from shared.deps import context_dependency
from shared.outbox import Outbox


class Sweeps(Protocol):
    """The offer expiry timer, as the context knows it (services.intake.expiry.OfferExpiry): a pass on demand."""

    async def sweep(self) -> int: ...


@dataclass
class IntakeContext:
    settings: IntakeSettings
    outbox: Outbox
    clock: Clock
    catalogue: Catalogue
    exports: ExportWorker
    # The offer expiry timer running for the service's lifetime (set when it starts).
    expiry: Sweeps | None = None


get_context = context_dependency(IntakeContext)
ContextDep = Annotated[IntakeContext, Depends(get_context)]
