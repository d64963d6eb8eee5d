"""`onestop run` as an operator runs it: their ONESTOP_ settings (environment and .env) honoured, the ones the runner
owns refused with the reason, replicas sharing a port, each service's consumers in a worker of lower priority, and a
process that dies restarted while the others serve."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest
from sqlalchemy import text

from onestop.cli import main
from onestop.registry import BY_NAME, PORTAL, SERVICES
from onestop.runner import Platform, PlatformConfig
from onestop.supervisor import GaveUp, ManagedProcess, RestartPolicy, Supervisor
from shared.db import create_engine
from tests.e2e.support import Api, eventually, settled_round
from tests.portal.support import BIRTH_RESIDENT
from tests.support.postgres import PostgresServer


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ONESTOP_ variable from the machine; the working directory (where .env is read) is the test's own."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("ONESTOP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------------------------------------- settings


def test_the_operators_settings_reach_the_services_and_their_databases(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONESTOP_NOTIFY_SMTP_PORT", "2525")
    monkeypatch.setenv("ONESTOP_INTAKE_DATABASE_URL", "postgresql+asyncpg://onestop@db.example/intake")
    (clean_environment / ".env").write_text(
        "ONESTOP_ROUTING_SLA_CHECK_INTERVAL_SECONDS=7\n"
        "ONESTOP_NOTIFY_SMTP_PORT=25\n"  # the environment wins over .env, as in the services
        "ONESTOP_NOTIFY_WEBHOOK_ALLOWED_NETWORKS='[\"10.1.0.0/16\"]'\n"
    )
    platform = Platform(PlatformConfig(var_dir=clean_environment / "var"))
    assert platform.refusals() == []
    notify, routing, intake = (platform.settings(BY_NAME[n]) for n in ("notify", "routing", "intake"))
    assert notify.smtp_port == 2525
    assert notify.webhook_allowed_networks == ["10.1.0.0/16"]
    assert routing.sla_check_interval_seconds == 7
    # The database the operator named is the one migrated, seeded and served; the others keep the default.
    assert intake.database_url == "postgresql+asyncpg://onestop@db.example/intake"
    assert platform.database_url(BY_NAME["intake"]) == intake.database_url
    assert platform.database_url(BY_NAME["eligibility"]).startswith("sqlite+aiosqlite:///")
    # What a service process is started with.
    env = platform.env_for(BY_NAME["notify"])
    assert env["ONESTOP_NOTIFY_SMTP_PORT"] == "2525"
    assert env["ONESTOP_ROUTING_SLA_CHECK_INTERVAL_SECONDS"] == "7"
    assert env["ONESTOP_NOTIFY_NATS_URL"] == platform.nats_url
    assert platform.env_for(BY_NAME["intake"])["ONESTOP_INTAKE_DATABASE_URL"] == intake.database_url
    # Fewer malloc arenas (less RSS per service) unless the operator chose their own number.
    assert env["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert platform.env_for(BY_NAME["notify"])["MALLOC_ARENA_MAX"] == "4"


def test_a_database_given_in_code_is_the_one_migrated_seeded_and_served(clean_environment: Path) -> None:
    # The benchmark and the tests hand the runner their databases as overrides: migrations, seeding and the service
    # process must all use that one (the benchmark once migrated SQLite and seeded an empty PostgreSQL database).
    url = "postgresql+asyncpg://postgres@127.0.0.1:5999/bench_eligibility"
    platform = Platform(
        PlatformConfig(var_dir=clean_environment / "var", overrides={"eligibility": {"database_url": url}})
    )
    eligibility = BY_NAME["eligibility"]
    assert platform.database_url(eligibility) == url
    assert platform.settings(eligibility).database_url == url
    assert platform.env_for(eligibility)["ONESTOP_ELIGIBILITY_DATABASE_URL"] == url
    assert platform.database_url(BY_NAME["routing"]).startswith("sqlite+aiosqlite:///")


def test_the_portals_settings_are_honoured_and_the_ones_the_runner_owns_refused(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONESTOP_PORTAL_COOKIE_SECURE", "true")
    (clean_environment / ".env").write_text("ONESTOP_PORTAL_SESSION_HOURS=2\n")
    platform = Platform(PlatformConfig(var_dir=clean_environment / "var"))
    assert platform.refusals() == []
    assert platform.warnings() == [], "the portal's settings are settings"
    env = platform._env(PORTAL.env_prefix, platform.portal_settings_values())
    assert env["ONESTOP_PORTAL_COOKIE_SECURE"] == "true"
    assert env["ONESTOP_PORTAL_SESSION_HOURS"] == "2"
    assert env["ONESTOP_PORTAL_INTAKE_URL"] == platform.url("intake")

    monkeypatch.setenv("ONESTOP_PORTAL_PUBLIC_URL", "http://portal.example")
    monkeypatch.setenv("ONESTOP_PORTAL_ROUTING_URL", "http://10.0.0.5:8003")
    refused = Platform(PlatformConfig(var_dir=clean_environment / "var")).refusals()
    assert len(refused) == 2, refused
    assert refused[0].startswith("ONESTOP_PORTAL_PUBLIC_URL is set (in the environment)")
    assert "it assigns the portal's port (http://127.0.0.1:8000)" in refused[0]
    assert "it assigns the services' ports (routing on http://127.0.0.1:8003)" in refused[1]
    # A platform without the portal (a test's) does not own its settings.
    ports = {s.name: s.port for s in SERVICES}
    assert Platform(PlatformConfig(var_dir=clean_environment / "var", ports=ports)).refusals() == []


def test_settings_the_runner_owns_are_refused_naming_the_variable_and_where_it_was_set(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ONESTOP_INTAKE_NATS_URL", "nats://elsewhere:4222")
    (clean_environment / ".env").write_text(
        "ONESTOP_NOTIFY_INTAKE_URL=http://10.0.0.5:8001\nONESTOP_INTAKE_PORT=9001\n"
    )
    code = main(["run", "--var", str(clean_environment / "var")])
    err = capsys.readouterr().err
    assert code == 2
    assert "ONESTOP_INTAKE_NATS_URL is set (in the environment)" in err
    assert "it starts NATS itself" in err
    assert f"ONESTOP_NOTIFY_INTAKE_URL is set (in .env ({Path('.env')}))" in err
    assert "it assigns the services' ports (intake on http://127.0.0.1:8001)" in err
    # Not a setting at all: said so, not passed over in silence.
    assert "warning: ONESTOP_INTAKE_PORT" in err
    assert "not a setting of any service" in err
    assert not (clean_environment / "var").exists(), "nothing was started"


def test_postgres_mode_refuses_a_database_url_of_the_operators(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONESTOP_ROUTING_DATABASE_URL", "postgresql+asyncpg://x@y/routing")
    platform = Platform(PlatformConfig(var_dir=clean_environment / "var", postgres=True))
    [refusal] = platform.refusals()
    assert refusal.startswith("ONESTOP_ROUTING_DATABASE_URL is set (in the environment)")
    assert "--postgres gives each service its own database" in refusal
    monkeypatch.delenv("ONESTOP_ROUTING_DATABASE_URL")
    platform = Platform(PlatformConfig(var_dir=clean_environment / "var", postgres=True, postgres_port=5999))
    assert platform.refusals() == []
    assert platform.database_url(BY_NAME["routing"]) == "postgresql+asyncpg://postgres@127.0.0.1:5999/routing"
    cluster = Platform(PlatformConfig(var_dir=clean_environment / "var", cluster=True))
    assert cluster.nats_url == "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
    assert cluster.settings_values(BY_NAME["intake"])["stream_replicas"] == 3
    single = Platform(PlatformConfig(var_dir=clean_environment))
    assert single.settings_values(BY_NAME["intake"])["stream_replicas"] == 1


def test_a_nats_cluster_is_started_only_once_every_node_knows_its_meta_leader(tmp_path: Path) -> None:
    """A clustered node says JetStream is enabled before it has found a meta leader; a stream created then waited on
    a leader that did not exist yet. ``start_nats`` returns once every node knows it, so an R3 stream is made at once.
    """
    platform = Platform(PlatformConfig.on_free_ports(tmp_path / "var", cluster=True, nats_auth=False, env_file=None))
    (platform.var / "logs").mkdir(parents=True)
    platform.start_nats()
    try:
        for node in platform.nats_nodes:
            url = f"http://127.0.0.1:{node.ports.http}/healthz"
            response = httpx.get(url, params={"js-meta-only": "true"}, timeout=2)
            assert response.status_code == 200, (node.name, response.text)

        async def create_a_replicated_stream() -> int:
            import nats
            from nats.js.api import StreamConfig

            client = await nats.connect(platform.nats_url.split(","))
            try:
                info = await client.jetstream(timeout=5).add_stream(
                    StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3)
                )
                return info.config.num_replicas or 0
            finally:
                await client.close()

        assert asyncio.run(create_a_replicated_stream()) == 3
    finally:
        platform.stop_nats()


# ---------------------------------------------------------------------------------------------- supervision


def _process(tmp_path: Path, name: str, script: str) -> ManagedProcess:
    def spawn(log: IO[bytes] | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT)

    return ManagedProcess(name, spawn, tmp_path / f"{name}.log")


def test_a_crashing_process_is_restarted_with_backoff_and_one_that_keeps_crashing_stops_everything(
    tmp_path: Path,
) -> None:
    steady = _process(tmp_path, "steady", "import time; time.sleep(60)")
    crashing = _process(tmp_path, "crashing", "import sys; print('cannot open the database'); sys.exit(3)")
    reports: list[str] = []
    policy = RestartPolicy(first_delay=0.1, max_delay=1.0, max_crashes=4, window=60)
    supervisor = Supervisor(lambda: [steady, crashing], policy=policy, report=reports.append)
    steady.start()
    crashing.start()
    steady_pid = steady.pid
    try:

        def supervise_for_a_while() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                supervisor.check()
                time.sleep(0.01)

        with pytest.raises(GaveUp) as gave_up:
            supervise_for_a_while()
        message = str(gave_up.value)
        assert message.startswith("crashing keeps crashing: it ended 4 times within 60s, the last time exit code 3")
        assert "cannot open the database" in message, "the end of its log says why"
        assert crashing.restarts == 3
        crash_reports = [r for r in reports if r.startswith("crashing exit code 3")]
        assert [r.split("restarting in ")[1].split("s ")[0] for r in crash_reports] == ["0.1", "0.2", "0.4"]
        assert steady.running, "the others kept running"
        assert steady.pid == steady_pid, "untouched"
        assert not any(r.startswith("steady") for r in reports)
    finally:
        steady.stop()
        crashing.stop()


# ---------------------------------------------------------------------------------------------- the platform


@dataclass
class Replicated:
    platform: Platform
    databases: dict[str, str]  # the operator's, one per service
    directory: Path


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[Replicated]:
    """Two processes per service (and of the portal) on the operator's PostgreSQL databases (given as the README
    says), in a clean environment. Started once for this module's two tests: each crashes processes of its own and
    waits until they serve again."""
    directory = tmp_path_factory.mktemp("replicated")
    databases = {entry.name: postgres_server.create_database() for entry in SERVICES}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for key in list(os.environ):
            if key.upper().startswith("ONESTOP_"):
                monkeypatch.delenv(key)
        monkeypatch.chdir(directory)
        for name, url in databases.items():
            monkeypatch.setenv(f"ONESTOP_{name.upper()}_DATABASE_URL", url)
        platform = Platform(PlatformConfig.on_free_ports(directory / "var", portal=True, replicas=2, ready_timeout=120))
        platform.start()
        try:
            yield Replicated(platform, databases, directory)
        finally:
            platform.stop()


async def _count(url: str, sql: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(text(sql)) or 0)
    finally:
        await engine.dispose()


@pytest.mark.e2e
def test_replicas_on_the_operators_postgresql_serve_through_a_crash(replicated: Replicated) -> None:
    platform, operator_databases = replicated.platform, replicated.databases
    assert sorted(platform.processes) == sorted(f"{name}-{n}" for name in [*BY_NAME, PORTAL.name] for n in (1, 2))
    # Migrated and seeded where the operator said, not into SQLite files under var/.
    assert asyncio.run(_count(operator_databases["eligibility"], "SELECT count(*) FROM programs")) >= 30
    assert asyncio.run(_count(operator_databases["routing"], "SELECT count(*) FROM offices")) >= 10
    assert not list((replicated.directory / "var").glob("*.db"))

    with platform.supervising() as failures:
        killed = platform.crash("routing-1")
        # The other replica answers on the same port while the killed one is down and restarting.
        for _ in range(20):
            assert httpx.get(f"{platform.url('routing')}/readyz", timeout=10).status_code == 200
        deadline = time.monotonic() + 120
        while platform.managed["routing-1"].restarts == 0 or not platform.managed["routing-1"].running:
            assert time.monotonic() < deadline, platform.events
            time.sleep(0.1)
        assert platform.managed["routing-1"].pid != killed
        assert not failures
    events = [e for e in platform.events if e.startswith("routing-1 ")]
    assert events[0].startswith("routing-1 killed by SIGKILL; restarting in 0.5s")
    assert events[1].startswith("routing-1 restarted")
    assert set(platform.exited()) == set(), "everything runs"
    # Each replica is a process of its own with the operator's database; the consumers are shared durables.
    admin = {"Authorization": f"Bearer {platform.issuer.mint('admin') if platform.issuer else ''}"}
    offices = httpx.get(f"{platform.url('routing')}/v1/offices", headers=admin, timeout=10)
    assert offices.status_code == 200
    assert len(offices.json()) >= 10


def _hidden(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


def _startups(platform: Platform, name: str) -> int:
    """How many times this process (not its group: replicas share one socket) has finished starting (its log is
    appended across restarts)."""
    path = platform.log_path(name)
    return path.read_text(errors="replace").count("Application startup complete") if path.exists() else 0


def _wait_restarted(platform: Platform, name: str, killed: int, started_before: int | None = None) -> None:
    deadline = time.monotonic() + 120
    while platform.managed[name].pid == killed or not platform.managed[name].running:
        assert time.monotonic() < deadline, platform.events
        time.sleep(0.1)
    platform.wait_ready(name)
    # The group answers /readyz through any replica: to know this one serves again, read its own log.
    while started_before is not None and _startups(platform, name) <= started_before:
        assert time.monotonic() < deadline, f"{name} did not finish starting again"
        time.sleep(0.1)


@pytest.mark.e2e
def test_a_session_made_on_one_portal_replica_is_good_on_the_others(replicated: Replicated) -> None:
    platform = replicated.platform
    # A new connection per request, so the kernel may hand each to either replica.
    with (
        platform.supervising() as failures,
        httpx.Client(
            base_url=platform.url(PORTAL.name), limits=httpx.Limits(max_keepalive_connections=0), timeout=60
        ) as browser,  # fmt: skip
    ):
        response = browser.get("/signin", params={"next": "/my"})
        while response.status_code in (302, 303):
            response = browser.get(response.headers["location"])
            if response.status_code == 200 and "/idp/authorize" in str(response.url):
                response = browser.post("/idp/authorize", data={**_hidden(response.text), "person": BIRTH_RESIDENT})
        assert response.status_code == 200, response.text[:300]
        assert str(response.url).endswith("/my")
        # Each replica in turn is the only one serving: the session sealed by whichever signed in opens on both.
        for replica in ("portal-1", "portal-2"):
            started = _startups(platform, replica)
            assert started >= 1
            killed = platform.crash(replica)
            for _ in range(5):
                page = browser.get("/my", follow_redirects=False)
                assert page.status_code == 200, f"{replica} down: {page.status_code} {page.headers}"
            # Before the other replica goes down, this one must be serving again (not merely started).
            _wait_restarted(platform, replica, killed, started)
        assert not failures


# ---------------------------------------------------------------------------------------------- workers


def _nice(pid: int) -> int:
    """The nice value of a process's main thread (field 19 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def _group_nice(pid: int) -> int | None:
    """The nice value of the scheduling group the process's session makes (None without autogroup)."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split("nice")[1])
    except OSError:
        return None


def _events_handled(metrics: str) -> dict[str, float]:
    """Events handled by consumer, as a process's /metrics counts them."""
    handled: dict[str, float] = {}
    for consumer, value in re.findall(r'^onestop_events_handled_total\{consumer="([^"]+)",result="handled"\} (\S+)$',
                                      metrics, re.MULTILINE):  # fmt: skip
        handled[consumer] = float(value)
    return handled


