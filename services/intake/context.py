"""Intake's service context: its settings, its outbox, its clock, eligibility's catalogue (cached over HTTP) and the
worker gathering residents' exports from the services. Made once per running service (``main.definition``) and
handed to routes through :data:`ContextDep` and to the event handlers when they are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.intake.catalogue import Catalogue
from services.intake.exports import ExportWorker
from services.intake.settings import IntakeSettings
from shared.clock import Clock
from shared.deps import context_dependency
from shared.outbox import Outbox


@dataclass
class IntakeContext:
    settings: IntakeSettings
    outbox: Outbox
    clock: Clock
    catalogue: Catalogue
    exports: ExportWorker


ContextDep = Annotated[IntakeContext, Depends(context_dependency(IntakeContext))]
