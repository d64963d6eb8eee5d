"""Request and response bodies of the intake API (pydantic v2)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
)

from shared.events import (
    RESIDENT_PARTNER_TYPES,
    ActedAs,
    Channel,
    CriterionResult,
    DecisionFile,
    DeclineReason,
    Department,
    KeptRecords,
    Language,
    Localized,
    MissingFact,
    OfferDeclineReason,
    Outcome,
    ReferralOutcome,
    ServiceType,
    Vulnerability,
)

# ---------------------------------------------------------------------------------------------- field types


def _storable(value: str) -> str:
    # PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded: refuse both here, as a 422.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_date(value: Any) -> Any:
    """Only a calendar date written YYYY-MM-DD: not a number of seconds, not a timestamp."""
    if isinstance(value, dt.datetime):
        raise ValueError("must be a date (YYYY-MM-DD), not a timestamp")
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("must be a date written YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError("is not a valid calendar date") from None


def _not_ancient(value: dt.date) -> dt.date:
    if value < dt.date(1900, 1, 1):
        raise ValueError("must not be before 1900-01-01")
    return value


# Whether a date lies in the future depends on "today" in the city's time zone, so the domain checks that.
BirthDate = Annotated[dt.date, BeforeValidator(_iso_date), AfterValidator(_not_ancient)]
# A day something lasts through (a representation's expiry, a counter authority's last day): the domain checks it
# against today.
LastDay = Annotated[dt.date, BeforeValidator(_iso_date)]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_storable)]
Address = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), AfterValidator(_storable)
]
DistrictCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{5}$")]
# The household (세대) as the resident registry keys it (e.g. the number on a 주민등록등본); staff copy it from the
# registry. Residents registered with the same key live together.
RegistryHouseholdKey = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9A-Za-z][0-9A-Za-z-]{0,39}$")
]
REGISTRY_HOUSEHOLD_DESCRIPTION = (
    "The household (세대) the resident registry lists the resident in, as the registry keys it; staff set it from the "
    "registry (a resident cannot). Residents with the same key live together: integrated case management takes "
    "them on as one household."
)
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 -]{6,19}$")]
Email = Annotated[EmailStr, StringConstraints(max_length=254)]
LifeEventCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,49}$")]
FactName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,99}$")]
Comment = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), AfterValidator(_storable)
]
Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), AfterValidator(_storable)
]

# partner:<partner id> lets that partner receive every event type it is granted about the resident;
# partner:<partner id>:<event type> only that type (one of the partner-visible types about a resident).
# case_management: the district's integrated case-management team (통합사례관리) sees the resident's cases in every
# department when their household is taken on (routing's households.py).
PURPOSE_PATTERN = (
    r"^(proactive_screening|case_management|department_data:(" + "|".join(d.value for d in Department) + r")"
    r"|partner:[a-z0-9][a-z0-9_-]{0,63}(:[a-z][a-z0-9_.]{2,79})?)$"
)


def _known_partner_event_type(purpose: str) -> str:
    if purpose.startswith("partner:") and purpose.count(":") == 2:
        event_type = purpose.rsplit(":", 1)[1]
        if event_type not in RESIDENT_PARTNER_TYPES:
            known = ", ".join(sorted(RESIDENT_PARTNER_TYPES))
            raise ValueError(f"'{event_type}' is not an event type a partner may receive about you (one of: {known})")
    return purpose


Purpose = Annotated[str, StringConstraints(pattern=PURPOSE_PATTERN), AfterValidator(_known_partner_event_type)]

# ``post``: a printed letter to the resident's address, for residents without a digital channel.
ContactChannel = Literal["inbox", "email", "sms", "post"]
# A household member's relation to the resident: foster_child (가정위탁 아동) and ward (미성년후견 아동) are
# children the resident raises as their carer (보호자).
Relation = Literal["spouse", "child", "parent", "sibling", "grandparent", "grandchild", "foster_child", "ward", "other"]

MAX_ANSWERS = 100


def _inbox_only() -> list[ContactChannel]:
    return ["inbox"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------- residents


class HouseholdMemberIn(Strict):
    relation: Relation
    birth_date: BirthDate
    monthly_income: Annotated[StrictInt, Field(ge=0, le=10**12)] | None = Field(
        default=None, description="KRW a month, when known"
    )
    disability: StrictBool = False


class ResidentCreate(Strict):
    name: Name
    birth_date: BirthDate
    district_code: DistrictCode = Field(description="Five-digit district code, e.g. 11440 (Mapo-gu)")
    address: Address
    household: list[HouseholdMemberIn] = Field(default_factory=list, max_length=20)
    registry_household: RegistryHouseholdKey | None = Field(default=None, description=REGISTRY_HOUSEHOLD_DESCRIPTION)
    email: Email | None = None
    phone: Phone | None = None
    preferred_language: Language = Language.KO
    preferred_channels: list[ContactChannel] = Field(default_factory=_inbox_only, min_length=1, max_length=4)
    vulnerability: list[Vulnerability] = Field(default_factory=list, max_length=len(Vulnerability))


class ResidentUpdate(Strict):
    """Only the fields given change; ``email`` and ``phone`` may be set to null to remove them."""

    name: Name | None = None
    birth_date: BirthDate | None = None
    district_code: DistrictCode | None = None
    address: Address | None = None
    household: list[HouseholdMemberIn] | None = Field(default=None, max_length=20)
    registry_household: RegistryHouseholdKey | None = Field(default=None, description=REGISTRY_HOUSEHOLD_DESCRIPTION)
    email: Email | None = None
    phone: Phone | None = None
    preferred_language: Language | None = None
    preferred_channels: list[ContactChannel] | None = Field(default=None, min_length=1, max_length=4)
    vulnerability: list[Vulnerability] | None = Field(default=None, max_length=len(Vulnerability))


class HouseholdMemberView(BaseModel):
    relation: Relation
    birth_date: dt.date
    monthly_income: int | None = None
    disability: bool = False


class ResidentView(BaseModel):
    id: uuid.UUID
    name: str
    birth_date: dt.date
    district_code: str
    address: str
    household: list[HouseholdMemberView]
    registry_household: str | None = None
    household_id: uuid.UUID | None = Field(
        default=None, description="The pseudonymous id of the registered household the events carry"
    )
    email: str | None
    phone: str | None
    preferred_language: Language
    preferred_channels: list[ContactChannel]
    vulnerability: list[Vulnerability]
    consents: dict[str, bool]
    version: int
    assisted: bool = Field(description="Registered by staff at a counter rather than by the resident")
    created_at: dt.datetime
    updated_at: dt.datetime


class PostalAddress(BaseModel):
    name: str
    address: str


# How many residents one request for contact details may name (notify asks for a dispatch batch's at once).
MAX_CONTACTS = 100


class ContactView(BaseModel):
    resident_id: uuid.UUID
    email: str | None
    phone: str | None
    preferred_language: Language
    preferred_channels: list[ContactChannel]
    postal: PostalAddress | None = Field(
        default=None, description="Name and address for a printed letter: only when the resident chose post"
    )


class ContactsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resident_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_CONTACTS)


class ContactList(BaseModel):
    items: list[ContactView] = Field(description="The residents asked for that may be reached; the others are left out")


# ---------------------------------------------------------------------------------------------- acting for a resident


class RepresentativeScope(StrEnum):
    """What a representative may do for the resident."""

    APPLY = "apply"
    ANSWER = "answer"  # answer requests for information
    WITHDRAW = "withdraw"
    CONSENT = "consent"  # read and set the resident's consents
    READ_MESSAGES = "read_messages"  # the resident's inbox in notify
    # Ask, for the resident, for a copy of all their data or its erasure (개인정보 보호법 제38조: through a
    # representative they authorised).
    DATA_RIGHTS = "data_rights"


class RepresentativeRelation(StrEnum):
    FAMILY = "family"
    LEGAL_GUARDIAN = "legal_guardian"
    CARE_WORKER = "care_worker"


class Standing(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


def _distinct_scopes(value: list[RepresentativeScope]) -> list[RepresentativeScope]:
    if len(set(value)) != len(value):
        raise ValueError("must not repeat a scope")
    return value


class RepresentationCreate(Strict):
    """The resident names a representative: the person signs in as themselves (the resident id their own token
    carries) and may then act for the resident within the scopes, through the expiry date."""

    representative_id: uuid.UUID = Field(description="The resident id the representative's own token carries")
    representative_name: Name = Field(description="How the resident names them (shown in the access log)")
    relation: RepresentativeRelation
    scopes: Annotated[list[RepresentativeScope], AfterValidator(_distinct_scopes)] = Field(min_length=1, max_length=6)
    expires_on: LastDay = Field(description="The last day the representative may act (in the city's time zone)")


class RepresentationView(BaseModel):
    id: uuid.UUID
    resident_id: uuid.UUID
    representative_id: uuid.UUID
    representative_name: str
    relation: RepresentativeRelation
    scopes: list[RepresentativeScope]
    expires_on: dt.date
    standing: Standing
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class CounterAuthorityKind(StrEnum):
    """How the resident agreed at the counter that staff act for them."""

    SIGNED_FORM = "signed_form"
    ID_CHECKED = "id_checked"


OfficeCode = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9-]{0,49}$")]
Reference = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_storable)
]


class CounterAuthorityCreate(Strict):
    kind: CounterAuthorityKind
    reference: Reference = Field(description="The signed form's number, or the kind of ID seen (never the ID's number)")
    office_code: OfficeCode | None = Field(
        default=None, description="The counter's office; may be left out by staff who work in one office only"
    )
    valid_until: LastDay | None = Field(
        default=None, description="The last day staff may act on it (default: today, the day of the visit)"
    )


class CounterAuthorityView(BaseModel):
    id: uuid.UUID
    resident_id: uuid.UUID
    kind: CounterAuthorityKind
    reference: str
    office_code: str
    valid_until: dt.date
    standing: Standing
    recorded_at: dt.datetime
    recorded_by: str
    recorded_by_name: str | None
    revoked_at: dt.datetime | None


# ---------------------------------------------------------------------------------------------- consents


class ConsentsUpdate(Strict):
    """The resident's complete consent set: a purpose left out is a consent withdrawn."""

    consents: dict[Purpose, StrictBool] = Field(
        max_length=50,
        description=(
            "proactive_screening, department_data:<department>, partner:<partner id> (every event type the partner "
            "is granted) or partner:<partner id>:<event type> (that type only, e.g. partner:saebom-ngo:case.routed) "
            "-> granted"
        ),
        examples=[{"proactive_screening": True, "department_data:tax": True}],
    )


