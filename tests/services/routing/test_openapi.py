"""The OpenAPI document tells a client which POSTs are safe to retry: every action on a case declares the
Idempotency-Key header and documents the Idempotent-Replayed header of a replayed answer."""

from __future__ import annotations

from pathlib import Path

from services.routing.main import create_app
from tests.support.nats import NatsServer
from tests.support.services import service_settings

CASE_ACTIONS = {
    f"/v1/cases/{{case_id}}/{action}": status
    for action, status in {
        "claim": "200",
        "release": "200",
        "assign": "200",
        "request-info": "200",
        "decide": "200",
        "transfer": "200",
        "escalate": "200",
        "notes": "201",
    }.items()
}


def test_every_case_action_documents_the_idempotency_key_and_the_replayed_answer(
    nats_server: NatsServer, bus_prefix: str, keys_dir: Path, tmp_path: Path
) -> None:
    settings = service_settings(
        "routing", database_url=f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}", nats_url=nats_server.url,
        prefix=bus_prefix, keys_dir=keys_dir,
    )  # fmt: skip
    paths = create_app(settings).openapi()["paths"]  # type: ignore[arg-type]

    honouring = {
        path
        for path, operations in paths.items()
        if any(
            p["in"] == "header" and p["name"] == "Idempotency-Key"
            for p in operations.get("post", {}).get("parameters", [])
        )
    }
    assert honouring == set(CASE_ACTIONS), "exactly the case actions honour Idempotency-Key"
    for path, success in CASE_ACTIONS.items():
        post = paths[path]["post"]
        header = next(p for p in post["parameters"] if p["in"] == "header" and p["name"] == "Idempotency-Key")
        assert header["required"] is False, f"{path}: the key is optional"
        assert set(post["responses"]) & {"200", "201"} == {success}, f"{path} answers {success} on success"
        replayed = post["responses"][success]["headers"]["Idempotent-Replayed"]
        assert replayed["schema"] == {"type": "string", "enum": ["true"]}, path
