"""The one status of an application, as the resident reads it: intake's status view (every program's outcome with
its criteria, what is missing, the case, the decision, the timeline) with the questions still open gathered into one
form that can be answered in place."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from services.portal import applying
from services.portal.backends import Upstream

# The case statuses intake's status view reports, in the order a case goes through them.
DONE_CASE_STATUSES = ("decided", "closed")


@dataclass
class ApplicationView:
    application: dict[str, Any]
    questions: list[applying.Question]
    caseworker_questions: list[dict[str, Any]]

    @property
    def programs(self) -> list[dict[str, Any]]:
        return list(self.application["programs"])

    @property
    def can_give_feedback(self) -> bool:
        app = self.application
        if app["feedback"] is not None or app["status"] == "withdrawn":
            return False
        return app["status"] == "completed" or any(
            p["case"] and p["case"]["status"] in DONE_CASE_STATUSES for p in self.programs
        )

    @property
    def open(self) -> bool:
        return self.application["status"] not in ("completed", "withdrawn")


async def application(up: Upstream, application_id: uuid.UUID) -> ApplicationView:
    app = await up.get("intake", f"/v1/applications/{application_id}")
    pending: dict[str, dict[str, Any]] = {}
    for program in app["programs"]:
        for missing in program["missing"]:
            if missing["asked_of"] == "resident" and not missing["answered"]:
                pending.setdefault(missing["name"], missing)
    questions: list[applying.Question] = []
    if pending:
        types = await applying.fact_types(up)
        for name, missing in pending.items():
            needed_for = [p["program_name"] or {"ko": p["program_code"], "en": p["program_code"]}
                          for p in app["programs"] if any(m["name"] == name for m in p["missing"])]  # fmt: skip
            questions.append(applying.question(types.get(name) or missing, needed_for))
    asked_by_caseworker = [
        {"program": p["program_name"], "question": q}
        for p in app["programs"]
        if p["case"] and p["case"]["status"] == "information_requested"
        for q in p["case"]["questions"]
    ]
    return ApplicationView(app, questions, asked_by_caseworker)
