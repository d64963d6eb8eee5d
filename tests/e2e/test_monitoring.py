"""The alert rules (deploy/prometheus/) and the Grafana dashboard (deploy/grafana/) are valid, and every metric they
name is one the running services (or the portal) export on /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from onestop.registry import PORTAL, ROOT, SERVICES
from onestop.runner import Platform
from services.portal.main import create_app
from services.portal.settings import PortalSettings

pytestmark = pytest.mark.e2e

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
SCRAPE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "onestop-dashboard.json"
# What Prometheus itself provides for every scrape target.
BUILT_IN = {"up"}
# PromQL words that look like metric names: functions, aggregations, keywords.
_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "histogram_quantile", "topk", "bottomk", "by", "without",
    "on", "ignoring", "and", "or", "unless", "group_left", "group_right", "le", "offset", "bool",
}  # fmt: skip
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def expressions() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    out = {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"]}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            out[f"panel {panel['title']} {target['refId']}"] = target["expr"]
    return out


def metric_names(expr: str) -> set[str]:
    """Identifiers in an expression that are metric names (not labels, functions, durations or strings)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_labels)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_groupings)
    return {m for m in _IDENT.findall(without_ranges) if m not in _WORDS and not m.isdigit()}


def names_in(text: str) -> set[str]:
    """Every sample name a /metrics page can carry (a counter family X: X_total, X_created; a histogram: X_bucket,
    X_sum, X_count; ...), whether or not a labelled sample was recorded yet."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}  # fmt: skip
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def exported(platform: Platform) -> set[str]:
    return set().union(*(names_in(httpx.get(f"{platform.url(e.name)}/metrics", timeout=10).text) for e in SERVICES))


async def test_the_portal_counts_and_times_its_pages_as_the_services_do(tmp_path: Path) -> None:
    """The portal (no database, no consumers) exports the request metrics the availability rules and the request
    panels read, by route template."""
    app = create_app(PortalSettings(keys_dir=tmp_path / "keys", log_json=False))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portal") as client:
            assert (await client.get("/")).status_code == 200
            assert (await client.get("/language/en", params={"next": "/"})).status_code == 303
            text = (await client.get("/metrics")).text
    samples = {
        (s.name, s.labels.get("route"), s.labels.get("status"))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert ("onestop_http_requests_total", "/", "200") in samples
    assert ("onestop_http_requests_total", "/language/{language}", "303") in samples, "the template, not the path"
    names = names_in(text)
    for name, expr in expressions().items():
        if "job" in expr and name.startswith(("OneStopHigh", "OneStopSlow", "panel Request", "panel 5xx")):
            assert metric_names(expr) <= names | BUILT_IN, name


def test_every_metric_the_rules_and_the_dashboard_name_is_exported(platform: Platform) -> None:
    available = exported(platform) | BUILT_IN
    missing = {name: sorted(metric_names(expr) - available) for name, expr in expressions().items()}
    assert not {k: v for k, v in missing.items() if v}, missing
    # What the issue asks to watch is there.
    named = set().union(*(metric_names(e) for e in expressions().values()))
    for watched in ("onestop_http_requests_total", "onestop_http_request_duration_seconds_bucket",
                    "onestop_consumer_pending", "onestop_outbox_backlog", "onestop_dead_letters_total",
                    "onestop_routing_sla_breaches_total", "onestop_eligibility_screenings_total"):  # fmt: skip
        assert watched in named, watched


def test_every_alert_says_how_bad_and_what_happened() -> None:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
    scrape = yaml.safe_load(SCRAPE.read_text())
    assert sorted(job["job_name"] for job in scrape["scrape_configs"]) == sorted(
        [*(s.name for s in SERVICES), PORTAL.name]
    )
    down = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == "OneStopServiceDown")
    assert all(job["job_name"] in down["expr"] for job in scrape["scrape_configs"]), "every job is watched"
    assert scrape["rule_files"] == [RULES.name]


def _promtool() -> str | None:
    return shutil.which("promtool")


def test_rules_and_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """With Debian's promtool (the prometheus package) when it is installed: `promtool check rules`, and every
    dashboard query checked as a recording rule. Without it, the structure of each expression is checked here."""
    queries = {
        "groups": [
            {"name": "dashboard", "rules": [
                {"record": f"dashboard:query:{n}", "expr": expr} for n, expr in enumerate(expressions().values())
            ]}
        ]
    }  # fmt: skip
    dashboard_rules = tmp_path / "dashboard.yml"
    dashboard_rules.write_text(yaml.safe_dump(queries))
    promtool = _promtool()
    if promtool is not None:
        for path in (RULES, dashboard_rules):
            done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
            assert done.returncode == 0, done.stdout + done.stderr
        done = subprocess.run([promtool, "check", "config", str(SCRAPE)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return
    for name, expr in expressions().items():  # pragma: no cover - only where promtool is missing
        _structurally_sound(name, expr)


def _structurally_sound(name: str, expr: str) -> None:
    depth: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            depth.append(char)
        elif char in pairs:
            assert depth, f"{name}: unbalanced {char}"
            assert depth.pop() == pairs[char], f"{name}: unbalanced {char}"
    assert not depth, f"{name}: unclosed {depth}"
    assert metric_names(expr), f"{name}: names no metric"


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"] == "OneStop"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
