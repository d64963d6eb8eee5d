"""RFC 9457 problem details: exception classes that carry their status, and the handlers that render them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from shared.responses import FastJSONResponse

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)


class ProblemError(Exception):
    """An error answered as ``application/problem+json``. Subclasses fix the status and title."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    slug: ClassVar[str] = "internal"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": f"urn:onestop:problem:{self.slug}", "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extensions)
        return body


class BadRequest(ProblemError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(ProblemError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        # Every 401 names the scheme (RFC 9110), whatever other headers it carries; the OpenAPI document says so.
        kwargs["headers"] = {"WWW-Authenticate": 'Bearer realm="onestop"', **(kwargs.get("headers") or {})}
        super().__init__(detail, **kwargs)


class Forbidden(ProblemError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(ProblemError):
    status, title, slug = 404, "Not Found", "not-found"


class MethodNotAllowed(ProblemError):
    status, title, slug = 405, "Method Not Allowed", "method-not-allowed"


class Conflict(ProblemError):
    status, title, slug = 409, "Conflict", "conflict"


class MisdirectedRequest(ProblemError):
    status, title, slug = 421, "Misdirected Request", "misdirected"


class PayloadTooLarge(ProblemError):
    status, title, slug = 413, "Content Too Large", "payload-too-large"


class UnsupportedMediaType(ProblemError):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class UnprocessableContent(ProblemError):
    status, title, slug = 422, "Unprocessable Content", "validation"

    @classmethod
    def for_field(cls, field: str, message: str, *, type_: str = "invalid") -> UnprocessableContent:
        return cls(f"{field}: {message}", errors=[{"field": field, "message": message, "type": type_}])


class ServiceUnavailable(ProblemError):
    status, title, slug = 503, "Service Unavailable", "unavailable"


_BY_STATUS: dict[int, type[ProblemError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        MisdirectedRequest,
        PayloadTooLarge,
        UnsupportedMediaType,
        UnprocessableContent,
        ServiceUnavailable,
    )
}


def problem_response(problem: ProblemError, request: Request | None = None) -> JSONResponse:
    instance = request.url.path if request is not None else None
    return FastJSONResponse(
        problem.body(instance), status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def field_name(loc: Sequence[str | int]) -> str:
    """``("body", "household", 0, "birth_date")`` -> ``household[0].birth_date``; where the value came from is kept
    for headers, query and path parameters, since a client needs to know which of them was wrong."""
    parts = list(loc)
    prefix = ""
    if parts and parts[0] in ("body",):
        parts = parts[1:]
    elif parts and parts[0] in ("query", "path", "header", "cookie"):
        prefix = f"{parts[0]}."
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return prefix + (out or "body")


def _invalid_json(reason: str) -> dict[str, str]:
    return {"field": "body", "message": f"not valid JSON: {reason}", "type": "json_invalid"}


def validation_problem(exc: RequestValidationError) -> UnprocessableContent:
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            # FastAPI puts the character position where the field would be; the field is the body itself.
            position = next((p for p in err.get("loc", ())[1:] if isinstance(p, int)), 0)
            errors.append(_invalid_json(f"{err.get('ctx', {}).get('error', 'invalid')} (at character {position})"))
            continue
        loc = tuple(err.get("loc", ()))
        # pydantic puts the union member or function name in the location; those are noise to a client.
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        errors.append({"field": field_name(loc), "message": str(err.get("msg", "invalid")), "type": err.get("type")})
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return UnprocessableContent(f"Invalid input: {fields}", errors=errors)


def unreadable_body_problem(exc: StarletteHTTPException) -> UnprocessableContent | None:
    """FastAPI answers 400 for a body it cannot decode (bytes that are not UTF-8), raised from the decoding error.
    That is invalid input like any other, so it is answered the same way: 422 naming the body and the reason."""
    cause = exc.__cause__
    if exc.status_code != 400 or not isinstance(cause, ValueError):
        return None
    reason = f"not UTF-8 (at byte {cause.start})" if isinstance(cause, UnicodeDecodeError) else str(cause)
    return UnprocessableContent("Invalid input: body", errors=[_invalid_json(reason)])


def allowed_methods(request: Request, found: str | None) -> str | None:
    """The ``Allow`` of a 405: every method the path has. Starlette names only the methods of the first route that
    matched the path, and a resource with GET and PUT in two routes would advertise one of them."""
    path = request.scope.get("path", request.url.path)
    methods = {m.strip().upper() for m in (found or "").split(",") if m.strip()}
    for template, operations in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods)) or None


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(exc, request)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_problem(exc), request)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if (unreadable := unreadable_body_problem(exc)) is not None:
            return problem_response(unreadable, request)
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and (allow := allowed_methods(request, headers.get("Allow"))) is not None:
            headers["Allow"] = allow
        cls = _BY_STATUS.get(exc.status_code)
        if cls is None:
            problem = ProblemError(str(exc.detail))
            problem.status = exc.status_code  # type: ignore[misc]
        else:
            detail = exc.detail if isinstance(exc.detail, str) and exc.detail != cls.title else None
            problem = cls(detail, headers=headers)
        return problem_response(problem, request)

    async def on_unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(ProblemError("An unexpected error occurred; it has been logged."), request)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unhandled)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem+json answers."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        cls = _BY_STATUS.get(status, ProblemError)
        out[status] = {
            "description": cls.title,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out
