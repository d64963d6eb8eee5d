"""What the routing logic needs beside a session: settings, the working-day calendar, the clock and the outbox.

Routing's service context: one instance per running service (``ServiceDefinition.context``), handed to routes
through :data:`ContextDep` and to the event handlers and the SLA timer when they are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends

from services.routing.settings import RoutingSettings
from services.routing.sla import WorkingCalendar
from shared.clock import Clock
from shared.deps import context_dependency
from shared.outbox import Outbox


class Sweeps(Protocol):
    """The SLA timer, as the context knows it (services.routing.timer.SlaTimer): a pass can be run on demand."""

    async def sweep(self) -> int: ...


@dataclass
class RoutingContext:
    settings: RoutingSettings
    calendar: WorkingCalendar
    clock: Clock
    outbox: Outbox
    # The SLA timer running for the service's lifetime (set when it starts; an operator's or a test's pass runs it).
    timer: Sweeps | None = None
    # The outreach timer (services.routing.outreach.OutreachTimer), likewise.
    outreach: Sweeps | None = None

    @classmethod
    def build(cls, settings: RoutingSettings, outbox: Outbox) -> RoutingContext:
        return cls(
            settings=settings,
            calendar=WorkingCalendar(settings.holiday_country, settings.extra_closure_dates),
            clock=Clock.from_settings(settings),
            outbox=outbox,
        )


ContextDep = Annotated[RoutingContext, Depends(context_dependency(RoutingContext))]
