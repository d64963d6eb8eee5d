"""What every page shares: the session and language of the request, the security headers, CSRF on every form,
rendering in the visitor's language, and the pages shown when something goes wrong."""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.portal.backends import NotAllowed, NotVisible, SignInAgain, Unavailable, Upstream, UpstreamError
from services.portal.context import PortalContext, get_context
from services.portal.i18n import LANGUAGE_COOKIE, language_of
from services.portal.session import Session, User, csrf_matches

log = logging.getLogger(__name__)

STATE_KEY = "onestop.portal"


@dataclass
class RequestState:
    """The request's session and language. Kept in the ASGI scope (never on ``request.state``, which some servers
    share between requests); a route that signs someone in or out replaces ``session``."""

    session: Session
    language: str
    extra_cookies: list[str] = field(default_factory=list)


def content_security_policy(context: PortalContext) -> str:
    form_action = "'self'"
    if not context.settings.embedded_provider and context.settings.oidc_issuer_url:
        # Signing out ends in a redirect to the provider, and a browser holds a form's redirects to form-action too.
        parts = urllib.parse.urlsplit(context.settings.oidc_issuer_url)
        form_action += f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
        f"connect-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )


class PortalMiddleware:
    """Loads the session and language from the request's cookies; on the way out writes the session back when it
    changed and adds the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._csp: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context: PortalContext = scope["app"].state.context
        cookies = _cookies(scope)
        state = RequestState(
            session=context.sessions.load(cookies.get(context.sessions.cookie_name)),
            language=language_of(cookies.get(LANGUAGE_COOKIE)),
        )
        scope[STATE_KEY] = state
        if self._csp is None:
            self._csp = content_security_policy(context)
        csp = self._csp
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}

                def add(name: str, value: str) -> None:
                    if name.encode() not in names:
                        headers.append((name.encode(), value.encode()))

                add("content-security-policy", csp)
                add("referrer-policy", "no-referrer")
                add("x-content-type-options", "nosniff")
                add("x-frame-options", "DENY")
                add("cross-origin-opener-policy", "same-origin")
                add("cross-origin-resource-policy", "same-origin")
                add("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=()")
                if context.settings.cookie_secure:
                    add("strict-transport-security", "max-age=31536000; includeSubDomains")
                if static:
                    add("cache-control", "public, max-age=3600")
                else:
                    # Pages carry personal data: never kept by the browser or anything between.
                    add("cache-control", "no-store")
                    if state.session.changed:
                        headers.append((b"set-cookie", context.sessions.cookie_header(state.session).encode()))
                    for cookie in state.extra_cookies:
                        headers.append((b"set-cookie", cookie.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _cookies(scope: Scope) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for name, value in scope.get("headers") or []:
        if name == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header: as if there were none
                log.debug("malformed cookie header")
    return {key: morsel.value for key, morsel in jar.items()}


def request_state(request: Request) -> RequestState:
    state: RequestState = request.scope[STATE_KEY]
    return state


# ---------------------------------------------------------------------------------------------- pages


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class WrongRole(Exception):
    """Signed in, but this part of the portal is for another role."""


class CsrfFailed(Exception):
    pass


@dataclass
class Page:
    """A request as a page sees it: who, in which language, the services as that person, and rendering."""

    request: Request
    context: PortalContext
    state: RequestState

    @property
    def session(self) -> Session:
        return self.state.session

    @property
    def user(self) -> User | None:
        return self.session.user if self.session.signed_in else None

    @property
    def me(self) -> User:
        """The signed-in person (pages that require sign-in only)."""
        assert self.user is not None
        return self.user

    @property
    def language(self) -> str:
        return self.state.language

    @property
    def htmx(self) -> bool:
        """The request came from htmx (a fragment will do), not a full page load."""
        return self.request.headers.get("hx-request") == "true"

    @property
    def up(self) -> Upstream:
        return self.context.backends.as_person(self.session.access_token if self.user else None, self.language)

    def t(self, key: str, **values: Any) -> str:
        return self.context.messages.text(key, self.language, **values)

    def render(self, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        url = self.request.url
        # Where the language switch comes back to: this page, when it can be fetched again (a form's result cannot).
        here = (url.path + (f"?{url.query}" if url.query else "")) if self.request.method == "GET" else "/"
        html = self.context.templates.get_template(template).render(
            page=self, user=self.user, lang=self.language, csrf=self.session.csrf, path=url.path, here=here, **values
        )
        return HTMLResponse(html, status_code=status)

    def redirect(self, url: str) -> RedirectResponse:
        """After a form: see the result with GET (303), so a reload never sends the form again."""
        if self.htmx:
            # htmx follows a 303 itself and would swap the whole page into the target: ask it to navigate instead.
            return RedirectResponse(url, status_code=303, headers={"HX-Redirect": url})
        return RedirectResponse(url, status_code=303)

    async def form(self) -> FormData:
        """The submitted form, once its CSRF token is checked against the session's."""
        form = await self.request.form()
        token = form.get("csrf_token")
        if not isinstance(token, str) or not csrf_matches(self.session, token):
            raise CsrfFailed()
        return form


