"""Korean and English everywhere: every message a template or the portal's code uses exists in both languages, no
template holds text of its own, no template carries script or style inline (the CSP forbids both), and every choice
a resident may be asked (the catalogue's enumerations) and every life event has its words in both."""

from __future__ import annotations

import enum
import re
import typing
from pathlib import Path

import jinja2
import yaml

from services.portal.casework import ACTIONS
from services.portal.i18n import LANGUAGES, Messages
from services.portal.people import DemoPeople
from services.portal.rendering import TEMPLATES
from services.portal.settings import PORTAL_DIR
from services.routing.schemas import OfficeDepartment
from shared.events import HouseholdCaseOutcome, NeedDomain, OfferDeclineReason

ROOT = PORTAL_DIR.parent.parent
FACTS = ROOT / "services" / "eligibility" / "catalogue" / "facts.yaml"
LIFE_EVENTS = ROOT / "services" / "eligibility" / "catalogue" / "life_events.yaml"
DEPARTMENTS = ROOT / "services" / "eligibility" / "catalogue" / "departments.yaml"
MESSAGES = Messages.load()
TEMPLATE_FILES = sorted(TEMPLATES.rglob("*.html"))
PYTHON_FILES = sorted(PORTAL_DIR.glob("*.py"))

# t('key') / t("key", …) in templates, page.t("key") in code; and message keys the code names as values
# ("answer.error.integer", "case.error.required" …).
CALLED = re.compile(r"""\bt\(\s*['"]([a-z0-9_.\-]+)['"]""")
KEY_LITERAL = re.compile(r"""['"]((?:answer|case|feedback|error|idp|questions|opportunities)\.[a-z0-9_.\-]+)['"]""")
# Dynamic keys: a literal prefix joined with a value ('outcome.' ~ p.outcome ~ '.label').
PREFIXED = re.compile(r"""t\(\s*['"]([a-z0-9_.\-]+\.)['"]\s*~""")


def department_codes() -> list[str]:
    """Every department an office may serve, integrated case management with them (routing's own type)."""
    codes: list[str] = []
    for part in typing.get_args(OfficeDepartment):
        if isinstance(part, type) and issubclass(part, enum.Enum):
            codes += [str(member.value) for member in part]
        else:
            codes += [str(a) for a in typing.get_args(part)]
    return codes


def used_keys() -> set[str]:
    keys: set[str] = set()
    for path in [*TEMPLATE_FILES, *PYTHON_FILES]:
        text = path.read_text(encoding="utf-8")
        keys |= {k for k in CALLED.findall(text) if not k.endswith(".")}
        if path.suffix == ".py":
            keys |= {k for k in KEY_LITERAL.findall(text) if not k.endswith((".", ".html"))}
    return keys


def test_every_message_has_korean_and_english() -> None:
    for key, entry in MESSAGES.entries.items():
        for language in LANGUAGES:
            assert entry.get(language, "").strip(), f"message {key} has no {language}"
        # The same placeholders in both, so neither language drops a value.
        assert set(re.findall(r"{(\w+)}", entry["ko"])) == set(re.findall(r"{(\w+)}", entry["en"])), key


def test_every_message_used_exists() -> None:
    missing = sorted(k for k in used_keys() if not MESSAGES.has(k))
    assert missing == [], f"used but not in messages.yaml: {missing}"


def test_every_family_of_dynamic_messages_is_complete() -> None:
    prefixes = set()
    for path in TEMPLATE_FILES:
        prefixes |= set(PREFIXED.findall(path.read_text(encoding="utf-8")))
    # Each family a template builds from a value has every value the services can send.
    families = {
        "life_event.": yaml.safe_load(LIFE_EVENTS.read_text(encoding="utf-8"))["life_events"].keys(),
        "department.": department_codes(),
        "application.status.": ["received", "in_progress", "action_required", "completed", "withdrawn"],
        "status.explain.": ["received", "in_progress", "action_required", "completed", "withdrawn"],
        "case_status.": ["open", "assigned", "waiting_on_resident", "decided", "closed"],
        "case.status.": ["open", "in_review", "information_requested", "decided", "closed"],
        "decision.": ["approved", "denied"],
        "criterion.": ["passed", "failed", "unknown"],
        "referral.status.": ["referred", "accepted", "declined", "completed"],
        "sla.": ["breached", "overdue", "soon", "on_time", "done"],
        "priority.": ["1", "2", "3", "4"],
        "role.": ["resident", "caseworker", "supervisor", "admin", "partner", "service", "representative"],
        "feedback.score.": ["1", "2", "3", "4", "5"],
        "case.candidate.": ["responsible", "fallback", "neighbour"],
        "case.asked_of.": ["resident", "staff"],
        "questions.reason.": ["registry", "staff"],
        "queue.sort.": ["urgency", "due", "newest"],
        "period.": ["once", "monthly", "yearly", "total"],
        "opportunities.reason.": [r.value for r in OfferDeclineReason],
        "case.done.": list(ACTIONS),
        "offices.": ["caseworker_hours_week", "active_case_ceiling"],
        "household.status.": ["open", "active", "closed"],
        "household.trigger.": ["automatic", "caseworker"],
        "household.outcome.": [o.value for o in HouseholdCaseOutcome],
        "household.domain.": [d.value for d in NeedDomain],
        "household.service.": ["program", "referral"],
        "household.follow_up.": ["done", "missed", "overdue", "due"],
    }
    for prefix, values in families.items():
        for value in values:
            assert MESSAGES.has(f"{prefix}{value}"), f"{prefix}{value}"
    for outcome in ("eligible", "ineligible", "needs_information", "needs_review", "pending"):
        assert MESSAGES.has(f"outcome.{outcome}.label")
        assert MESSAGES.has(f"outcome.{outcome}.explain")
    # Every family a template builds is one of those above, or checked where its values are known (enum labels
    # against the catalogue below; the others are keyed by the portal's own constants).
    known = set(families) | {
        "outcome.",
        "enum.",
        "case.done.",
        "case.action.",
        "household.action.",
        "dead.replay.",
        "offices.",
        "idp.group.",
    }
    assert prefixes <= known | {p for p in prefixes if any(p.startswith(k) for k in known)}, prefixes - known


