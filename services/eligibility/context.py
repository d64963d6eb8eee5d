"""Eligibility's service context: its settings and the process's one :class:`Eligibility` (the catalogue store it
caches, the evaluation, the outbox). Made once per running service (``main.definition``), handed to routes through
:data:`ContextDep` and to the event handlers when they are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.eligibility.determinations import Eligibility
from services.eligibility.settings import EligibilitySettings
from shared.deps import context_dependency


@dataclass
class EligibilityContext:
    settings: EligibilitySettings
    eligibility: Eligibility


ContextDep = Annotated[EligibilityContext, Depends(context_dependency(EligibilityContext))]
