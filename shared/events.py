"""The CloudEvents 1.0 envelope and the catalogue of every OneStop event type.

Every event type has a pydantic model for its ``data``. Events carry pseudonymous resident ids (the random UUID
intake assigns), never names or contact details. Event types a partner may receive also declare a *partner view*:
the subset of fields that is safe to hand to a partner system; anything not in it never leaves the platform.
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import orjson
from pydantic import AliasPath, BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

TYPE_PREFIX = "onestop."
SPECVERSION: Literal["1.0"] = "1.0"
# CloudEvent.to_json: orjson writes what it holds natively and would write as pydantic does (str, int, float, bool,
# None, dict, list, tuple, UUID), and hands everything else (datetimes, dataclasses, subclasses such as enums) to
# pydantic, with the settings of ``model_dump(mode="json", exclude_none=True)``: the same text as the envelope dumped
# through pydantic first, without walking the whole data again in Python (the tests hold it to that).
_TO_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
_as_pydantic_dumps = functools.partial(to_jsonable_python, by_alias=False, exclude_none=True, inf_nan_mode="null")


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = SPECVERSION
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str | None = None
    time: dt.datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    # W3C trace context, per the CloudEvents distributed-tracing extension.
    traceparent: str | None = None
    data: dict[str, Any]

    @property
    def event_type(self) -> str:
        """The catalogue name (``application.submitted``) of the envelope's ``type``."""
        return self.type.removeprefix(TYPE_PREFIX)

    def data_as(self, model: builtins.type[D]) -> D:
        return model.model_validate(self.data)

    def to_json(self) -> bytes:
        """The envelope as JSON: byte for byte ``orjson.dumps(self.model_dump(mode="json", exclude_none=True))``."""
        if type(self) is not CloudEvent or self.__pydantic_extra__:
            return self._to_json_through_pydantic()
        # The fields in their declared order, those that are None left out, as model_dump gives them.
        envelope: dict[str, Any] = {"specversion": self.specversion, "id": self.id, "source": self.source}
        envelope["type"] = self.type
        if self.subject is not None:
            envelope["subject"] = self.subject
        envelope["time"] = self.time
        envelope["datacontenttype"] = self.datacontenttype
        if self.dataschema is not None:
            envelope["dataschema"] = self.dataschema
        if self.traceparent is not None:
            envelope["traceparent"] = self.traceparent
        envelope["data"] = self.data
        try:
            return orjson.dumps(envelope, default=_as_pydantic_dumps, option=_TO_JSON_OPTIONS)
        except TypeError:  # what orjson refuses (keys that are not text ...): pydantic's way, whatever it does
            return self._to_json_through_pydantic()

    def _to_json_through_pydantic(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_json(cls, raw: bytes | str) -> CloudEvent:
        return cls.model_validate(orjson.loads(raw))


class EventData(BaseModel):
    """Base of every event's ``data``. ``event_type`` names it in the catalogue."""

    model_config = ConfigDict(extra="forbid")
    event_type: ClassVar[str]


D = TypeVar("D", bound=BaseModel)


# ================================================================================================ shared vocabulary


class Language(StrEnum):
    KO = "ko"
    EN = "en"


class Department(StrEnum):
    WELFARE = "welfare"
    HEALTH = "health"
    HOUSING = "housing"
    TAX = "tax"
    CIVIL_REGISTRY = "civil_registry"
    LABOUR = "labour"


class Vulnerability(StrEnum):
    DISABILITY = "disability"
    SINGLE_PARENT = "single_parent"
    ELDERLY_ALONE = "elderly_alone"
    LOW_INCOME = "low_income"
    CHILD_HEAD_OF_HOUSEHOLD = "child_head_of_household"
    # A crisis a caseworker or a department flagged (a loss of income, an eviction, a death, a disaster): the
    # resident is reached in person when an offer goes unanswered.
    CRISIS = "crisis"


class Channel(StrEnum):
    WEB = "web"
    MOBILE = "mobile"
    KIOSK = "kiosk"
    PHONE = "phone"
    VISIT = "visit"


class Outcome(StrEnum):
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"
    NEEDS_INFORMATION = "needs_information"
    # The rule could not be evaluated (it raised); a person has to look.
    NEEDS_REVIEW = "needs_review"


class CriterionStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Decision(StrEnum):
    APPROVED = "approved"
    DENIED = "denied"


class ServiceType(StrEnum):
    """What a partner's offering provides (the capacity the platform brokers beside the public offices')."""

    CHILDCARE = "childcare"
    ELDER_CARE = "elder_care"
    DISABILITY_SUPPORT = "disability_support"
    FOOD_SUPPORT = "food_support"
    HOUSING_SUPPORT = "housing_support"
    COUNSELLING = "counselling"
    EMPLOYMENT_SUPPORT = "employment_support"
    LEGAL_AID = "legal_aid"
    HEALTH_CARE = "health_care"
    FINANCIAL_COUNSELLING = "financial_counselling"


class Localized(BaseModel):
    """A text in Korean and English."""

    ko: str
    en: str


class ResidentContext(BaseModel):
    """What routing and notify need to know of the resident, without identifying them."""

    district_code: str
    preferred_language: Language = Language.KO
    vulnerability: list[Vulnerability] = []
    # The registered household (세대) the resident lives in, by a pseudonymous id intake keeps for it: residents with
    # the same id live together (routing's integrated case management links them). None: not known from the registry.
    household_id: uuid.UUID | None = None


class HouseholdMember(BaseModel):
    # The member's relation to the resident; foster_child (가정위탁 아동) and ward (미성년후견 아동) are children the
    # resident raises as their carer (보호자) without being their parent.
    relation: Literal[
        "spouse", "child", "parent", "sibling", "grandparent", "grandchild", "foster_child", "ward", "other"
    ]
    birth_date: dt.date
    # A member's own income, when known, so a household total can be derived.
    monthly_income: int | None = None
    disability: bool = False


# ================================================================================================ intake


class ApplicationSubmitted(EventData):
    event_type: ClassVar[str] = "application.submitted"
    application_id: uuid.UUID
    resident_id: uuid.UUID
    life_event: str
    answers: dict[str, Any]
    channel: Channel
    application_date: dt.date
    submitted_at: dt.datetime
    filed_by: str | None = None
    resident: ResidentContext
    # An application filed by accepting an offer judges the offered programs only (empty: the life event's).
    program_codes: list[str] = []
    opportunity_id: uuid.UUID | None = None


# Where a partner the resident consented to may serve them (an NGO routes the family to its local branch, in their
# language), taken from the event's resident context; never their vulnerabilities.
PartnerDistrict = Annotated[str, Field(validation_alias=AliasPath("resident", "district_code"))]
PartnerLanguage = Annotated[Language, Field(validation_alias=AliasPath("resident", "preferred_language"))]


class ApplicationSubmittedPartnerView(BaseModel):
    application_id: uuid.UUID
    resident_id: uuid.UUID
    life_event: str
    channel: Channel
    submitted_at: dt.datetime
    district_code: PartnerDistrict
    preferred_language: PartnerLanguage


class ApplicationInfoProvided(EventData):
    event_type: ClassVar[str] = "application.info_provided"
    application_id: uuid.UUID
    resident_id: uuid.UUID
    answers: dict[str, Any]
    # The programs (and cases) whose requests this answers; empty means "re-evaluate everything".
    program_codes: list[str] = []
    case_ids: list[uuid.UUID] = []
    # Free text for the caseworker, for questions that name no fact.
    note: str | None = Field(default=None, max_length=2000)
    provided_at: dt.datetime


class ApplicationWithdrawn(EventData):
    event_type: ClassVar[str] = "application.withdrawn"
    application_id: uuid.UUID
    resident_id: uuid.UUID
    reason: str | None = None
    withdrawn_at: dt.datetime


class ApplicationWithdrawnPartnerView(BaseModel):
    application_id: uuid.UUID
    resident_id: uuid.UUID
    withdrawn_at: dt.datetime


class FeedbackGiven(EventData):
    """A resident rated the service at the point of delivery. The comment stays in intake; the score and where it
    came from feed the open satisfaction data."""

    event_type: ClassVar[str] = "feedback.given"
    application_id: uuid.UUID
    resident_id: uuid.UUID
    life_event: str
    channel: Channel
    district_code: str
    score: int = Field(ge=1, le=5)
    given_at: dt.datetime


class ResidentUpdated(EventData):
    """Registry facts about a resident that eligibility needs. No name, no contact details."""

    event_type: ClassVar[str] = "resident.updated"
    resident_id: uuid.UUID
    version: int = Field(ge=1, description="Increases with every change; consumers keep the highest they saw.")
    birth_date: dt.date
    district_code: str
    household: list[HouseholdMember] = []
    vulnerability: list[Vulnerability] = []
    preferred_language: Language = Language.KO
    updated_at: dt.datetime


class ConsentChanged(EventData):
    """The resident's full current consent set after a change (so a consumer never needs the earlier ones).

    Purposes: ``proactive_screening``; ``department_data:<department>`` (eligibility may use that department's
    facts); ``partner:<partner id>`` (that partner receives the events about this resident of every type it is
    granted) and ``partner:<partner id>:<event type>`` (that partner receives the events of that one type, e.g.
    ``partner:saebom-ngo:case.routed``). Without either, nothing about the resident reaches the partner."""

    event_type: ClassVar[str] = "consent.changed"
    resident_id: uuid.UUID
    version: int = Field(ge=1)
    consents: dict[str, bool]
    changed: list[str]
    changed_at: dt.datetime


class RepresentationChanged(EventData):
    """A resident named a representative, or the representation was revoked: who may act for whom, in which scopes,
    through which day. Pseudonymous ids only (the representative's is the resident id their own token carries); how
    the resident names them and what they are to the resident stay in intake."""

    event_type: ClassVar[str] = "representation.changed"
    representation_id: uuid.UUID
    resident_id: uuid.UUID
    representative_id: uuid.UUID
    scopes: list[Literal["apply", "answer", "withdraw", "consent", "read_messages", "data_rights"]]
    expires_on: dt.date = Field(description="The last day the representative may act, in the city's time zone")
    revoked_at: dt.datetime | None = None
    version: int = Field(ge=1, description="Increases with every change of this representation; keep the highest.")
    changed_at: dt.datetime


# ------------------------------------------------------------------------------------------------ erasure


class DecisionFile(BaseModel):
    """An application on which a department decided (a case approved or denied): the records each service holds of
    it are kept, pseudonymous, for as long as the law keeps a decision's file, counted from the last decision."""

    application_id: uuid.UUID
    decided_on: dt.date = Field(description="The day of the application's last decision, in the city's time zone")


class ResidentErasureRequested(EventData):
    """A resident (or someone acting for them) asked that their data be erased (개인정보 보호법 제36조). Every
    service erases what it may at once, keeps what the law makes it keep (the decision files named here, among
    others), pseudonymous, until its period ends, and answers with ``resident.erased``. Nothing more about the
    resident reaches a partner."""

    event_type: ClassVar[str] = "resident.erasure_requested"
    erasure_id: uuid.UUID
    resident_id: uuid.UUID
    decision_files: list[DecisionFile] = []
    requested_at: dt.datetime


class KeptRecords(BaseModel):
    """Records a service keeps after an erasure, and why: how many, the law that makes it keep them, and the day
    they are destroyed."""

    record_type: str
    count: int = Field(ge=0)
    reason: Localized
    legal_basis: str
    destroy_on: dt.date


class ResidentErased(EventData):
    """One service's answer to ``resident.erasure_requested``: what it erased (a count per record type) and what it
    keeps, with the reason and the day it will be destroyed."""

    event_type: ClassVar[str] = "resident.erased"
    erasure_id: uuid.UUID
    resident_id: uuid.UUID
    service: str
    erased: dict[str, int]
    kept: list[KeptRecords]
    erased_at: dt.datetime


class ServiceKeptRecords(KeptRecords):
    service: str


class ResidentErasureCompleted(EventData):
    """Every service answered the erasure request: the resident is told what was erased and what is kept, until
    when (개인정보 보호법 제36조 제2항·제6항 — 확인 필요)."""

    event_type: ClassVar[str] = "resident.erasure_completed"
    erasure_id: uuid.UUID
    resident_id: uuid.UUID
    kept: list[ServiceKeptRecords]
    completed_at: dt.datetime


# ============================================================================================ department facts


class ReportedFact(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    value: Any
    observed_at: dt.datetime
    valid_until: dt.datetime | None = None


class FactsReported(EventData):
    """A department source (or a partner registry) reports facts it holds about a resident."""

    event_type: ClassVar[str] = "facts.reported"
    report_id: uuid.UUID
    source: str = Field(description="The reporting department or partner, e.g. 'tax'")
    department: Department
    resident_id: uuid.UUID
    facts: list[ReportedFact]
    reported_at: dt.datetime


# ================================================================================================ eligibility


class WorkingLine(BaseModel):
    """One line of how a derived figure (a recognised income ...) was computed."""

    item: str
    label: Localized
    amount: int
    # "reference" (a statutory figure), "derived" (a subtotal of the lines above), or the source of the fact this
    # figure is (declared / registry / department:<code> / missing).
    source: str
    # The statute or notice a statutory figure or rate comes from.
    reference: str | None = None


class CriterionResult(BaseModel):
    id: str
    label: Localized
    legal_reference: str | None = None
    status: CriterionStatus
    # The facts the criterion read, with where each value came from (declared / registry / a department).
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    # For a derived figure the criterion read that has workings: its computation, line by line.
    workings: dict[str, list[WorkingLine]] = {}


class MissingFact(BaseModel):
    name: str
    type: str
    question: Localized
    # Who can supply it: the resident (they are asked) or only staff (a caseworker must obtain it).
    asked_of: Literal["resident", "staff"] = "resident"


class ProgramDetermination(BaseModel):
    program_code: str
    program_name: Localized
    department: Department
    outcome: Outcome
    rule_version: int
    automatic: bool = Field(description="Granted without a caseworker when eligible")
    amount: int | None = Field(default=None, description="KRW, when the program computes one")
    amount_period: Literal["once", "monthly", "yearly", "total"] | None = None
    criteria: list[CriterionResult] = []
    missing: list[MissingFact] = []
    sla_days: int = Field(ge=1)
    overflow_allowed: bool = False
    case_weight: float = Field(default=1.0, gt=0)
    error: str | None = None


class EligibilityDetermined(EventData):
    event_type: ClassVar[str] = "eligibility.determined"
    determination_id: uuid.UUID
    application_id: uuid.UUID
    resident_id: uuid.UUID
    # Increases with each evaluation of one application, so consumers can tell the newest from a late redelivery.
    round: int = Field(ge=1)
    trigger: Literal["submitted", "info_provided", "facts_reported", "registry_updated", "consent_changed"]
    application_date: dt.date
    evaluated_at: dt.datetime
    resident: ResidentContext
    programs: list[ProgramDetermination]


class ProgramOutcomePartnerView(BaseModel):
    program_code: str
    department: Department
    outcome: Outcome
    amount: int | None = None


class EligibilityDeterminedPartnerView(BaseModel):
    determination_id: uuid.UUID
    application_id: uuid.UUID
    resident_id: uuid.UUID
    round: int
    evaluated_at: dt.datetime
    district_code: PartnerDistrict
    preferred_language: PartnerLanguage
    programs: list[ProgramOutcomePartnerView]


class EligibilityOpportunity(EventData):
    """Proactive screening found a resident (who consented to it) eligible for a program they never applied to."""

    event_type: ClassVar[str] = "eligibility.opportunity"
    screening_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    program_name: Localized
    department: Department
    amount: int | None = None
    amount_period: Literal["once", "monthly", "yearly", "total"] | None = None
    found_at: dt.datetime


class ScreeningQuestionAsked(EventData):
    """A near miss: one fact the platform does not know could make a resident (who consented to proactive screening)
    eligible for a program, so they are asked that one question — which fact, and why — instead of sent an offer."""

    event_type: ClassVar[str] = "screening.question_asked"
    question_id: uuid.UUID
    screening_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    program_name: Localized
    department: Department
    fact: MissingFact
    # The values a fact with a closed list takes (crisis_type, tenure ...), so the question can offer them.
    choices: list[str] | None = None
    why: Localized
    asked_at: dt.datetime


# ================================================================================================ offers (intake)


class OfferDeclineReason(StrEnum):
    """Why a resident declined an offer (the open data counts them; free text stays in intake)."""

    NOT_INTERESTED = "not_interested"
    ALREADY_RECEIVING = "already_receiving"
    CIRCUMSTANCES_CHANGED = "circumstances_changed"
    WILL_APPLY_LATER = "will_apply_later"
    PREFERS_IN_PERSON = "prefers_in_person"
    PRIVACY = "privacy"
    OTHER = "other"


class ActedAs(StrEnum):
    """Who answered an offer or a question: the resident, a representative they named, or counter staff under the
    authority the resident gave."""

    RESIDENT = "resident"
    REPRESENTATIVE = "representative"
    COUNTER = "counter"


class ScreeningQuestionAnswered(EventData):
    """The resident (or who acts for them) answered a screening question: eligibility keeps the answer as a declared
    fact of the resident and screens them again."""

    event_type: ClassVar[str] = "screening.question_answered"
    question_id: uuid.UUID
    resident_id: uuid.UUID
    fact: str
    value: Any
    acted_as: ActedAs
    answered_at: dt.datetime


class OpportunityOffered(EventData):
    """Intake put an offer before a resident (screening found them eligible, and they consent to being told): it
    expires on ``expires_on`` unless accepted or declined. The resident context tells routing where an outreach visit
    would go and whether the resident is one to visit."""

    event_type: ClassVar[str] = "opportunity.offered"
    opportunity_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    program_name: Localized
    department: Department
    amount: int | None = None
    amount_period: Literal["once", "monthly", "yearly", "total"] | None = None
    offered_at: dt.datetime
    expires_on: dt.date = Field(description="The last day the offer may be accepted, in the city's time zone")
    resident: ResidentContext


class OpportunityAccepted(EventData):
    """The resident accepted an offer with one confirmation: an application for that program was filed."""

    event_type: ClassVar[str] = "opportunity.accepted"
    opportunity_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    department: Department
    application_id: uuid.UUID
    acted_as: ActedAs
    accepted_at: dt.datetime


class OpportunityDeclined(EventData):
    event_type: ClassVar[str] = "opportunity.declined"
    opportunity_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    department: Department
    reason: OfferDeclineReason
    acted_as: ActedAs
    declined_at: dt.datetime


class OpportunityExpired(EventData):
    """An offer ended unanswered: its time ran out, or the resident withdrew their proactive-screening consent."""

    event_type: ClassVar[str] = "opportunity.expired"
    opportunity_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    department: Department
    reason: Literal["deadline", "consent_withdrawn"]
    expired_at: dt.datetime


# ================================================================================================ routing


class CaseEventBase(EventData):
    case_id: uuid.UUID
    application_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    department: Department
    office_code: str


class CaseRouted(CaseEventBase):
    event_type: ClassVar[str] = "case.routed"
    office_name: Localized
    status: Literal["open", "closed"]
    priority: int
    automatic: bool
    due_date: dt.date | None = None
    reason: str
    routed_at: dt.datetime


class CaseRoutedPartnerView(BaseModel):
    case_id: uuid.UUID
    application_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    department: Department
    office_code: str
    due_date: dt.date | None = None
    routed_at: dt.datetime


class CaseAssigned(CaseEventBase):
    event_type: ClassVar[str] = "case.assigned"
    assignee: str | None = Field(description="Staff subject, or null when released back to the queue")
    assigned_by: str
    assigned_at: dt.datetime


class InfoQuestion(BaseModel):
    fact: str | None = None
    text: str = Field(min_length=1, max_length=1000)


class CaseInfoRequested(CaseEventBase):
    event_type: ClassVar[str] = "case.info_requested"
    questions: list[InfoQuestion]
    requested_at: dt.datetime


class CaseDecided(CaseEventBase):
    event_type: ClassVar[str] = "case.decided"
    decision: Decision
    reason_code: str
    reason: Localized | None = None
    amount: int | None = None
    automatic: bool
    decided_at: dt.datetime


class CaseDecidedPartnerView(BaseModel):
    case_id: uuid.UUID
    application_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    department: Department
    decision: Decision
    reason_code: str
    amount: int | None = None
    decided_at: dt.datetime


class CaseTransferred(CaseEventBase):
    event_type: ClassVar[str] = "case.transferred"
    from_office_code: str
    office_name: Localized
    reason: str
    due_date: dt.date | None = None
    transferred_at: dt.datetime


class CaseEscalated(CaseEventBase):
    event_type: ClassVar[str] = "case.escalated"
    reason: str
    escalated_by: str
    escalated_at: dt.datetime


class CaseSlaBreached(CaseEventBase):
    event_type: ClassVar[str] = "case.sla_breached"
    due_date: dt.date
    breached_at: dt.datetime
    expected_by: dt.date | None = None


class CaseResumed(CaseEventBase):
    """The resident answered a request for information: the SLA clock runs again, and the due date moved by the
    working days the case waited."""

    event_type: ClassVar[str] = "case.resumed"
    due_date: dt.date
    paused_working_days: int = Field(ge=0)
    resumed_at: dt.datetime


class CaseClosed(CaseEventBase):
    """A case ends without a decision: the application was withdrawn, or a re-evaluation made it moot."""

    event_type: ClassVar[str] = "case.closed"
    reason: Literal["withdrawn", "no_longer_applicable"]
    closed_at: dt.datetime


class CaseClosedPartnerView(BaseModel):
    case_id: uuid.UUID
    application_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    reason: Literal["withdrawn", "no_longer_applicable"]
    closed_at: dt.datetime


class OutreachVisitOutcome(StrEnum):
    """What an outreach visit came to (routing's ``GET /v1/outreach-outcomes`` labels them)."""

    APPLIED_WITH_HELP = "applied_with_help"
    WILL_APPLY = "will_apply"
    DECLINED = "declined"
    REFERRED = "referred_to_other_support"
    NOT_AT_HOME = "not_at_home"
    UNREACHABLE = "unreachable"
    MOVED = "moved_or_unknown_address"


class OutreachEventBase(EventData):
    case_id: uuid.UUID
    opportunity_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    office_code: str


class OutreachOpened(OutreachEventBase):
    """A vulnerable resident left an offer unanswered for the set number of working days: an outreach case (kind
    ``outreach``) is in their district office's queue, due by ``due_date``."""

    event_type: ClassVar[str] = "outreach.opened"
    department: Department
    due_date: dt.date
    vulnerability: list[Vulnerability]
    opened_at: dt.datetime


class OutreachVisited(OutreachEventBase):
    """A caseworker recorded an outreach visit and what it came to; ``final`` visits close the case."""

    event_type: ClassVar[str] = "outreach.visited"
    outcome: OutreachVisitOutcome
    final: bool
    visited_on: dt.date
    recorded_by: str
    recorded_at: dt.datetime


class OutreachClosed(OutreachEventBase):
    """An outreach case ended without a visit: the resident answered the offer, or withdrew their consent."""

    event_type: ClassVar[str] = "outreach.closed"
    reason: Literal["resident_responded", "consent_withdrawn"]
    closed_at: dt.datetime


# ------------------------------------------------------------------------------------------------ household cases


class HouseholdCaseOutcome(StrEnum):
    """How integrated case management (통합사례관리) of a household ended."""

    GOALS_MET = "goals_met"
    MOVED_AWAY = "moved_away"
    DECLINED = "declined"
    REFERRED_ON = "referred_on"


class NeedDomain(StrEnum):
    """The domains a household's needs are assessed in (통합사례관리 욕구 사정 영역)."""

    INCOME = "income"
    HOUSING = "housing"
    HEALTH = "health"
    CARE = "care"
    EMPLOYMENT = "employment"
    EDUCATION = "education"


class HouseholdCaseEventBase(EventData):
    """A household's integrated case: one per household, above its members' department cases (which it references,
    never copies). ``member_ids`` are the members' pseudonymous resident ids; nothing else about them travels."""

    household_case_id: uuid.UUID
    member_ids: list[uuid.UUID]
    district_code: str
    office_code: str


class HouseholdCaseOpened(HouseholdCaseEventBase):
    """A household case was opened, by the rule (open cases in two or more departments with a vulnerability or
    crisis flag) or by a caseworker; it waits in the district's integrated case-management office for a lead."""

    event_type: ClassVar[str] = "household_case.opened"
    office_name: Localized
    trigger: Literal["automatic", "caseworker"]
    departments: list[str]
    opened_at: dt.datetime


class HouseholdCaseMemberAdded(HouseholdCaseEventBase):
    """A resident joined a running household case: one registered in the household who came to have a case (by the
    rule), or one a lead added. ``resident_id`` is the new member (also in ``member_ids``); they are told as the
    others were at opening."""

    event_type: ClassVar[str] = "household_case.member_added"
    resident_id: uuid.UUID
    office_name: Localized
    how: Literal["household", "caseworker"]
    opened_at: dt.datetime
    added_at: dt.datetime


class HouseholdCasePlanChanged(HouseholdCaseEventBase):
    """The household's shared plan changed (a new version): needs by domain, goals, and the services to reach
    them."""

    event_type: ClassVar[str] = "household_case.plan_changed"
    plan_version: int = Field(ge=1)
    domains: list[NeedDomain]
    goals: int = Field(ge=0)
    services: int = Field(ge=0)
    changed_at: dt.datetime


class HouseholdCaseFollowUpDue(HouseholdCaseEventBase):
    """A follow-up of the household case is due: on the working day it falls due (a reminder, once: ``overdue``
    false), when the lead missed it (past its SLA, ``overdue`` and escalated to the office's supervisors), or the
    check months after closure."""

    event_type: ClassVar[str] = "household_case.follow_up_due"
    follow_up_id: uuid.UUID
    kind: Literal["follow_up", "closure_check"]
    due_date: dt.date
    overdue: bool
    escalated: bool
    at: dt.datetime


class HouseholdCaseClosed(HouseholdCaseEventBase):
    """The household case ended with an outcome; a check follows on ``follow_up_check_on``."""

    event_type: ClassVar[str] = "household_case.closed"
    outcome: HouseholdCaseOutcome
    follow_up_check_on: dt.date
    closed_at: dt.datetime


# ------------------------------------------------------------------------------------------------ referrals


class ReferralEventBase(EventData):
    """A referral of a resident (with their consent) by a caseworker to a partner's offering. Addressed to one
    partner: notify hands its partner view to that partner only (``partner_id``)."""

    referral_id: uuid.UUID
    partner_id: str
    offering_id: uuid.UUID
    offering_code: str
    offering_name: Localized
    service_type: ServiceType
    case_id: uuid.UUID
    application_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    office_code: str


class ReferralCreated(ReferralEventBase):
    """A caseworker referred a resident to a partner's offering with room; a place is held for them."""

    event_type: ClassVar[str] = "referral.created"
    district_code: str
    language: Language
    referred_by: str
    created_at: dt.datetime


class ReferralAccepted(ReferralEventBase):
    """The partner accepted the referral: it will serve the resident."""

    event_type: ClassVar[str] = "referral.accepted"
    accepted_at: dt.datetime


DeclineReason = Literal["no_capacity", "not_eligible", "out_of_area", "language", "other"]


class ReferralDeclined(ReferralEventBase):
    """The partner declined the referral; the place it held is free again."""

    event_type: ClassVar[str] = "referral.declined"
    reason: DeclineReason
    declined_at: dt.datetime


ReferralOutcome = Literal["served", "not_served", "resident_declined"]


class ReferralCompleted(ReferralEventBase):
    """The partner reported the outcome of an accepted referral; the place it held is free again."""

    event_type: ClassVar[str] = "referral.completed"
    outcome: ReferralOutcome
    completed_at: dt.datetime


class ReferralPartnerView(BaseModel):
    """What the partner sees of a referral: its own offering and the pseudonymous resident id, nothing else about
    the resident (no district, language, case, program or office)."""

    referral_id: uuid.UUID
    offering_code: str
    service_type: ServiceType
    resident_id: uuid.UUID


class ReferralCreatedPartnerView(ReferralPartnerView):
    created_at: dt.datetime


class ReferralAcceptedPartnerView(ReferralPartnerView):
    accepted_at: dt.datetime


class ReferralDeclinedPartnerView(ReferralPartnerView):
    reason: DeclineReason
    declined_at: dt.datetime


class ReferralCompletedPartnerView(ReferralPartnerView):
    outcome: ReferralOutcome
    completed_at: dt.datetime


# ================================================================================================ notify


class NotificationSent(EventData):
    event_type: ClassVar[str] = "notification.sent"
    notification_id: uuid.UUID
    resident_id: uuid.UUID
    application_id: uuid.UUID | None = None
    source_event_ids: list[str]
    channel: Literal["inbox", "email", "sms", "post"]
    template: str
    language: Language
    sent_at: dt.datetime


class NotificationFailed(EventData):
    event_type: ClassVar[str] = "notification.failed"
    notification_id: uuid.UUID
    resident_id: uuid.UUID
    application_id: uuid.UUID | None = None
    source_event_ids: list[str]
    channel: Literal["inbox", "email", "sms", "post"]
    template: str
    attempts: int
    error: str
    dead: bool
    failed_at: dt.datetime


# ================================================================================================ aggregates


class DeterminationCounts(BaseModel):
    """One district's determinations of one program in the period, by outcome. An outcome counted fewer times than
    the minimum group size (but not zero) is withheld (null)."""

    district_code: str
    program_code: str
    determinations: int = Field(ge=0)
    eligible: int | None = Field(ge=0)
    ineligible: int | None = Field(ge=0)
    needs_information: int | None = Field(ge=0)
    needs_review: int | None = Field(ge=0)


class DeterminationsCounted(EventData):
    """Eligibility determinations counted per district and program over one period: no resident ids, no consent.

    For planning: a partner granted it needs no resident's consent. Each evaluation round counts once per program. A
    district and program with fewer determinations than ``min_group`` is left out (``withheld_groups`` says how many
    were), and within a group an outcome counted fewer times is withheld, with the next smallest when that one alone
    could be worked out from the total."""

    event_type: ClassVar[str] = "aggregate.determinations_counted"
    period_start: dt.datetime
    period_end: dt.datetime
    min_group: int = Field(ge=1)
    counts: list[DeterminationCounts]
    withheld_groups: int = Field(ge=0)
    counted_at: dt.datetime


class DeterminationsCountedPartnerView(BaseModel):
    period_start: dt.datetime
    period_end: dt.datetime
    min_group: int
    counts: list[DeterminationCounts]
    withheld_groups: int


# ================================================================================================ the catalogue


@dataclass(frozen=True)
class EventSpec:
    event_type: str
    data_model: type[EventData]
    producer: str
    description: str
    partner_view: type[BaseModel] | None = None
    version: int = 1
    # The event is for one partner only, the one its data's ``partner_id`` names (a referral to that partner).
    addressed: bool = False

    # Cached: read for every event emitted.
    @functools.cached_property
    def cloudevents_type(self) -> str:
        return TYPE_PREFIX + self.event_type

    @functools.cached_property
    def dataschema(self) -> str:
        return f"urn:onestop:schema:{self.event_type}:v{self.version}"

    @property
    def partner_visible(self) -> bool:
        return self.partner_view is not None

    @property
    def about_a_resident(self) -> bool:
        """Whether what a partner sees names a resident (then it needs that resident's consent); an aggregate does
        not."""
        return self.partner_view is not None and "resident_id" in self.partner_view.model_fields


def _spec(
    model: type[EventData], producer: str, partner_view: type[BaseModel] | None = None, *, addressed: bool = False
) -> EventSpec:
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    return EventSpec(model.event_type, model, producer, doc or model.event_type, partner_view, addressed=addressed)


CATALOGUE: dict[str, EventSpec] = {
    spec.event_type: spec
    for spec in (
        _spec(ApplicationSubmitted, "intake", ApplicationSubmittedPartnerView),
        _spec(ApplicationInfoProvided, "intake"),
        _spec(ApplicationWithdrawn, "intake", ApplicationWithdrawnPartnerView),
        _spec(FeedbackGiven, "intake"),
        _spec(ResidentUpdated, "intake"),
        _spec(ConsentChanged, "intake"),
        _spec(RepresentationChanged, "intake"),
        _spec(ResidentErasureRequested, "intake"),
        _spec(ResidentErased, "eligibility, routing, notify"),
        _spec(ResidentErasureCompleted, "intake"),
        _spec(FactsReported, "department sources"),
        _spec(EligibilityDetermined, "eligibility", EligibilityDeterminedPartnerView),
        _spec(EligibilityOpportunity, "eligibility"),
        _spec(ScreeningQuestionAsked, "eligibility"),
        _spec(ScreeningQuestionAnswered, "intake"),
        _spec(OpportunityOffered, "intake"),
        _spec(OpportunityAccepted, "intake"),
        _spec(OpportunityDeclined, "intake"),
        _spec(OpportunityExpired, "intake"),
        _spec(CaseRouted, "routing", CaseRoutedPartnerView),
        _spec(CaseAssigned, "routing"),
        _spec(CaseInfoRequested, "routing"),
        _spec(CaseDecided, "routing", CaseDecidedPartnerView),
        _spec(CaseTransferred, "routing"),
        _spec(CaseEscalated, "routing"),
        _spec(CaseSlaBreached, "routing"),
        _spec(CaseResumed, "routing"),
        _spec(CaseClosed, "routing", CaseClosedPartnerView),
        _spec(OutreachOpened, "routing"),
        _spec(OutreachVisited, "routing"),
        _spec(OutreachClosed, "routing"),
        _spec(HouseholdCaseOpened, "routing"),
        _spec(HouseholdCaseMemberAdded, "routing"),
        _spec(HouseholdCasePlanChanged, "routing"),
        _spec(HouseholdCaseFollowUpDue, "routing"),
        _spec(HouseholdCaseClosed, "routing"),
        _spec(ReferralCreated, "routing", ReferralCreatedPartnerView, addressed=True),
        _spec(ReferralAccepted, "routing", ReferralAcceptedPartnerView, addressed=True),
        _spec(ReferralDeclined, "routing", ReferralDeclinedPartnerView, addressed=True),
        _spec(ReferralCompleted, "routing", ReferralCompletedPartnerView, addressed=True),
        _spec(NotificationSent, "notify"),
        _spec(NotificationFailed, "notify"),
        _spec(DeterminationsCounted, "notify", DeterminationsCountedPartnerView),
    )
}

PARTNER_VISIBLE_TYPES = frozenset(t for t, spec in CATALOGUE.items() if spec.partner_visible)
# The partner-visible types about one resident: a resident may consent to a partner receiving one of these alone.
RESIDENT_PARTNER_TYPES = frozenset(t for t, spec in CATALOGUE.items() if spec.about_a_resident)
# Fields of partner views that are money: a partner sees them only under a grant whose purpose needs them.
AMOUNT_FIELDS = frozenset({"amount", "amount_period"})


class UnknownEventType(LookupError):
    pass


def spec_for(event_type: str) -> EventSpec:
    try:
        return CATALOGUE[event_type.removeprefix(TYPE_PREFIX)]
    except KeyError:
        raise UnknownEventType(event_type) from None


def new_event(
    data: EventData, *, source: str, subject: str | None = None, traceparent: str | None = None
) -> CloudEvent:
    """Wrap ``data`` in a fresh envelope. ``source`` names the producing service (``/onestop/intake``)."""
    spec = spec_for(data.event_type)
    if not isinstance(data, spec.data_model):
        raise TypeError(f"{type(data).__name__} is not the data model of {spec.event_type}")
    return CloudEvent(
        id=str(uuid.uuid4()),
        source=source,
        type=spec.cloudevents_type,
        subject=subject,
        time=dt.datetime.now(dt.UTC),
        dataschema=spec.dataschema,
        traceparent=traceparent,
        data=data.model_dump(mode="json"),
    )


def validate_event(event: CloudEvent) -> EventData:
    """The event's data, validated against its catalogue model (raises on unknown types and bad data)."""
    return spec_for(event.type).data_model.model_validate(event.data)


def partner_view(event: CloudEvent, *, amounts: bool = True) -> dict[str, Any]:
    """The partner-safe projection of an event's data: only the fields its partner view declares; without
    ``amounts``, none of the :data:`AMOUNT_FIELDS` at any depth either."""
    spec = spec_for(event.type)
    if spec.partner_view is None:
        raise PermissionError(f"{spec.event_type} is not partner-visible")
    view = spec.partner_view.model_validate(event.data).model_dump(mode="json")
    return view if amounts else without_amounts(view)


def without_amounts(value: Any) -> Any:
    """``value`` (JSON data) with every key of :data:`AMOUNT_FIELDS` left out, at any depth."""
    if isinstance(value, dict):
        return {k: without_amounts(v) for k, v in value.items() if k not in AMOUNT_FIELDS}
    if isinstance(value, list):
        return [without_amounts(v) for v in value]
    return value


def partner_purpose(partner_id: str, event_type: str | None = None) -> str:
    """The consent purpose letting a partner receive the events about a resident: every granted type
    (``partner:<id>``) or one (``partner:<id>:<event type>``). See :class:`ConsentChanged`."""
    return f"partner:{partner_id}" if event_type is None else f"partner:{partner_id}:{event_type}"


def addressee(event: CloudEvent) -> str | None:
    """The one partner an addressed event is for (``None`` for an event any granted partner may receive)."""
    spec = spec_for(event.type)
    if not spec.addressed:
        return None
    return str(event.data["partner_id"])


def subject_for(prefix: str, event_type: str) -> str:
    """The NATS subject of an event type: ``<prefix>.<event_type>`` (``onestop.application.submitted``)."""
    return f"{prefix}.{event_type.removeprefix(TYPE_PREFIX)}"


def partner_subject(prefix: str, partner_id: str, event_type: str) -> str:
    """Where notify republishes the partner view of an event for one partner, if that partner was granted the type.

    A partner's NATS user may subscribe to ``<prefix>.partner.<its id>.>`` and nothing else, so the server itself
    keeps one partner from another's events and from the internal subjects."""
    return f"{prefix}.partner.{partner_id}.{event_type.removeprefix(TYPE_PREFIX)}"


def dead_letter_subject(prefix: str, service: str, consumer: str) -> str:
    return f"{prefix}.dlq.{service}.{consumer}"
