"""App factory of the portal (``uvicorn --factory services.portal.main:create_app``).

Unlike the four services it keeps no database and no bus connection: it serves pages, and every read and write goes to
the services' public APIs with the signed-in person's own token."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.portal import administration, casework, residents, supervision
from services.portal.backends import backends
from services.portal.context import PortalContext
from services.portal.i18n import LANGUAGE_COOKIE, LANGUAGES, messages
from services.portal.people import DemoPeople
from services.portal.provider import embedded_provider, provider_router
from services.portal.rendering import environment
from services.portal.session import Sealer, Sessions, session_secret
from services.portal.settings import PortalSettings
from services.portal.signin import RelyingParty, home_of
from services.portal.signin import router as signin_router
from services.portal.web import PageDep, PortalMiddleware, install_error_pages, safe_next
from shared.observability import Metrics, RequestContextMiddleware, configure_logging
from shared.tls import verifying_context
from shared.tracing import Tracing

STATIC = Path(__file__).resolve().parent / "static"


def create_app(settings: PortalSettings | None = None) -> FastAPI:
    settings = settings or PortalSettings()
    configure_logging("portal", settings.log_level, json=settings.log_json)
    # httpx logs every request's URL at INFO, ids in them: the portal's own log says what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    secret = session_secret(settings)
    # The embedded provider is part of the app from the start (its routes must exist before the first request);
    # with an external provider configured it is not built at all.
    provider = embedded_provider(settings, secret) if settings.embedded_provider else None
    # Requests counted and timed as the services' are (the same metric names: one dashboard, one set of alerts).
    metrics = Metrics("portal")
    tracing = Tracing.from_settings("portal", settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        catalogue = messages()
        async with (
            backends(settings) as services,
            httpx.AsyncClient(timeout=settings.upstream_timeout_seconds, verify=verifying_context()) as identity_http,
        ):
            app.state.context = PortalContext(
                settings=settings,
                backends=services,
                sessions=Sessions(settings, secret),
                messages=catalogue,
                templates=environment(catalogue, settings.timezone),
                relying_party=RelyingParty(settings, identity_http, Sealer(secret, "onestop-portal-signin")),
                people=provider.people if provider else None,
            )
            yield
        tracing.shutdown()  # exports what is buffered

    app = FastAPI(
        title="OneStop portal",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(PortalMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, service="portal")
    install_error_pages(app)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        from services.portal.web import get_page

        page = get_page(request)
        return page.render(
            "error.html",
            status=400,
            title=page.t("error.refused.title"),
            detail=page.t("error.bad_address"),
            status_code=400,
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        ready = getattr(request.app.state, "context", None) is not None
        return JSONResponse({"status": "ready" if ready else "starting"}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def home(page: PageDep) -> Response:
        if page.user is not None:
            return RedirectResponse(home_of(page.user), status_code=303)
        return page.render("home.html")

    @app.get("/language/{language}", include_in_schema=False)
    async def switch_language(page: PageDep, language: str, next: str | None = None) -> Response:
        chosen = language if language in LANGUAGES else "ko"
        page.state.language = chosen
        page.state.extra_cookies.append(
            f"{LANGUAGE_COOKIE}={chosen}; Path=/; Max-Age={365 * 24 * 3600}; HttpOnly; SameSite=Lax"
            + ("; Secure" if settings.cookie_secure else "")
        )
        return RedirectResponse(safe_next(next), status_code=303)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(signin_router)
    if provider is not None:
        app.include_router(provider_router(provider))
    app.include_router(residents.router)
    app.include_router(casework.router)
    app.include_router(supervision.router)
    app.include_router(administration.router)
    return app


__all__ = ["DemoPeople", "create_app"]
