"""What the routing logic needs beside a session: settings, the working-day calendar, the clock and the outbox.

Routing's service context: one instance per running service (``ServiceDefinition.context``), handed to routes
through :data:`ContextDep` and to the event handlers and the SLA timer when they are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.routing.settings import RoutingSettings
from services.routing.sla import Clock, WorkingCalendar
from shared.deps import context_dependency
from shared.outbox import Outbox


@dataclass
class RoutingContext:
    settings: RoutingSettings
    calendar: WorkingCalendar
    clock: Clock
    outbox: Outbox

    @classmethod
    def build(cls, settings: RoutingSettings, outbox: Outbox) -> RoutingContext:
        return cls(
            settings=settings,
            calendar=WorkingCalendar(settings.holiday_country, settings.extra_closure_dates),
            clock=Clock(settings.timezone, settings.today),
            outbox=outbox,
        )


ContextDep = Annotated[RoutingContext, Depends(context_dependency(RoutingContext))]