def get_page(request: Request) -> Page:
    return Page(request, get_context(request), request_state(request))


def _signed_in(request: Request) -> Page:
    page = get_page(request)
    if page.user is None:
        raise SignInRequired(_here(request))
    return page


def _role(*roles: str) -> Any:
    def dependency(request: Request) -> Page:
        page = _signed_in(request)
        if page.me.role not in roles:
            raise WrongRole()
        return page

    return dependency


def _here(request: Request) -> str:
    path = request.url.path
    return f"{path}?{request.url.query}" if request.url.query and request.method == "GET" else path


PageDep = Annotated[Page, Depends(get_page)]
SignedInPage = Annotated[Page, Depends(_signed_in)]
ResidentPage = Annotated[Page, Depends(_role("resident"))]
StaffPage = Annotated[Page, Depends(_role("caseworker", "supervisor", "admin"))]
SupervisorPage = Annotated[Page, Depends(_role("supervisor", "admin"))]
AdminPage = Annotated[Page, Depends(_role("admin"))]


def safe_next(value: str | None, default: str = "/") -> str:
    """Only a path on this site (never ``//other`` or a scheme): where to go after signing in or switching language."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


# ---------------------------------------------------------------------------------------------- errors as pages


def install_error_pages(app: FastAPI) -> None:
    def error_page(request: Request, status: int, title: str, detail: str, **values: Any) -> Response:
        page = get_page(request)
        return page.render(
            "error.html", status=status, title=page.t(title), detail=page.t(detail), status_code=status, **values
        )

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, exc: SignInRequired) -> Response:
        target = "/signin?" + urllib.parse.urlencode({"next": exc.next_path})
        if request.headers.get("hx-request") == "true":
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(SignInAgain)
    async def sign_in_again(request: Request, exc: SignInAgain) -> Response:
        state = request_state(request)
        state.session = get_context(request).sessions.end(state.session)
        return await sign_in_required(request, SignInRequired(_here(request)))

    @app.exception_handler(WrongRole)
    async def wrong_role(request: Request, exc: WrongRole) -> Response:
        return error_page(request, 403, "error.forbidden.title", "error.wrong_role")

    @app.exception_handler(CsrfFailed)
    async def csrf_failed(request: Request, exc: CsrfFailed) -> Response:
        return error_page(request, 403, "error.forbidden.title", "error.csrf")

    @app.exception_handler(NotVisible)
    async def not_visible(request: Request, exc: NotVisible) -> Response:
        return error_page(request, 404, "error.not_found.title", "error.not_found.detail")

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed) -> Response:
        return error_page(request, 403, "error.forbidden.title", "error.forbidden.detail")

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> Response:
        return error_page(request, 503, "error.unavailable.title", "error.unavailable.detail")

    @app.exception_handler(UpstreamError)
    async def upstream_error(request: Request, exc: UpstreamError) -> Response:
        # A conflict or refusal no page expected: say so plainly, with the service's own words.
        log.warning("unexpected answer", extra={"service": exc.service, "status": exc.status})
        return error_page(request, exc.status, "error.refused.title", "error.refused.detail", reason=exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_page(request, 404, "error.not_found.title", "error.not_found.detail")
        if exc.status_code == 405:
            return error_page(request, 405, "error.refused.title", "error.method")
        return error_page(request, exc.status_code, "error.refused.title", "error.refused.detail", reason=exc.detail)