class ConsentChangeView(BaseModel):
    version: int
    purpose: str
    granted: bool
    changed_at: dt.datetime
    changed_by_role: str


class ConsentsView(BaseModel):
    resident_id: uuid.UUID
    version: int
    consents: dict[str, bool]
    changed: list[str] = Field(default_factory=list, description="What this request changed (PUT only)")
    history: list[ConsentChangeView] = Field(default_factory=list, description="Every change, oldest first")


# ---------------------------------------------------------------------------------------------- applications


class ApplicationStatus(StrEnum):
    RECEIVED = "received"
    IN_PROGRESS = "in_progress"
    ACTION_REQUIRED = "action_required"
    COMPLETED = "completed"
    WITHDRAWN = "withdrawn"


Answers = Annotated[
    dict[FactName, Any],
    Field(max_length=MAX_ANSWERS, description="Declared facts by name; see eligibility's fact types"),
]


class ApplicationCreate(Strict):
    resident_id: uuid.UUID
    life_event: LifeEventCode = Field(description="A code from GET /v1/life-events")
    answers: Answers = Field(default_factory=dict)
    channel: Channel = Channel.WEB


class InfoProvide(Strict):
    answers: Answers = Field(default_factory=dict)
    note: Comment | None = Field(default=None, description="A message for the caseworker who asked")


