"""The documented reason codes of a decision (``GET /v1/reason-codes``), each valid for one decision only."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import Decision, Localized


@dataclass(frozen=True)
class ReasonCode:
    code: str
    decision: Decision
    label: Localized


AUTOMATIC_GRANT = "automatic_grant"

REASON_CODES: dict[str, ReasonCode] = {
    r.code: r
    for r in (
        ReasonCode(
            AUTOMATIC_GRANT,
            Decision.APPROVED,
            Localized(ko="자격 요건 자동 확인", en="Granted automatically: every criterion was met"),
        ),
        ReasonCode(
            "criteria_met",
            Decision.APPROVED,
            Localized(ko="자격 요건 충족 (담당자 확인)", en="Criteria met, confirmed by a caseworker"),
        ),
        ReasonCode(
            "criteria_met_after_information",
            Decision.APPROVED,
            Localized(ko="보완 자료 확인 후 요건 충족", en="Criteria met once the requested information arrived"),
        ),
        ReasonCode(
            "discretionary_approval",
            Decision.APPROVED,
            Localized(ko="담당자 재량 승인 (위기 상황)", en="Approved at the caseworker's discretion (crisis)"),
        ),
        ReasonCode(
            "income_above_threshold",
            Decision.DENIED,
            Localized(ko="소득 기준 초과", en="Income above the program's threshold"),
        ),
        ReasonCode(
            "assets_above_threshold",
            Decision.DENIED,
            Localized(ko="재산 기준 초과", en="Assets above the program's threshold"),
        ),
        ReasonCode(
            "age_requirement_not_met",
            Decision.DENIED,
            Localized(ko="연령 요건 미충족", en="The age requirement is not met"),
        ),
        ReasonCode(
            "residence_requirement_not_met",
            Decision.DENIED,
            Localized(ko="거주 요건 미충족", en="The residence requirement is not met"),
        ),
        ReasonCode(
            "duplicate_benefit",
            Decision.DENIED,
            Localized(ko="중복 수급", en="Already receiving this or an equivalent benefit"),
        ),
        ReasonCode(
            "information_not_provided",
            Decision.DENIED,
            Localized(ko="요청 자료 미제출", en="The requested information was not provided"),
        ),
        ReasonCode(
            "other_criteria_not_met",
            Decision.DENIED,
            Localized(ko="기타 자격 요건 미충족", en="Another criterion of the program is not met"),
        ),
    )
}


def staff_reason_codes() -> list[ReasonCode]:
    """The reasons a caseworker may give (an automatic grant is the eligibility service's alone)."""
    return [r for r in REASON_CODES.values() if r.code != AUTOMATIC_GRANT]
