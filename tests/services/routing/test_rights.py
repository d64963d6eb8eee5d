"""A resident's data in routing: their part of an export (cases with their history, caseworkers' notes withheld while
a case is being decided, referrals, consents, ratings), their erasure over the real bus (decided cases kept without
their vulnerabilities, the rest erased, a held place given back, ratings cut loose from the application), nothing
stored about them afterwards, and the kept cases destroyed on their day."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select

from services.routing import resident_data
from services.routing.models import (
    ApplicationRecord,
    Case,
    CaseEntry,
    Offering,
    Referral,
    ResidentConsents,
    ResidentErasure,
    ResidentFeedback,
)
from shared.events import ApplicationWithdrawn, DecisionFile, ResidentErasureRequested
from tests.services.routing.support import (
    cases_of,
    consents,
    context,
    determined,
    emitted,
    feed,
    offering_body,
    program,
    put_offering,
    rated,
)
from tests.support.round_trips import one_batch
from tests.support.services import RunningService


async def test_a_resident_s_part_their_erasure_and_what_is_kept_until_its_day(routing: RunningService) -> None:
    resident_id = uuid.uuid4()
    own = routing.auth("resident", resident_id=resident_id)
    alice = routing.auth("caseworker", offices=["JONGNO-CSC"], subject="caseworker:alice")
    first, second = uuid.uuid4(), uuid.uuid4()
    await feed(
        routing,
        determined(first, [program("emergency_welfare"), program("housing_benefit")], resident_id=resident_id,
                   vulnerability=["disability"]),
        determined(second, [program("child_allowance")], resident_id=resident_id),
        consents(resident_id, 1, bank=True),
        rated(first, 4).model_copy(update={"resident_id": resident_id}),
    )  # fmt: skip
    cases = await cases_of(routing, first)
    decided, open_ = cases["emergency_welfare"].id, cases["housing_benefit"].id
    client = routing.client
    assert (await client.post(f"/v1/cases/{decided}/claim", headers=alice)).status_code == 200
    for case_id in (decided, open_):
        note = await client.post(f"/v1/cases/{case_id}/notes", headers=alice, json={"text": "전화 상담 완료"})
        assert note.status_code == 201, note.text
    decision = {"decision": "approved", "reason_code": "criteria_met", "note": "서류 확인"}
    assert (await client.post(f"/v1/cases/{decided}/decide", headers=alice, json=decision)).status_code == 200
    offering = await put_offering(routing, "bank", "advice", offering_body(service_type="financial_counselling"))
    referred = await client.post(f"/v1/cases/{open_}/referrals", headers=alice, json={"offering_id": offering["id"]})
    assert referred.status_code == 201, referred.text

    # The part: every case with its history; the note on the case still being decided is withheld, and said so.
    response = await client.get(f"/v1/residents/{resident_id}/data", headers=own)
    assert response.status_code == 200, response.text
    part = response.json()
    by_id = {c["id"]: c for c in part["records"]["cases"]}
    assert "note" in [e["action"] for e in by_id[str(decided)]["history"]]
    assert "note" not in [e["action"] for e in by_id[str(open_)]["history"]]
    assert [(w["record_type"], w["count"]) for w in part["withheld"]] == [("case_notes", 1)]
    assert "제35조 제4항" in part["withheld"][0]["legal_basis"]
    assert [r["offering_code"] for r in part["records"]["referrals"]] == ["advice"]
    assert part["records"]["consents"][0]["consents"]["partner:bank"] is True
    assert [f["score"] for f in part["records"]["feedback"]] == [4]
    assert by_id[str(decided)]["vulnerability"] == ["disability"]

    # The resident withdraws the first application (its open case closes), then asks for erasure.
    withdrawn = ApplicationWithdrawn(
        application_id=first, resident_id=resident_id, withdrawn_at=dt.datetime.now(dt.UTC)
    )
    await feed(routing, withdrawn)
    today = context(routing).clock.today()
    request = ResidentErasureRequested(
        erasure_id=uuid.uuid4(), resident_id=resident_id, requested_at=dt.datetime.now(dt.UTC),
        decision_files=[DecisionFile(application_id=first, decided_on=today)],
    )  # fmt: skip
    await feed(routing, request, request.model_copy())
    answers = await emitted(routing, "resident.erased")
    assert len(answers) == 1, "answered once, however often asked"
    answer = answers[0]
    assert answer["erased"]["referrals"] == 1
    assert answer["erased"]["cases_without_decision"] == 2, "the closed one and the other application's"
    assert answer["erased"]["feedback"] == 1
    kept = {k["record_type"]: k for k in answer["kept"]}
    assert (kept["decided_cases"]["count"], kept["decided_cases"]["destroy_on"]) == (1, f"{today.year + 6}-01-01")

    async with routing.runtime.db.session() as session:
        left = (await session.scalars(select(Case).where(Case.resident_id == resident_id))).all()
        assert [(c.id, c.status, c.vulnerability) for c in left] == [(decided, "decided", [])]
        assert (await session.scalars(select(CaseEntry).where(CaseEntry.case_id == open_))).all() == []
        assert (await session.scalars(select(Referral).where(Referral.resident_id == resident_id))).all() == []
        assert (await session.get(Offering, uuid.UUID(offering["id"]))).places_taken == 0, "the place given back"  # type: ignore[union-attr]
        assert await session.get(ResidentConsents, resident_id) is None
        assert await session.get(ResidentFeedback, first) is None
        assert [f.score for f in (await session.scalars(select(ResidentFeedback))).all()] == [4], "counted, unlinked"
        records = await session.scalars(select(ApplicationRecord).where(ApplicationRecord.resident_id == resident_id))
        assert [r.application_id for r in records.all()] == [first]
    after = (await client.get(f"/v1/residents/{resident_id}/data", headers=own)).json()
    assert [c["id"] for c in after["records"]["cases"]] == [str(decided)]
    assert after["erasure"]["kept"] == answer["kept"]

    # Afterwards nothing about the resident is stored again: a late consent, a new determination.
    await feed(routing, consents(resident_id, 2, bank=True), determined(uuid.uuid4(), [program("x")],
                                                                        resident_id=resident_id))  # fmt: skip
    async with routing.runtime.db.session() as session:
        assert await session.get(ResidentConsents, resident_id) is None
        assert len((await session.scalars(select(Case).where(Case.resident_id == resident_id))).all()) == 1

    # The decided case is destroyed on its day, its history with it, and the erasure's record once nothing is left.
    ctx = context(routing)
    on_the_eve = dt.datetime(today.year + 5, 12, 31, 12, tzinfo=dt.UTC)
    purged = await resident_data.purge(routing.runtime.db, ctx.clock, on_the_eve)
    assert purged["decided_cases"] == 0
    purged = await resident_data.purge(routing.runtime.db, ctx.clock, on_the_eve + dt.timedelta(days=2))
    assert (purged["decided_cases"], purged["erasure_records"]) == (1, 1)
    assert await routing.count(Case, Case.resident_id == resident_id) == 0
    assert await routing.count(CaseEntry, CaseEntry.case_id == decided) == 0
    assert await routing.count(ApplicationRecord, ApplicationRecord.resident_id == resident_id) == 0
    assert await routing.count(ResidentErasure) == 0


async def test_only_the_resident_and_intake_read_a_resident_s_whole_part(routing: RunningService) -> None:
    resident_id = uuid.uuid4()
    callers = {
        "own": (routing.auth("resident", resident_id=resident_id), 200),
        "intake": (routing.auth("service", service="intake"), 200),
        "notify": (routing.auth("service", service="notify"), 404),
        "caseworker": (routing.auth("caseworker", offices=["JONGNO-CSC"]), 404),
    }
    for who, (headers, expected) in callers.items():
        response = await routing.client.get(f"/v1/residents/{resident_id}/data", headers=headers)
        assert response.status_code == expected, (who, response.text)
    table = routing.runtime.tables.audit_log
    async with routing.runtime.db.session() as session:
        actors = (await session.scalars(select(table.c.actor).where(table.c.resident_id == resident_id))).all()
    assert actors == ["service:intake"], "intake's read is audited; the resident's own is not"


async def test_in_one_batch_an_erasure_stops_what_comes_after_it_and_erasure_is_asked_once_per_resident(
    routing: RunningService,
) -> None:
    """The cases consumer asks whether a resident was erased once per transaction, not for every event; and an
    erasure request in the same batch stops every event about the resident after it (nothing is stored again)."""

    from tests.services.routing.support import cases_of, determined, program

    resident_id = uuid.uuid4()
    before, after = uuid.uuid4(), uuid.uuid4()
    lead = determined(uuid.uuid4(), [program("child_allowance", "eligible")])
    first = determined(before, [program("parent_benefit", "eligible")], resident_id=resident_id)
    again = determined(before, [program("parent_benefit", "eligible")], resident_id=resident_id, round=2)
    request = ResidentErasureRequested(
        erasure_id=uuid.uuid4(), resident_id=resident_id, requested_at=dt.datetime.now(dt.UTC), decision_files=[]
    )
    late = determined(after, [program("parent_benefit", "eligible")], resident_id=resident_id)
    work = await one_batch(routing, "cases", (lead, first, again, request, late))

    # Asked at the start of each transaction, and by the request's own check. (On a busy machine the batch may give
    # way to a waiting writer, such as the outbox relay marking what it published, and go on in a next transaction.)
    for applied in work.transactions():
        erasure_reads = [s for s in applied if s.startswith("SELECT") and "FROM resident_erasures" in s]
        assert len(erasure_reads) <= 2, erasure_reads
    assert await cases_of(routing, after) == {}, "nothing about the resident is stored after their erasure"
    assert await cases_of(routing, before) == {}, "their case before it was erased with them"
