"""An envelope's JSON, as the outbox stores it and the relay publishes it: written without dumping the envelope
through pydantic first, it is byte for byte what ``orjson.dumps(event.model_dump(mode="json", exclude_none=True))``
wrote (consumers and partners parse it; the AsyncAPI document describes it); and the relay reads the emitting span's
``traceparent`` out of it without parsing the whole event, as a full parse reads it."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import uuid
import zoneinfo
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from shared.events import (
    ApplicationSubmitted,
    CloudEvent,
    CriterionResult,
    CriterionStatus,
    Department,
    EligibilityDetermined,
    Language,
    Localized,
    Outcome,
    ProgramDetermination,
    ResidentContext,
    WorkingLine,
    new_event,
)
from shared.outbox import _traceparent_in

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ZONES = [dt.UTC, dt.timezone(dt.timedelta(hours=9)), dt.timezone(dt.timedelta(hours=-3, minutes=-30)),
         zoneinfo.ZoneInfo("Asia/Seoul"), zoneinfo.ZoneInfo("Europe/London"), None]  # fmt: skip


def through_pydantic(event: CloudEvent) -> bytes:
    """How CloudEvent.to_json wrote an envelope before: dumped by pydantic, then by orjson."""
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))


def submitted(**changes: Any) -> ApplicationSubmitted:
    values: dict[str, Any] = {
        "application_id": uuid.uuid4(),
        "resident_id": uuid.uuid4(),
        "life_event": "birth",
        "answers": {"child_birth_date": "2026-10-01", "monthly_household_income": 3_100_000, "ratio": 0.52,
                    "note": "아이가 태어났어요 \"쌍둥이\"\n\\ 🎉", "none": None, "nested": [{"a": [1.5, True]}]},
        "channel": "web",
        "application_date": dt.date(2026, 11, 2),
        "submitted_at": dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC),
        "filed_by": "caseworker:종로-CSC",
        "resident": ResidentContext(district_code="11110", preferred_language="en", vulnerability=["single_parent"]),
    }  # fmt: skip
    return ApplicationSubmitted(**values | changes)


def determined() -> EligibilityDetermined:
    line = WorkingLine(item="earned", label=Localized(ko="근로소득", en="Earned income"), amount=1_200_000,
                       source="department:tax", reference="국민기초생활 보장법 시행령 제5조")  # fmt: skip
    criterion = CriterionResult(
        id="income", label=Localized(ko="소득인정액", en="Recognised income"), legal_reference="법 제8조",
        status=CriterionStatus.PASSED, values={"recognised_income": 980_000, "ratio": 0.3333333333333333},
        sources={"recognised_income": "derived"}, workings={"recognised_income": [line]},
    )  # fmt: skip
    program = ProgramDetermination(
        program_code="livelihood", program_name=Localized(ko="생계급여", en="Livelihood"),
        department=Department.WELFARE, outcome=Outcome.ELIGIBLE, rule_version=3, automatic=False, amount=713_102,
        amount_period="monthly", criteria=[criterion, criterion], sla_days=30, case_weight=1.5,
    )  # fmt: skip
    return EligibilityDetermined(
        determination_id=uuid.uuid4(), application_id=uuid.uuid4(), resident_id=uuid.uuid4(), round=2,
        trigger="facts_reported", application_date=dt.date(2026, 11, 2),
        evaluated_at=dt.datetime(2026, 11, 2, 9, 30, 0, 1, tzinfo=dt.UTC),
        resident=ResidentContext(district_code="11110"), programs=[program, program],
    )  # fmt: skip


def test_the_events_the_services_emit_are_written_as_before() -> None:
    for data in (submitted(), submitted(filed_by=None, program_codes=["a"]), determined()):
        for subject, traceparent in ((None, None), ("application/1", TRACEPARENT)):
            event = new_event(data, source="/onestop/intake", subject=subject, traceparent=traceparent)
            for time in (event.time, event.time.replace(microsecond=0), dt.datetime(999, 1, 1, tzinfo=dt.UTC)):
                at = event.model_copy(update={"time": time})
                assert at.to_json() == through_pydantic(at)
            assert CloudEvent.from_json(event.to_json()) == event


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _not_a_field(name: str) -> bool:
    return name not in CloudEvent.model_fields


@dataclasses.dataclass
class Point:
    x: int | None
    at: dt.datetime


class Shape(BaseModel):
    side: float | None = None
    name: str = "square"


class Size(enum.IntEnum):
    SMALL = 1


class Day(enum.Enum):
    FIRST = dt.date(2026, 1, 1)


@settings(max_examples=300, deadline=None)
@given(
    # Anything a CloudEvent's data may hold: what JSON reads (the services' envelopes hold only that), and what
    # pydantic makes JSON of: times in every form, UUIDs, enums, dataclasses and models, sets, bytes, decimals.
    data=st.dictionaries(
        st.text(),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(2**63), 2**64 - 1)
            | st.floats()
            | st.text()
            | st.uuids()
            | st.dates()
            | st.times()
            | st.datetimes(timezones=st.sampled_from(ZONES))
            | st.timedeltas()
            | st.decimals(allow_nan=False)
            | st.binary().filter(_utf8)
            | st.sampled_from([Language.KO, Size.SMALL, Day.FIRST, Point(None, dt.datetime(2026, 1, 1)), Shape()]),
            lambda children: (
                st.lists(children)
                | st.tuples(children, children)
                | st.frozensets(st.integers())
                | st.dictionaries(st.text(), children)
                | st.dictionaries(st.integers(), children, max_size=2)
                | st.builds(collections.OrderedDict, st.dictionaries(st.text(), children))
            ),
            max_leaves=12,
        ),
    ),
    time=st.datetimes(timezones=st.sampled_from(ZONES)),
    subject=st.none() | st.text(min_size=1),
    traceparent=st.none() | st.text(),
    dataschema=st.none() | st.text(),
    extensions=st.dictionaries(st.from_regex(r"\A[a-z]{1,10}\Z").filter(_not_a_field), st.none() | st.text()),
)
def test_any_envelope_is_written_as_pydantic_and_orjson_wrote_it(
    data: dict[str, Any],
    time: dt.datetime,
    subject: str | None,
    traceparent: str | None,
    dataschema: str | None,
    extensions: dict[str, Any],
) -> None:
    event = CloudEvent(id="e-1", source="/onestop/test", type="onestop.test", subject=subject, time=time,
                       traceparent=traceparent, dataschema=dataschema, data=data, **extensions)  # fmt: skip
    try:
        expected: bytes | type[Exception] = through_pydantic(event)
    except Exception as exc:  # what neither could write (an integer beyond 64 bits ...) fails as before
        expected = type(exc)
    try:
        written: bytes | type[Exception] = event.to_json()
    except Exception as exc:
        written = type(exc)
    assert written == expected


@settings(max_examples=300, deadline=None)
@given(
    traceparent=st.none() | st.just(TRACEPARENT) | st.text(),
    subject=st.none() | st.text(),
    source=st.text(min_size=1),
    inside=st.dictionaries(
        st.sampled_from(["traceparent", "data", "x"]), st.text() | st.integers(-(2**63), 2**63 - 1), max_size=3
    ),
    extensions=st.dictionaries(st.sampled_from(["tracestate", "partitionkey"]), st.text(), max_size=2),
)
def test_the_relay_reads_the_envelope_s_traceparent_as_a_full_parse_reads_it(
    traceparent: str | None, subject: str | None, source: str, inside: dict[str, Any], extensions: dict[str, str]
) -> None:
    """Whatever the event carries elsewhere (its data, its source or subject, an extension) that looks like it."""
    data = inside | {"nested": inside}
    event = CloudEvent(id="e-1", source=source, type="onestop.test", subject=subject, time=dt.datetime.now(dt.UTC),
                       traceparent=traceparent, data=data, **extensions)  # fmt: skip
    payload = event.to_json().decode()
    assert _traceparent_in(payload) == orjson.loads(payload).get("traceparent") == traceparent


def test_a_dead_letter_s_payload_carries_no_traceparent_even_when_its_event_did() -> None:
    event = new_event(submitted(), source="/onestop/intake", traceparent=TRACEPARENT)
    letter = {"consumer": "routing-events", "error": "boom", "event": orjson.loads(event.to_json())}
    assert _traceparent_in(orjson.dumps(letter).decode()) is None
    assert _traceparent_in(event.to_json().decode()) == TRACEPARENT
    assert _traceparent_in('not json, "traceparent"') is None
