"""The screener (``POST /v1/evaluate``): facts in, determinations out, nothing stored. It judges the programs a
request names, or its life event's (and any other the facts make relevant), or every program in force, by the rules
in force on the date it gives (default: today), and lists once each fact that could still change an outcome."""

from __future__ import annotations

import datetime as dt
from typing import Any

from services.eligibility.catalogue import named_programs
from services.eligibility.facts import FactLayers
from services.eligibility.repository import Repository
from services.eligibility.schemas import EvaluateRequest, EvaluateResponse
from services.eligibility.store import CatalogueStore
from shared.problems import UnprocessableContent


async def evaluate_facts(
    repo: Repository, store: CatalogueStore, request: EvaluateRequest, *, now: dt.datetime
) -> EvaluateResponse:
    catalogue = await store.get(repo)
    values, problems = catalogue.facts.coerce_all(request.facts)
    if problems:
        raise UnprocessableContent(
            f"Facts that cannot be used: {', '.join(sorted(problems))}",
            errors=[
                {"field": f"facts.{name}", "message": message, "type": "invalid"} for name, message in problems.items()
            ],
        )
    day = request.application_date or store.today()
    env = catalogue.environment(day, FactLayers(declared=values), now)
    if request.programs is not None:
        codes = named_programs(catalogue, request.programs, day, field="programs")
    elif request.life_event is not None:
        codes = catalogue.programs_for(request.life_event.value, env)
    else:
        codes = catalogue.in_force(day)
    determinations = [r.determination(catalogue.facts) for r in catalogue.evaluate(env, codes)]
    missing: dict[str, Any] = {}
    for d in determinations:
        for m in d["missing"]:
            missing.setdefault(m["name"], m)
    return EvaluateResponse.model_validate(
        {
            "application_date": day,
            "life_event": request.life_event,
            "programs": determinations,
            "missing": list(missing.values()),
        }
    )
