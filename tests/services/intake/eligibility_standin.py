"""A stand-in for exactly the two eligibility endpoints intake reads (``GET /v1/life-events``, ``GET /v1/fact-types``),
served over real HTTP by the ``eligibility_url`` fixture. It checks the bearer token like the real service would and
counts the calls, so tests can see intake's cache at work. Its data follows the real catalogue's shape and figures."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request

from shared.auth import Role, TokenVerifier
from shared.problems import Unauthorized


def _program(code: str, ko: str, en: str, department: str) -> dict[str, Any]:
    return {"code": code, "name": {"ko": ko, "en": en}, "department": department}


LIFE_EVENTS: list[dict[str, Any]] = [
    {
        "code": "birth",
        "name": {"ko": "출산", "en": "Birth of a child"},
        "programs": [
            _program("child_allowance", "아동수당", "Child allowance", "welfare"),
            _program("parent_benefit", "부모급여", "Parent benefit", "welfare"),
            _program("first_meeting_voucher", "첫만남이용권", "First-meeting voucher", "welfare"),
            _program("birth_registration", "출생신고", "Birth registration", "civil_registry"),
            _program(
                "electricity_discount", "출산가구 전기요금 할인", "Electricity discount for new parents", "housing"
            ),
        ],
    },
    {
        "code": "moving_in",
        "name": {"ko": "전입", "en": "Moving in"},
        "programs": [
            _program("residence_transfer", "전입신고", "Residence transfer", "civil_registry"),
            _program("vehicle_address_update", "자동차 주소 변경", "Vehicle registration address", "tax"),
            _program("health_insurance_address", "건강보험 주소 변경", "Health insurance address", "health"),
        ],
    },
    {
        "code": "job_loss",
        "name": {"ko": "실직", "en": "Losing a job"},
        "programs": [
            _program("job_seeking_benefit", "구직급여", "Job-seeking benefit", "labour"),
            _program("emergency_welfare", "긴급복지 생계지원", "Emergency welfare support", "welfare"),
        ],
    },
    {
        "code": "death_in_family",
        "name": {"ko": "사망", "en": "A death in the family"},
        "programs": [
            _program("safe_inheritance", "안심상속 원스톱", "Safe inheritance one-stop", "civil_registry"),
            _program("funeral_benefit", "장제급여", "Funeral benefit", "welfare"),
        ],
    },
    {
        "code": "turning_65",
        "name": {"ko": "만 65세 도래", "en": "Turning 65"},
        "programs": [_program("basic_pension", "기초연금", "Basic pension", "welfare")],
    },
    {
        "code": "starting_business",
        "name": {"ko": "창업", "en": "Starting a business"},
        "programs": [_program("business_registration", "사업자등록", "Business registration", "tax")],
    },
]


def _fact(
    name: str, type_: str, ko: str, en: str, asked_of: str = "resident", enum: list[Any] | None = None
) -> dict[str, Any]:
    return {"name": name, "type": type_, "question": {"ko": ko, "en": en}, "asked_of": asked_of, "enum": enum}


FACT_TYPES: list[dict[str, Any]] = [
    _fact("child_birth_date", "date", "아이의 생년월일은 언제입니까?", "When was the child born?"),
    _fact("birth_order", "integer", "몇 번째 자녀입니까?", "Which child is this (1 for the first)?"),
    _fact(
        "monthly_household_income", "integer", "가구의 월 소득은 얼마입니까?", "What is the household's monthly income?"
    ),
    _fact("household_size", "integer", "가구원은 몇 명입니까?", "How many people live in the household?"),
    _fact(
        "employment_insurance_months",
        "integer",
        "고용보험 가입 기간은 몇 개월입니까?",
        "How many months were you insured against unemployment?",
    ),
    _fact("has_crisis_event", "boolean", "갑작스러운 위기 상황이 있습니까?", "Did a sudden crisis happen?"),
    _fact("savings_krw", "number", "예금 잔액은 얼마입니까?", "How much do you hold in savings?"),
    _fact(
        "housing_tenure",
        "string",
        "주거 형태는 무엇입니까?",
        "How do you hold your home?",
        enum=["owner", "jeonse", "monthly_rent", "public_rental"],
    ),
    _fact(
        "disability_types",
        "list",
        "장애 유형을 모두 선택하세요.",
        "Which kinds of disability apply?",
        enum=["physical", "visual", "hearing", "intellectual", "mental"],
    ),
    _fact("business_name", "string", "상호는 무엇입니까?", "What is the business called?"),
    _fact(
        "registry_birth_verified",
        "boolean",
        "가족관계등록부에서 출생이 확인되었습니까?",
        "Is the birth confirmed in the family register?",
        asked_of="staff",
    ),
]


def create_standin(keys_verifier: TokenVerifier) -> FastAPI:
    app = FastAPI(title="eligibility stand-in")
    app.state.calls = {"/v1/life-events": 0, "/v1/fact-types": 0}

    async def authorise(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "a bearer token is required")
        try:
            principal = await keys_verifier.verify(token)
        except Unauthorized as exc:
            raise HTTPException(401, exc.detail) from None
        if principal.role is not Role.SERVICE or principal.service != "intake":
            raise HTTPException(403, "intake's service token expected")
        app.state.calls[request.url.path] += 1

    @app.get("/v1/life-events")
    async def life_events(request: Request) -> list[dict[str, Any]]:
        await authorise(request)
        return LIFE_EVENTS

    @app.get("/v1/fact-types")
    async def fact_types(request: Request) -> list[dict[str, Any]]:
        await authorise(request)
        return FACT_TYPES

    return app
