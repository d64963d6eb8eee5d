"""Notify's OpenAPI document declares Idempotency-Key on every POST that honours it (and only there), and the
Idempotent-Replayed header a retry is answered with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.notify.main import create_app
from tests.support.services import service_settings

# The POSTs that create something and take IdempotentDep.
IDEMPOTENT_POSTS = {"/v1/subscriptions"}


def _declares_key(operation: dict[str, Any]) -> bool:
    return any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))


def test_every_creating_post_documents_idempotency_key_and_the_replay_header(tmp_path: Path, keys_dir: Path) -> None:
    settings = service_settings(
        "notify", database_url=f"sqlite+aiosqlite:///{tmp_path / 'notify.db'}", nats_url="nats://127.0.0.1:1",
        prefix="onestop", keys_dir=keys_dir,
    )  # fmt: skip
    schema = create_app(settings).openapi()  # type: ignore[arg-type]

    posts = {path: operations["post"] for path, operations in schema["paths"].items() if "post" in operations}
    assert {path for path, operation in posts.items() if _declares_key(operation)} == IDEMPOTENT_POSTS
    for path in IDEMPOTENT_POSTS:
        operation = posts[path]
        key = next(p for p in operation["parameters"] if p["name"] == "Idempotency-Key")
        assert key["required"] is False, "a client may leave it out"
        success = {status: r for status, r in operation["responses"].items() if status.startswith("2")}
        assert list(success) == ["201"], path
        headers = success["201"]["headers"]
        assert headers["Idempotent-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}
        assert headers["Location"]["required"] is True
