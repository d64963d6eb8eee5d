"""Driving the running platform as its users do: over HTTP with their own tokens, and as a partner's webhook
endpoint. Everything here is synchronous: the platform runs in other processes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx

from onestop.runner import Platform
from shared.auth import Role

T = TypeVar("T")
JSON = dict[str, Any]


def eventually(probe: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.2, what: str = "") -> T:
    """Poll until ``probe`` returns something truthy; fail with the last value seen otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what or probe}; last seen: {str(last)[:2000]}")


class Api:
    """The platform's HTTP APIs, with a token per caller."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        assert platform.issuer is not None
        self.issuer = platform.issuer
        self.clients = {name: httpx.Client(base_url=platform.url(name), timeout=20) for name in platform.config.ports}

    def token(self, role: Role | str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.mint(role, **claims)}"}

    def request(self, service: str, method: str, path: str, auth: dict[str, str], **kwargs: Any) -> httpx.Response:
        headers = {**auth, **kwargs.pop("headers", {})}
        return self.clients[service].request(method, path, headers=headers, **kwargs)

    def ok(self, service: str, method: str, path: str, auth: dict[str, str], **kwargs: Any) -> Any:
        response = self.request(service, method, path, auth, **kwargs)
        assert response.status_code < 300, f"{method} {service}{path}: {response.status_code} {response.text}"
        return response.json()

    # ------------------------------------------------------------------------------------------ residents

    def register(self, *, district: str = "11440", language: str = "en", birth_date: str = "1990-04-12",
                 email: str | None = None, household: list[JSON] | None = None, **extra: Any) -> Resident:  # fmt: skip
        resident_id = uuid.uuid4()
        auth = self.token(Role.RESIDENT, resident_id=resident_id)
        body = {
            "name": f"Test Resident {resident_id.hex[:6]}",
            "birth_date": birth_date,
            "district_code": district,
            "address": "1 Sejong-daero, Seoul",
            "household": household or [],
            "email": email or f"{resident_id.hex[:10]}@residents.example.kr",
            "phone": "+82-10-5555-0100",
            "preferred_language": language,
            "preferred_channels": ["inbox", "email"],
            **extra,
        }
        self.ok("intake", "POST", "/v1/residents", auth, json=body)
        return Resident(resident_id, auth, body["email"], language)

    def consent(self, resident: Resident, **purposes: bool) -> None:
        consents = {k.replace("__", ":"): v for k, v in purposes.items()}
        self.ok("intake", "PUT", f"/v1/residents/{resident.id}/consents", resident.auth, json={"consents": consents})

    def apply(self, resident: Resident, life_event: str, answers: JSON, *, key: str | None = None) -> str:
        body = {"resident_id": str(resident.id), "life_event": life_event, "answers": answers, "channel": "web"}
        headers = {"Idempotency-Key": key} if key else {}
        created = self.ok("intake", "POST", "/v1/applications", resident.auth, json=body, headers=headers)
        return str(created["id"])

    def view(self, application_id: str, auth: dict[str, str]) -> JSON:
        return self.ok("intake", "GET", f"/v1/applications/{application_id}", auth)  # type: ignore[no-any-return]

    def view_when(
        self, application_id: str, auth: dict[str, str], ready: Callable[[JSON], bool], *, timeout: float = 30,
        what: str = "",
    ) -> JSON:  # fmt: skip
        def probe() -> JSON | None:
            view = self.view(application_id, auth)
            return view if ready(view) else None

        return eventually(probe, timeout=timeout, what=what or f"application {application_id}")

    def inbox(self, resident: Resident, application_id: str | None = None) -> list[JSON]:
        items: list[JSON] = self.ok("notify", "GET", "/v1/inbox", resident.auth, params={"limit": 100})["items"]
        return [m for m in items if application_id is None or m["application_id"] == application_id]


@dataclass(frozen=True)
class Resident:
    id: uuid.UUID
    auth: dict[str, str]
    email: str
    language: str


def programs(view: JSON) -> dict[str, JSON]:
    return {p["program_code"]: p for p in view["programs"]}


def settled_round(view: JSON, round_: int = 1) -> bool:
    determination = view.get("determination")
    return bool(determination and determination["round"] >= round_)


# ---------------------------------------------------------------------------------------------- partner endpoint


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> JSON:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class WebhookEndpoint:
    """A partner's webhook endpoint: a real HTTP server that records what it receives."""

    url: str
    deliveries: list[Delivery] = field(default_factory=list)

    def for_application(self, application_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.event["data"].get("application_id") == application_id]


def webhook_endpoint() -> Iterator[WebhookEndpoint]:
    received: list[Delivery] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append(Delivery({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield WebhookEndpoint(f"http://127.0.0.1:{server.server_address[1]}/onestop-events", received)
    finally:
        server.shutdown()


def verify_standard_webhook(secret: str, delivery: Delivery, *, tolerance: int = 300) -> bool:
    """The Standard Webhooks check, written from the specification (not the platform's code): HMAC-SHA256 over
    "{webhook-id}.{webhook-timestamp}.{body}" with the base64 key after "whsec_", any of the space-separated
    "v1,<signature>" values may match, and the timestamp must be recent."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, timestamp = delivery.headers["webhook-id"], delivery.headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + delivery.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[1] for s in delivery.headers["webhook-signature"].split() if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, s) for s in offered)
