"""Eligibility's service context: its settings and the process's one :class:`Eligibility` (the catalogue store it
caches, the evaluation, the outbox). Made once per running service (``main.definition``), handed to routes through
:data:`ContextDep` and to the event handlers when they are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.eligibility.determinations import Eligibility
from services.eligibility.scheduler import ScreeningScheduler
from services.eligibility.settings import EligibilitySettings
from shared.deps import context_dependency


@dataclass
class EligibilityContext:
    settings: EligibilitySettings
    eligibility: Eligibility
    # Screening that runs by itself: the scheduler's loop (when on), and a pass on demand (``tick``).
    scheduler: ScreeningScheduler


ContextDep = Annotated[EligibilityContext, Depends(context_dependency(EligibilityContext))]
