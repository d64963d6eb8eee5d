"""The event catalogue: CloudEvents 1.0 conformance, partner views without personal data, the AsyncAPI document."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal, get_origin

import pytest
import yaml
from cloudevents.core.formats.json import JSONFormat
from pydantic import ValidationError

from onestop.cli import ASYNCAPI_PATH
from shared.asyncapi import render
from shared.events import (
    CATALOGUE,
    PARTNER_VISIBLE_TYPES,
    RESIDENT_PARTNER_TYPES,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    CaseDecided,
    CloudEvent,
    Decision,
    Language,
    Localized,
    ReferralCreated,
    ReferralDeclined,
    ResidentContext,
    ServiceType,
    UnknownEventType,
    addressee,
    dead_letter_subject,
    new_event,
    partner_purpose,
    partner_subject,
    partner_view,
    spec_for,
    subject_for,
    validate_event,
    without_amounts,
)

# Field names that would identify a person or reveal what they declared. None may reach a partner.
PERSONAL = {"name", "email", "phone", "address", "birth_date", "answers", "household", "note", "reason", "questions",
            "filed_by", "assignee", "criteria", "missing", "resident", "vulnerability"}  # fmt: skip


def _submitted() -> ApplicationSubmitted:
    return ApplicationSubmitted(
        application_id=uuid.uuid4(),
        resident_id=uuid.uuid4(),
        life_event="birth",
        answers={"child_birth_date": "2026-10-01", "monthly_household_income": 3_100_000},
        channel="web",
        application_date=dt.date(2026, 11, 2),
        submitted_at=dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC),
        filed_by="caseworker:JN-CSC",
        resident=ResidentContext(district_code="11110", preferred_language="en", vulnerability=["single_parent"]),
    )


def test_envelopes_are_valid_cloudevents_for_an_independent_implementation() -> None:
    event = new_event(_submitted(), source="/onestop/intake", subject="application/1")
    fmt = JSONFormat()
    parsed = fmt.read(None, event.to_json())  # the CloudEvents SDK's own parser validates the attributes
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_type() == "onestop.application.submitted"
    assert parsed.get_source() == "/onestop/intake"
    assert parsed.get_id() == event.id
    assert parsed.get_dataschema() == "urn:onestop:schema:application.submitted:v1"
    assert parsed.get_time() == event.time
    data = parsed.get_data()
    assert isinstance(data, dict)
    assert data["life_event"] == "birth"
    # And an event written by the SDK reads back through our envelope.
    again = CloudEvent.from_json(fmt.write(parsed))
    assert (again.id, again.event_type, again.data) == (event.id, "application.submitted", event.data)
    assert isinstance(validate_event(again), ApplicationSubmitted)


def test_unknown_types_and_wrong_data_are_refused() -> None:
    with pytest.raises(UnknownEventType):
        spec_for("application.teleported")
    event = new_event(_submitted(), source="/x")
    broken = event.model_copy(update={"data": {**event.data, "channel": "carrier-pigeon"}})
    with pytest.raises(ValidationError):
        validate_event(broken)
    with pytest.raises(ValidationError):
        CloudEvent.model_validate({**event.model_dump(), "specversion": "0.3"})


def test_partner_views_carry_no_personal_data() -> None:
    for event_type in PARTNER_VISIBLE_TYPES:
        view = CATALOGUE[event_type].partner_view
        assert view is not None
        # A closed enumeration (case.closed's reason: withdrawn / no_longer_applicable) says nothing about a person.
        leaked = {
            f for f in PERSONAL & set(view.model_fields) if get_origin(view.model_fields[f].annotation) is not Literal
        }
        assert not leaked, f"{event_type} partner view exposes {leaked}"
        if CATALOGUE[event_type].about_a_resident:
            assert "resident_id" in view.model_fields, "partners correlate by the pseudonymous id"
        else:  # an aggregate: no resident, nor anything that leads to one
            assert not [f for f in view.model_fields if f.endswith("_id")], f"{event_type} names someone"
    assert "aggregate.determinations_counted" in PARTNER_VISIBLE_TYPES - RESIDENT_PARTNER_TYPES

    event = new_event(_submitted(), source="/onestop/intake")
    projected = partner_view(event)
    assert projected["resident_id"] == event.data["resident_id"]
    assert not {"answers", "filed_by", "resident"} & set(projected)
    # Where a partner may serve the resident, from their context: district and language, never vulnerabilities.
    assert (projected["district_code"], projected["preferred_language"]) == ("11110", "en")
    assert "single_parent" not in str(projected)

    decided = CaseDecided(
        case_id=uuid.uuid4(), application_id=uuid.uuid4(), resident_id=uuid.uuid4(), program_code="child_allowance",
        department="welfare", office_code="JN-WEL", decision="denied", reason_code="income_above_threshold",
        reason=Localized(ko="소득 기준 초과", en="Income above the threshold"), automatic=False,
        decided_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    assert "reason" not in partner_view(new_event(decided, source="/onestop/routing"))
    paid = new_event(
        decided.model_copy(update={"decision": Decision.APPROVED, "amount": 1_000_000}), source="/onestop/x"
    )
    assert partner_view(paid)["amount"] == 1_000_000
    assert "amount" not in partner_view(paid, amounts=False), "amounts only where the grant's purpose needs them"
    withdrawn = ApplicationWithdrawn(
        application_id=uuid.uuid4(), resident_id=uuid.uuid4(), reason="moving abroad to join my partner",
        withdrawn_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    assert "reason" not in partner_view(new_event(withdrawn, source="/onestop/intake"))


def test_a_partner_view_without_amounts_has_none_at_any_depth() -> None:
    data = {"programs": [{"program_code": "a", "amount": 1, "amount_period": "monthly"}], "amount": 2, "round": 1}
    assert without_amounts(data) == {"programs": [{"program_code": "a"}], "round": 1}
    assert partner_purpose("saebom-ngo") == "partner:saebom-ngo"
    assert partner_purpose("saebom-ngo", "case.routed") == "partner:saebom-ngo:case.routed"


def test_a_referral_is_addressed_to_its_partner_and_shows_it_only_the_pseudonymous_id() -> None:
    common = {
        "referral_id": uuid.uuid4(), "partner_id": "saebom-ngo", "offering_id": uuid.uuid4(),
        "offering_code": "childcare-mapo", "offering_name": Localized(ko="아이돌봄", en="Childcare"),
        "service_type": ServiceType.CHILDCARE, "case_id": uuid.uuid4(), "application_id": uuid.uuid4(),
        "resident_id": uuid.uuid4(), "program_code": "parent_benefit", "office_code": "MAPO-CSC",
    }  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    created = new_event(
        ReferralCreated(**common, district_code="11440", language=Language.KO, referred_by="cw:1", created_at=now),
        source="/onestop/routing",
    )
    assert addressee(created) == "saebom-ngo"
    assert set(partner_view(created)) == {"referral_id", "offering_code", "service_type", "resident_id", "created_at"}
    declined = new_event(ReferralDeclined(**common, reason="no_capacity", declined_at=now), source="/onestop/routing")
    assert partner_view(declined)["reason"] == "no_capacity"
    assert not {"case_id", "application_id", "office_code", "program_code"} & set(partner_view(declined))
    # Other partner-visible events go to every granted partner.
    assert addressee(new_event(_submitted(), source="/onestop/intake")) is None


def test_internal_events_are_not_partner_visible() -> None:
    for internal in (
        "resident.updated",
        "consent.changed",
        "facts.reported",
        "case.info_requested",
        "notification.sent",
    ):
        assert internal not in PARTNER_VISIBLE_TYPES
        spec = CATALOGUE[internal]
        event = CloudEvent(id="1", source="/x", type=spec.cloudevents_type, time=dt.datetime.now(dt.UTC), data={})
        with pytest.raises(PermissionError):
            partner_view(event)


def test_subjects() -> None:
    assert subject_for("onestop", "case.decided") == "onestop.case.decided"
    assert subject_for("onestop", "onestop.case.decided") == "onestop.case.decided"
    assert partner_subject("onestop", "bank-1", "case.decided") == "onestop.partner.bank-1.case.decided"
    assert dead_letter_subject("onestop", "routing", "cases") == "onestop.dlq.routing.cases"


def test_the_design_s_event_types_are_all_in_the_catalogue() -> None:
    design = {
        "application.submitted", "application.withdrawn", "application.info_provided", "resident.updated",
        "consent.changed", "eligibility.determined", "eligibility.opportunity", "case.routed", "case.assigned",
        "case.info_requested", "case.decided", "case.transferred", "case.escalated", "case.sla_breached",
        "notification.sent", "notification.failed", "facts.reported",
    }  # fmt: skip
    assert design <= set(CATALOGUE)


def test_the_committed_asyncapi_document_is_current() -> None:
    assert ASYNCAPI_PATH.read_text() == render(), "docs/asyncapi.yaml is stale: run `onestop asyncapi`"


def test_the_asyncapi_document_describes_every_event_and_its_schema() -> None:
    document = yaml.safe_load(render())
    assert document["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in document["channels"].values()}
    for event_type, spec in CATALOGUE.items():
        assert f"onestop.{event_type}" in addresses
        assert spec.data_model.__name__ in document["components"]["schemas"]
        if spec.partner_visible:
            assert f"onestop.partner.{{partner_id}}.{event_type}" in addresses
    schema = document["components"]["schemas"]["ApplicationSubmitted"]
    assert {"application_id", "resident_id", "life_event", "answers", "channel"} <= set(schema["properties"])
