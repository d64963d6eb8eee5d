"""The portal's long-lived parts: settings, the four services' HTTP clients, the sign-in client, the sessions, the
messages and the templates. Made once in ``main.create_app``'s lifespan and handed to routes by :data:`ContextDep`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Protocol

from fastapi import Depends, Request

from services.portal.backends import Backends
from services.portal.i18n import Messages
from services.portal.session import Sessions, User
from services.portal.settings import PortalSettings

if TYPE_CHECKING:
    from jinja2 import Environment

    from services.portal.people import DemoPeople


class SignIn(Protocol):
    """The OpenID Connect client the sign-in pages use (``signin.RelyingParty``), named here by what it does so the
    context does not import the pages that use it."""

    async def begin(self, next_path: str, language: str) -> tuple[str, str]: ...

    async def finish(self, sealed: str | None, code: str, state: str) -> tuple[User, str, float, str]: ...

    async def end_session_url(self) -> str | None: ...


@dataclass
class PortalContext:
    settings: PortalSettings
    backends: Backends
    sessions: Sessions
    messages: Messages
    templates: Environment
    relying_party: SignIn
    # The embedded provider's demo people (None with an external provider), for pages that list caseworkers.
    people: DemoPeople | None


def get_context(request: Request) -> PortalContext:
    context: PortalContext = request.app.state.context
    return context


ContextDep = Annotated[PortalContext, Depends(get_context)]
