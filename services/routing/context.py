"""What the routing logic needs beside a session: settings, the working-day calendar, the clock and the outbox.

One instance per running service, kept on ``runtime.extras`` and handed to routes through a dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from services.routing.settings import RoutingSettings
from services.routing.sla import Clock, WorkingCalendar
from shared.deps import get_runtime
from shared.outbox import Outbox

if TYPE_CHECKING:
    from shared.service import Runtime

EXTRAS_KEY = "routing"


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


def routing_context(runtime: Runtime) -> RoutingContext:
    context = runtime.extras.get(EXTRAS_KEY)
    if context is None:
        settings = runtime.settings
        if not isinstance(settings, RoutingSettings):
            settings = RoutingSettings.model_validate(settings.model_dump())
        context = RoutingContext.build(settings, runtime.outbox)
        runtime.extras[EXTRAS_KEY] = context
    assert isinstance(context, RoutingContext)
    return context


def get_context(request: Request) -> RoutingContext:
    return routing_context(get_runtime(request))


ContextDep = Annotated[RoutingContext, Depends(get_context)]
