"""Each service's OpenAPI document tells a client which POSTs are safe to retry: exactly those that honour
``Idempotency-Key`` (through ``shared.deps.IdempotentDep``) declare the optional header, and their success answer
documents ``Idempotent-Replayed``, the mark of a replayed answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from onestop.registry import BY_NAME
from tests.support.services import service_settings

# Per service: each POST that creates something or acts once, with its success status.
HONOURING: dict[str, dict[str, str]] = {
    "intake": {
        "/v1/residents": "201",
        "/v1/applications": "201",
        "/v1/applications/{application_id}/info": "200",
        "/v1/applications/{application_id}/withdraw": "200",
        "/v1/applications/{application_id}/feedback": "201",
        "/v1/residents/{resident_id}/representations": "201",
        "/v1/residents/{resident_id}/authorities": "201",
        "/v1/residents/{resident_id}/opportunities/{opportunity_id}/accept": "201",
        "/v1/residents/{resident_id}/opportunities/{opportunity_id}/decline": "200",
        "/v1/residents/{resident_id}/questions/{question_id}/answer": "200",
        "/v1/residents/{resident_id}/data-exports": "202",
        "/v1/residents/{resident_id}/erasure-requests": "201",
    },
    "eligibility": {"/v1/facts": "201", "/v1/screenings": "201"},
    "routing": {
        **{
            f"/v1/cases/{{case_id}}/{action}": "200"
            for action in ("claim", "release", "assign", "request-info", "decide", "transfer", "escalate", "visit")
        },
        "/v1/cases/{case_id}/notes": "201",
        "/v1/cases/{case_id}/referrals": "201",
        **{f"/v1/referrals/{{referral_id}}/{action}": "200" for action in ("accept", "decline", "complete")},
        "/v1/household-cases": "201",
        **{
            f"/v1/household-cases/{{household_case_id}}/{action}": "200"
            for action in ("claim", "assign", "members", "close", "follow-ups/{follow_up_id}/done")
        },
        "/v1/household-cases/{household_case_id}/follow-ups": "201",
        "/v1/household-cases/{household_case_id}/conferences": "201",
    },
    "notify": {"/v1/subscriptions": "201"},
}
# A POST that also answers otherwise on success: a screening run asked for in the background is 202 Accepted.
ALSO_ANSWERS = {"/v1/screenings": {"202"}}


def _key(operation: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (p for p in operation.get("parameters", []) if p["in"] == "header" and p["name"] == "Idempotency-Key"), None
    )


@pytest.mark.parametrize("service", sorted(HONOURING))
def test_exactly_the_posts_that_honour_idempotency_key_declare_it_and_the_replay_header(
    service: str, tmp_path: Path, keys_dir: Path
) -> None:
    settings = service_settings(
        service, database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", nats_url="nats://127.0.0.1:1",
        prefix="onestop", keys_dir=keys_dir,
    )  # fmt: skip
    module = __import__(f"services.{service}.main", fromlist=["create_app"])
    paths = module.create_app(settings).openapi()["paths"]
    posts = {path: operations["post"] for path, operations in paths.items() if "post" in operations}

    assert {path for path, post in posts.items() if _key(post) is not None} == set(HONOURING[service])
    for path, success in HONOURING[service].items():
        post = posts[path]
        key = _key(post)
        assert key is not None, path
        assert key["required"] is False, f"{path}: the key is optional"
        assert {"type": "string", "maxLength": 255} in key["schema"]["anyOf"], path
        answers = {success} | ALSO_ANSWERS.get(path, set())
        assert set(post["responses"]) & {"200", "201", "202"} == answers, f"{path} answers {answers} on success"
        replayed = post["responses"][success]["headers"]["Idempotent-Replayed"]
        assert replayed["schema"] == {"type": "string", "enum": ["true"]}, path


def test_every_service_is_covered() -> None:
    assert set(HONOURING) == set(BY_NAME)