@pytest.mark.e2e
def test_with_workers_an_api_process_answers_and_a_worker_of_lower_priority_consumes(
    clean_environment: Path,
) -> None:
    platform = Platform(PlatformConfig.on_free_ports(clean_environment / "var", workers=True, ready_timeout=120))
    platform.start()
    try:
        assert sorted(platform.processes) == sorted([*BY_NAME, *(f"{name}-worker" for name in BY_NAME)])
        autogroups = _group_nice(platform.processes["intake"].pid) is not None
        for name in BY_NAME:
            served, worker = platform.processes[name].pid, platform.processes[f"{name}-worker"].pid
            assert (_nice(served), _nice(worker)) == (0, 10), name
            if autogroups:  # each process is a session of its own: its group is lowered with it
                assert (_group_nice(served), _group_nice(worker)) == (0, 10), name
            assert platform.process_url(f"{name}-worker") != platform.url(name)

        # An application goes through every consumer: determined, routed, the resident told.
        api = Api(platform)
        resident = api.register()
        bundle = next(e for e in api.ok("intake", "GET", "/v1/life-events", resident.auth) if e["code"] == "birth")
        answers = {"child_birth_date": (dt.date.today() - dt.timedelta(days=9)).isoformat(), "birth_order": 2,
                   "newborns": 1, "korean_national": True, "birth_registered": True, "earned_income": 2_200_000,
                   "business_income": 0, "public_pension_income": 0, "employment_status": "employed"}  # fmt: skip
        application = api.apply(resident, "birth", answers)
        view = api.view_when(application, resident.auth, settled_round, timeout=60)
        assert {p["program_code"] for p in view["programs"]} == {p["code"] for p in bundle["programs"]}
        eventually(lambda: api.inbox(resident, application), timeout=60, what="the resident's message")

        # The workers handled those events; the processes that answer requests consumed nothing.
        for name in BY_NAME:
            assert _events_handled(httpx.get(f"{platform.url(name)}/metrics", timeout=10).text) == {}, name
        handled = {
            consumer: count
            for name in BY_NAME
            for consumer, count in _events_handled(
                httpx.get(f"{platform.process_url(f'{name}-worker')}/metrics", timeout=10).text
            ).items()
        }
        for consumer in ("eligibility-events", "routing-cases", "notify-residents", "intake-status-view"):
            assert handled.get(consumer, 0) >= 1, handled

        # A worker that dies is restarted; applications go on through it.
        with platform.supervising() as failures:
            killed = platform.crash("eligibility-worker")
            again = api.apply(resident, "birth", answers)
            api.view_when(again, resident.auth, settled_round, timeout=120)
            assert platform.managed["eligibility-worker"].pid != killed
            assert not failures
    finally:
        platform.stop()