class Withdrawal(Strict):
    reason: Reason | None = None


class FeedbackCreate(Strict):
    score: Annotated[StrictInt, Field(ge=1, le=5)]
    comment: Comment | None = None


class FeedbackView(BaseModel):
    application_id: uuid.UUID
    score: int
    comment: str | None
    created_at: dt.datetime


class MissingInformation(MissingFact):
    answered: bool = Field(description="The resident has since supplied this fact")


class CaseView(BaseModel):
    case_id: uuid.UUID
    status: Literal["open", "in_review", "information_requested", "decided", "closed"]
    office_code: str
    office_name: Localized | None
    due_date: dt.date | None
    automatic: bool | None
    decision: Literal["approved", "denied"] | None
    reason_code: str | None
    decision_reason: Localized | None
    amount: int | None
    decided_at: dt.datetime | None
    closed_reason: str | None
    questions: list[dict[str, Any]] = Field(description="The open request for information, if any")
    escalated: bool
    overdue: bool
    updated_at: dt.datetime


class ReferralView(BaseModel):
    """A partner's service the resident was referred to, with their consent, and where it stands."""

    referral_id: uuid.UUID
    case_id: uuid.UUID
    program_code: str
    partner_id: str
    service_type: ServiceType
    offering_name: Localized
    status: Literal["referred", "accepted", "declined", "completed"]
    decline_reason: DeclineReason | None
    outcome: ReferralOutcome | None
    referred_at: dt.datetime | None
    updated_at: dt.datetime


