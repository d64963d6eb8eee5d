"""The portal's long-lived parts: settings, the four services' HTTP clients, the sign-in client, the sessions, the
messages and the templates. Made once in ``main.create_app``'s lifespan and handed to routes by :data:`ContextDep`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from services.portal.backends import Backends
from services.portal.i18n import Messages
from services.portal.session import Sessions
from services.portal.settings import PortalSettings

if TYPE_CHECKING:
    from jinja2 import Environment

    from services.portal.people import DemoPeople
    from services.portal.provider import EmbeddedProvider
    from services.portal.signin import RelyingParty


@dataclass
class PortalContext:
    settings: PortalSettings
    backends: Backends
    sessions: Sessions
    messages: Messages
    templates: Environment
    relying_party: RelyingParty
    provider: EmbeddedProvider | None
    people: DemoPeople | None


def get_context(request: Request) -> PortalContext:
    context: PortalContext = request.app.state.context
    return context


ContextDep = Annotated[PortalContext, Depends(get_context)]