def test_departments_and_life_events_are_named_as_the_catalogue_names_them() -> None:
    """One name per department and life event wherever a resident reads it: the catalogue's (eligibility owns the
    programs and their departments), here as in notify's messages."""
    catalogue = {
        "department": yaml.safe_load(DEPARTMENTS.read_text(encoding="utf-8"))["departments"],
        "life_event": yaml.safe_load(LIFE_EVENTS.read_text(encoding="utf-8"))["life_events"],
    }
    for family, entries in catalogue.items():
        for code, entry in entries.items():
            assert MESSAGES.text(f"{family}.{code}", "ko") == entry["name"]["ko"], f"{family}.{code}"
            assert MESSAGES.text(f"{family}.{code}", "en").lower() == entry["name"]["en"].lower(), f"{family}.{code}"


def test_every_choice_a_resident_may_be_asked_has_words_in_both_languages() -> None:
    facts = yaml.safe_load(FACTS.read_text(encoding="utf-8"))["facts"]
    for name, fact in facts.items():
        for value in fact.get("enum") or []:
            assert MESSAGES.has(f"enum.{name}.{value}"), f"enum.{name}.{value}"


def test_the_demo_people_are_described_in_both_languages() -> None:
    people = DemoPeople.load(PORTAL_DIR / "demo_people.yaml")
    for person in people.people:
        for language in LANGUAGES:
            assert person.about.get(language), (person.key, language)
    residents = {p.life_event for p in people.residents}
    assert residents == set(yaml.safe_load(LIFE_EVENTS.read_text(encoding="utf-8"))["life_events"])


# ---------------------------------------------------------------------------------------------- the templates

TEXT_ATTRIBUTES = re.compile(r"""\b(aria-label|title|alt|placeholder|label)="([^"]*)\"""")
HUMAN_TEXT = re.compile(r"[A-Za-z\uac00-\ud7a3]{2,}")


def _template_text(path: Path) -> list[str]:
    """The template's literal HTML (what is not a Jinja expression, statement or comment), tags stripped."""
    env = jinja2.Environment(autoescape=True)
    source = path.read_text(encoding="utf-8")
    data = "".join(value for _, kind, value in env.lex(source) if kind == "data")
    return data.splitlines()


def test_no_template_holds_text_of_its_own() -> None:
    offenders = []
    for path in TEMPLATE_FILES:
        for line in _template_text(path):
            for name, value in TEXT_ATTRIBUTES.findall(line):
                if HUMAN_TEXT.search(value):
                    offenders.append((path.name, f'{name}="{value}"'))
            without_tags = re.sub(r"<[^>]*>", " ", line)
            # Attributes written outside a tag (a macro adding some to its caller's) are not text either.
            without_tags = re.sub(r"""\b[a-z-]+=(["'])[^"']*\1""", " ", without_tags)
            without_tags = re.sub(r"&[a-z]+;|&#\d+;", " ", without_tags)
            if HUMAN_TEXT.search(without_tags):
                offenders.append((path.name, without_tags.strip()))
    assert offenders == [], offenders


def test_templates_carry_no_inline_script_or_style() -> None:
    for path in TEMPLATE_FILES:
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", source), f"{path.name}: inline <script>"
        assert not re.search(r"\son[a-z]+=", source), f"{path.name}: an inline event handler"
        assert not re.search(r"\sstyle=", source), f"{path.name}: an inline style attribute"
        assert "<style" not in source, f"{path.name}: a <style> element"
        assert "hx-on" not in source, f"{path.name}: htmx's inline handlers need eval"