class NotificationView(BaseModel):
    notification_id: uuid.UUID
    channel: str
    template: str
    status: Literal["sent", "failed"]
    at: dt.datetime


class ProgramView(BaseModel):
    program_code: str
    program_name: Localized | None
    department: Department
    outcome: Outcome | None = Field(description="From the newest eligibility round; null before one arrived")
    automatic: bool | None
    amount: int | None
    amount_period: Literal["once", "monthly", "yearly", "total"] | None
    criteria: list[CriterionResult]
    missing: list[MissingInformation]
    action_required: bool
    settled: bool
    case: CaseView | None
    notifications: list[NotificationView]


class TimelineEntryView(BaseModel):
    at: dt.datetime
    type: str
    summary: Localized
    program_code: str | None
    case_id: uuid.UUID | None
    details: dict[str, Any]


class DeterminationSummary(BaseModel):
    round: int
    trigger: str
    evaluated_at: dt.datetime


class ApplicationSummary(BaseModel):
    id: uuid.UUID
    resident_id: uuid.UUID
    life_event: str
    channel: Channel
    status: ApplicationStatus
    application_date: dt.date
    submitted_at: dt.datetime
    filed_by: str | None
    updated_at: dt.datetime


class HouseholdCaseView(BaseModel):
    """The household case the resident is in (integrated case management): one team plans the support of the whole
    household across departments."""

    id: uuid.UUID
    status: Literal["open", "closed"]
    office_code: str
    office_name: Localized | None
    plan_version: int = Field(description="The shared plan's version (0: none yet)")
    outcome: str | None = Field(description="goals_met, moved_away, declined or referred_on, once closed")
    follow_up_check_on: dt.date | None = Field(description="When the team checks in again after closure")
    opened_at: dt.datetime | None
    closed_at: dt.datetime | None


class ApplicationView(ApplicationSummary):
    answers: dict[str, Any]
    withdrawn_at: dt.datetime | None
    withdrawal_reason: str | None
    determination: DeterminationSummary | None
    programs: list[ProgramView]
    referrals: list[ReferralView] = Field(description="Partners' services the resident was referred to")
    household_case: HouseholdCaseView | None = Field(
        default=None, description="The resident's household case (integrated case management), if any"
    )
    notifications: list[NotificationView]
    feedback: FeedbackView | None
    timeline: list[TimelineEntryView] = Field(description="Everything that happened, oldest first")


