"""Near misses: a resident for whom one fact they have not told could make a program eligible is asked that one
question, in plain Korean and English — which fact, and why — not sent an offer. Their answer (through intake, as
themselves or by who acts for them) is kept as a fact they declared, and screens them again.

A near miss is a program whose rule, evaluated with everything known, waits on information, and whose explained
evaluation asks for exactly one fact, one the resident can tell (not one only staff can obtain). Kleene logic makes
that precise: the explained evaluation lists only the facts that could still change the outcome, so with one of them
the answer decides it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from services.eligibility import triggers
from services.eligibility.catalogue import Catalogue, Evaluation, Program
from services.eligibility.facts import Environment, FactValueError
from services.eligibility.models import ResidentAnswerRow
from services.eligibility.repository import Repository
from services.eligibility.store import CatalogueStore
from shared.events import CriterionStatus, Outcome, ScreeningQuestionAnswered

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NearMiss:
    program: Program
    fact: str
    # Why it is asked, as the resident reads it: the program and what the answer decides.
    why: dict[str, str]


def near_miss(
    catalogue: Catalogue, env: Environment, code: str, unasked: frozenset[str] = frozenset()
) -> NearMiss | None:
    """The program's one missing fact the resident can tell, if its rule waits on exactly one (and it is not one of
    the ``unasked``)."""
    result = Evaluation(catalogue, env, explain=True).result(code)
    if result is None or result.outcome.outcome != Outcome.NEEDS_INFORMATION or len(result.outcome.missing) != 1:
        return None
    fact = result.outcome.missing[0]
    fact_type = catalogue.facts.types.get(fact)
    if fact_type is None or fact_type.derived or fact_type.asked_of != "resident" or fact in unasked:
        return None
    waiting = [c["label"] for c in result.outcome.criteria if c.get("status") == CriterionStatus.UNKNOWN.value]
    return NearMiss(result.program, fact, explain(result.program.name, waiting))


def explain(program: dict[str, str], criteria: list[dict[str, str]]) -> dict[str, str]:
    """Why the question is asked: everything else the program needs is known, and this answer settles the rest."""
    ko = f"{program['ko']}을(를) 받으실 수 있는지 판단하는 데 필요한 다른 사항은 모두 확인되었습니다."
    en = f"Everything else needed to tell whether you can receive {program['en']} is known already."
    if criteria:
        ko += " 이 질문에 답해 주시면 다음 요건을 확인할 수 있습니다: " + "; ".join(c["ko"] for c in criteria) + "."
        en += " Your answer settles the remaining requirement: " + "; ".join(c["en"] for c in criteria) + "."
    ko += " 답변은 이 판단에만 쓰이며, 신청은 따로 확인하실 때만 접수됩니다."
    en += " The answer is used for this assessment only; nothing is applied for unless you confirm it."
    return {"ko": ko, "en": en}


async def on_answered(
    store: CatalogueStore, repo: Repository, data: ScreeningQuestionAnswered, now: dt.datetime
) -> None:
    """Keep the answer as a fact the resident declared (a later answer to the same fact replaces an earlier one; an
    older one arriving late does not), close the questions that asked for it, and screen the resident again."""
    question = await repo.question(data.question_id, for_update=True)
    if question is None or question.resident_id != data.resident_id or question.fact != data.fact:
        log.warning("answer to an unknown question ignored", extra={"question_id": str(data.question_id)})
        return
    catalogue = await store.get(repo)
    try:
        value: Any = catalogue.facts.coerce_json(data.fact, data.value)
    except FactValueError:
        # Intake checked it against the same fact types; a catalogue changed in between makes it unusable.
        log.warning("answer does not fit its fact any more", extra={"question_id": str(data.question_id)})
        return
    answer = await repo.resident_answer(data.resident_id, data.fact)
    repo.facts_changed(data.resident_id)
    if answer is None:
        repo.session.add(
            ResidentAnswerRow(
                resident_id=data.resident_id,
                name=data.fact,
                value=value,
                answered_at=data.answered_at,
                question_id=data.question_id,
            )
        )
    elif answer.answered_at <= data.answered_at:
        answer.value = value
        answer.answered_at = data.answered_at
        answer.question_id = data.question_id
    for open_question in await repo.open_questions(data.resident_id, data.fact):
        open_question.status = "answered"
        open_question.answered_at = data.answered_at
    await triggers.queue(repo, data.resident_id, "question_answered", now)