class ApplicationPage(BaseModel):
    items: list[ApplicationSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


# ---------------------------------------------------------------------------------------------- access log


class AuthorityView(BaseModel):
    """Under what someone acted for the resident: a representative they named, or what they agreed at a counter."""

    kind: str = Field(description="representative, signed_form or id_checked")
    id: str = Field(description="The representation's or the counter authority's id")
    relation: RepresentativeRelation | None = None
    representative_name: str | None = None
    reference: str | None = Field(default=None, description="The signed form's number, the kind of ID seen")
    office_code: str | None = None


class AccessLogEntryView(BaseModel):
    at: dt.datetime
    actor: str
    actor_role: str
    actor_name: str | None
    offices: list[str]
    action: str
    record_type: str
    record_id: str | None
    purpose: str
    on_behalf_of: uuid.UUID | None = Field(default=None, description="Whom the actor acted for (null: not acting for)")
    authority: AuthorityView | None = None


class AccessLogPage(BaseModel):
    items: list[AccessLogEntryView] = Field(description="Newest first")
    next_cursor: str | None


# ---------------------------------------------------------------------------------------------- proactive offers


class OpportunityStatus(StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"


class OpportunityView(BaseModel):
    id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    program_name: Localized
    department: Department
    amount: int | None = Field(description="KRW, as screening found it (the application's determination decides)")
    amount_period: Literal["once", "monthly", "yearly", "total"] | None
    status: OpportunityStatus
    offered_at: dt.datetime
    expires_on: dt.date = Field(description="The last day it may be accepted (the intake setting offer_valid_days)")
    responded_at: dt.datetime | None
    acted_as: ActedAs | None
    decline_reason: OfferDeclineReason | None
    expired_reason: Literal["deadline", "consent_withdrawn"] | None
    application_id: uuid.UUID | None = Field(description="The application accepting it filed")


class OpportunityAccept(Strict):
    """One confirmation: the application is filed with what is known already; answers are only for anything the
    resident wants to add."""

    answers: Answers = Field(default_factory=dict)
    channel: Channel = Channel.WEB


class OpportunityAccepted(BaseModel):
    opportunity: OpportunityView
    application: ApplicationView


class OpportunityDecline(Strict):
    reason: OfferDeclineReason
    note: Annotated[str, StringConstraints(min_length=1, max_length=500), AfterValidator(_storable)] | None = None


class QuestionStatus(StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    WITHDRAWN = "withdrawn"


class QuestionFact(BaseModel):
    name: str
    type: str
    question: Localized
    choices: list[str] | None = None


class ScreeningQuestionView(BaseModel):
    id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    program_name: Localized
    department: Department
    fact: QuestionFact
    why: Localized
    asked_at: dt.datetime
    status: QuestionStatus
    answer: Any = None
    answered_at: dt.datetime | None
    acted_as: ActedAs | None


class QuestionAnswer(Strict):
    value: Any = Field(description="The answer, of the fact's type (true/false, a number, a date YYYY-MM-DD ...)")


# ---------------------------------------------------------------------------------------------- the catalogue


class ProgramRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str
    name: Localized
    department: Department


class LifeEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str
    name: Localized
    programs: list[ProgramRef]


class FactType(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    type: Literal["integer", "number", "boolean", "string", "date", "list"]
    question: Localized
    asked_of: Literal["resident", "staff"] = "resident"
    enum: list[Any] | None = None
    # The type of a list's items (eligibility reads them as strings when it names none).
    items: str | None = None
    # A regular expression a text value (or a list's text items) must match whole.
    pattern: str | None = None
    # Computed by eligibility from ``inputs``; a declared value is ignored there, so it is refused here.
    derived: bool = False
    inputs: list[str] = []


# ---------------------------------------------------------------------------------------------- rights over one's data


class DataExportStatus(StrEnum):
    PENDING = "pending"  # being gathered from the services
    READY = "ready"  # the document is there to fetch, until ``expires_at``
    FAILED = "failed"  # a service could not be reached after every attempt; ask again


class DataExportRequest(Strict):
    """Ask for everything held about the resident, as one JSON document (개인정보 보호법 제35조, 제35조의2)."""

    format: Literal["json"] = "json"


class ExportPartView(BaseModel):
    status: Literal["waiting", "gathered", "unavailable"]
    error: str | None = None


class DataExportView(BaseModel):
    id: uuid.UUID
    resident_id: uuid.UUID
    status: DataExportStatus
    requested_at: dt.datetime
    attempts: int
    parts: dict[str, ExportPartView] = Field(description="Each service's part: gathered, or why not yet")
    completed_at: dt.datetime | None
    expires_at: dt.datetime | None
    error: str | None = None
    document: dict[str, Any] | None = Field(
        default=None,
        description="When ready: every service's part (records, what was withheld and why, what is kept after an "
        "erasure and until when, each service's retention table)",
    )


class ErasureCreate(Strict):
    """Ask that the resident's data be erased (개인정보 보호법 제36조). What the law makes a service keep is kept,
    pseudonymous, until its period ends; everything else is erased. It cannot be undone."""

    confirm: Literal[True] = Field(description="true: the caller understands the erasure cannot be undone")
    reason: Reason | None = None


class ErasureStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class ServiceErasureView(BaseModel):
    service: str
    status: Literal["pending", "erased"]
    erased_at: dt.datetime | None
    erased: dict[str, int] = Field(description="Record type -> how many were erased")
    kept: list[KeptRecords] = Field(description="What is kept, why, and the day it is destroyed")


class ErasureView(BaseModel):
    id: uuid.UUID
    resident_id: uuid.UUID
    status: ErasureStatus
    requested_at: dt.datetime
    completed_at: dt.datetime | None
    decision_files: list[DecisionFile]
    services: list[ServiceErasureView]
