"""Start, supervise and stop the whole platform as separate processes: NATS (one server, or a 3-node JetStream
cluster), optionally a local PostgreSQL, every service (one process each, or several replicas) and the portal.

``onestop run`` (and so ``make run``) uses this, and so do the end-to-end and fault suites, so they cannot drift
apart.

- **Settings**: what the operator set (``ONESTOP_<SERVICE>_*`` in the environment or ``.env``) is honoured; what the
  runner must own (the NATS it starts, the ports it assigns, the embedded issuer, ...) is refused with the reason
  (:meth:`Platform.refusals`), never silently overridden.
- **Replicas**: the runner binds each service's port itself and hands the listening socket to every replica
  (``onestop/serve.py``): the kernel spreads connections over the replicas, and while a replica restarts, connections
  wait in the socket's backlog instead of being refused. Replicas share the service's database; the outbox relay
  takes a lock so one relays at a time (shared/outbox.py), consumers are durable pull consumers the replicas share.
- **Supervision**: a process that dies is restarted with backoff (onestop/supervisor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from onestop.environment import OperatorEnvironment, read_operator_environment
from onestop.natsauth import (
    OPERATOR_USER,
    PasswordStore,
    load_partners,
    partner_user_name,
    platform_users,
    render_authorization,
)
from onestop.natsconf import cluster_node_config, nats_server_binary, single_node_config
from onestop.postgres import LocalPostgres
from onestop.registry import BY_NAME, PORTAL, ROOT, SERVICES, PortalEntry, ServiceEntry
from onestop.supervisor import ManagedProcess, RestartPolicy, Supervisor, describe_exit, terminate
from services.portal.people import DemoPeople, register_residents
from services.portal.session import session_secret
from services.portal.settings import PortalSettings
from shared.auth import Role, TokenIssuer, ensure_keypair
from shared.migrations import upgrade


class PlatformError(RuntimeError):
    pass


@dataclass(frozen=True)
class NatsNodePorts:
    client: int
    cluster: int | None = None
    http: int | None = None


CLUSTER_SIZE = 3


@dataclass
class PlatformConfig:
    var_dir: Path
    host: str = "127.0.0.1"
    nats_port: int = 4222
    nats_http_port: int | None = 8222
    # The portal runs when it has a port here (``onestop run`` gives it 8000; a test leaves it out unless it needs it).
    ports: dict[str, int] = field(
        default_factory=lambda: {**{s.name: s.port for s in SERVICES}, PORTAL.name: PORTAL.port}
    )
    bus_prefix: str = "onestop"
    seed: bool = True
    # Service logs go to var/logs/<process>.log unless they should share the console.
    console_logs: bool = False
    # Extra settings per service (field name -> value), e.g. shorter timers in tests. The runner's own, so they
    # win over the operator's.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    nats_config_extra: str = ""
    ready_timeout: float = 60.0
    # Per-service and per-partner NATS users with subject permissions (passwords under <var>/nats/passwords).
    nats_auth: bool = True
    partners_file: Path | None = ROOT / "services" / "notify" / "partners.yaml"
    # A 3-node JetStream cluster with replicated (R3) streams instead of one server. Node n listens on
    # nats_port + n - 1 (monitoring nats_http_port + n - 1, routes 6222 + n - 1) unless cluster_ports says otherwise.
    cluster: bool = False
    cluster_ports: list[NatsNodePorts] | None = None
    # JetStream's fsync policy (README, "Durability", measured by bench/durability.py): fsync before each
    # acknowledgement, on one node and in a cluster; None is the server's default (every two minutes).
    sync_interval: str | None = "always"
    # A local PostgreSQL (one database per service) instead of SQLite files.
    postgres: bool = False
    postgres_port: int = 5433
    postgres_dir: Path | None = None  # default <var>/postgres (the postgres user must be able to reach it as root)
    # Processes per service.
    replicas: int = 1
    # Each service split in two (shared.settings.process_role): its api process(es) answer requests and run no
    # consumers; a worker ("intake-worker") runs them, on a port of its own, with its CPU priority lowered by
    # worker_nice, so that when the CPUs are short requests go first (README, "Performance").
    workers: bool = False
    worker_nice: int = 10
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    # Where the operator's settings file is (the services read the same file).
    env_file: Path | None = Path(".env")

    @classmethod
    def on_free_ports(cls, var_dir: Path, *, portal: bool = False, **kwargs: Any) -> PlatformConfig:
        """Every port picked free (tests, benchmarks): services (and the portal, if it should run), NATS (and the
        cluster's), PostgreSQL."""
        ports = {s.name: unused_port() for s in SERVICES}
        if portal:
            ports[PORTAL.name] = unused_port()
        config = cls(var_dir=var_dir, nats_port=unused_port(), nats_http_port=unused_port(), ports=ports,
                     postgres_port=unused_port(), **kwargs)  # fmt: skip
        if config.cluster and config.cluster_ports is None:
            config.cluster_ports = [
                NatsNodePorts(config.nats_port if n == 0 else unused_port(), unused_port(), unused_port())
                for n in range(CLUSTER_SIZE)
            ]
            config.nats_http_port = config.cluster_ports[0].http
        return config


@dataclass(frozen=True)
class NatsNode:
    name: str
    ports: NatsNodePorts

    def url(self, host: str) -> str:
        return f"nats://{host}:{self.ports.client}"


class Platform:
    def __init__(self, config: PlatformConfig) -> None:
        if config.replicas < 1:
            raise PlatformError("--replicas must be at least 1")
        self.config = config
        self.var = config.var_dir.resolve()
        self.issuer: TokenIssuer | None = None
        self.operator: OperatorEnvironment = read_operator_environment(config.env_file)
        self.nats_nodes = self._nats_nodes()
        self.postgres: LocalPostgres | None = None
        if config.postgres:
            self.postgres = LocalPostgres(config.postgres_dir or self.var / "postgres", port=config.postgres_port,
                                          host=config.host)  # fmt: skip
        # Every process we started and keep running, by name ("nats", "nats-2", "postgres", "intake", "intake-2").
        self.managed: dict[str, ManagedProcess] = {}
        self.sockets: dict[str, socket.socket] = {}
        self.lock = threading.RLock()
        self.events: list[str] = []  # what the supervisor did, in order (also printed by `onestop run`)
        self.supervisor = Supervisor(
            lambda: self.managed.values(), policy=config.restart, report=self._report, lock=self.lock
        )

    # ------------------------------------------------------------------------------------------ addresses

    def _nats_nodes(self) -> list[NatsNode]:
        c = self.config
        if not c.cluster:
            return [NatsNode("nats", NatsNodePorts(c.nats_port, None, c.nats_http_port))]
        ports = c.cluster_ports or [
            NatsNodePorts(c.nats_port + n, 6222 + n, c.nats_http_port + n if c.nats_http_port else None)
            for n in range(CLUSTER_SIZE)
        ]
        return [NatsNode(f"nats-{n + 1}", p) for n, p in enumerate(ports)]

    @property
    def nats_url(self) -> str:
        """The NATS URL the services get: the client fails over between a cluster's nodes."""
        return ",".join(node.url(self.config.host) for node in self.nats_nodes)

    @property
    def stream_replicas(self) -> int:
        return CLUSTER_SIZE if self.config.cluster else 1

    def url(self, service: str) -> str:
        return f"http://{self.config.host}:{self.config.ports[service]}"

    @property
    def keys_dir(self) -> Path:
        return self.var / "keys"

    def replica_names(self, service: str) -> list[str]:
        if self.config.replicas == 1:
            return [service]
        return [f"{service}-{n}" for n in range(1, self.config.replicas + 1)]

    def worker_names(self, group: str) -> list[str]:
        """The service's worker when the platform runs workers (none for the portal)."""
        return [f"{group}-worker"] if self.config.workers and group in BY_NAME else []

    def process_url(self, name: str) -> str:
        """Where one process answers: a worker on its own port, a replica on its service's."""
        group = self._group_of(name)
        if name in self.worker_names(group):
            port = self.sockets[name].getsockname()[1]
            return f"http://{self.config.host}:{port}"
        return self.url(group)

    def database_url(self, entry: ServiceEntry) -> str:
        """Where a service keeps its data: the caller's override (tests, benchmarks), the operator's URL if they gave
        one, else the runner's default. Migrations, seeding and the service itself all use this one answer."""
        overridden = self.config.overrides.get(entry.name, {}).get("database_url")
        if overridden is not None:
            return str(overridden)
        given = self.operator.for_service(entry.name).get("database_url")
        if given is not None and self.postgres is None:
            return given.value
        if self.postgres is not None:
            return self.postgres.url(entry.name)
        return f"sqlite+aiosqlite:///{self.var / f'{entry.name}.db'}"

    # ------------------------------------------------------------------------------------------ settings

    def owned_reason(self, name: str) -> str | None:
        """Why the runner must set this setting itself (None: the operator's value is honoured)."""
        auth = "it gives each service its own NATS user (passwords under <var>/nats/passwords)"
        issuer = "it mints each service's token from its embedded issuer"
        reasons = {
            "nats_url": f"it starts NATS itself and points every service at {self.nats_url}",
            "nats_user": auth if self.config.nats_auth else None,
            "nats_password": auth if self.config.nats_auth else None,
            "stream_replicas": f"the stream has {self.stream_replicas} replica(s) on the NATS it starts "
            "(3 with --cluster)",
            "bus_prefix": f"its NATS users may use the subjects under '{self.config.bus_prefix}' only",
            "jwt_public_key_file": f"the services trust its embedded issuer ({self.keys_dir / 'issuer.pub.pem'})",
            "service_token": issuer,
            "service_token_file": issuer,
            "database_url": "--postgres gives each service its own database in the local PostgreSQL"
            if self.postgres is not None
            else None,
            **{f"{s.name}_url": f"it assigns the services' ports ({s.name} on {self.url(s.name)})" for s in SERVICES},
        }
        return reasons.get(name)

    def portal_owned_reason(self, name: str) -> str | None:
        """Why the runner must set this portal setting itself (None: the operator's value is honoured)."""
        if not self.runs_portal:
            return None
        reasons = {
            "public_url": f"it assigns the portal's port ({self.url(PORTAL.name)})",
            "keys_dir": f"the embedded provider signs with the runner's issuer keys ({self.keys_dir})",
            **{f"{s.name}_url": f"it assigns the services' ports ({s.name} on {self.url(s.name)})" for s in SERVICES},
        }
        return reasons.get(name)

    def refusals(self) -> list[str]:
        """The operator's settings this runner must own, each with why and what to do instead."""
        out = []
        entries: list[ServiceEntry | PortalEntry] = [*SERVICES, PORTAL]
        for entry in entries:
            owned = self.portal_owned_reason if entry.name == PORTAL.name else self.owned_reason
            for name, setting in self.operator.for_service(entry.name).items():
                reason = owned(name)
                if reason:
                    out.append(
                        f"{setting.variable} is set (in {setting.origin}), but `onestop run` sets it itself: {reason}. "
                        "Unset it, or run the services yourself (README, Production)."
                    )
        return out

    def warnings(self) -> list[str]:
        return [
            f"{variable} (in {origin}) is not a setting of any service and has no effect; "
            "each service's settings.py lists its settings"
            for variable, origin in self.operator.unknown
        ]

    @property
    def nats_passwords(self) -> PasswordStore:
        return PasswordStore(self.var / "nats" / "passwords")

    def nats_authorization(self) -> str:
        """The nats-server ``authorization`` block: a user per service and per partner, and the operator."""
        partners = load_partners(self.config.partners_file) if self.config.partners_file else []
        users = platform_users(
            prefix=self.config.bus_prefix,
            services=[s.name for s in SERVICES],
            partners=partners,
            passwords=self.nats_passwords,
        )
        return render_authorization(users)

    def nats_credentials(self, user: str = OPERATOR_USER) -> dict[str, str]:
        """``nats.connect`` keyword arguments for a NATS user (none when authorization is off)."""
        if not self.config.nats_auth:
            return {}
        return {"user": user, "password": self.nats_passwords.get(user)}

    def partner_access(self) -> list[tuple[str, str, Path, str]]:
        """(partner id, NATS user, password file, subjects it may subscribe to) for each partner."""
        if not self.config.nats_auth or not self.config.partners_file:
            return []
        out = []
        for partner in load_partners(self.config.partners_file):
            user = partner_user_name(partner.id)
            self.nats_passwords.get(user)
            subjects = f"{self.config.bus_prefix}.partner.{partner.id}.>"
            out.append((partner.id, user, self.nats_passwords.path(user), subjects))
        return out

    def settings_values(self, entry: ServiceEntry) -> dict[str, Any]:
        """The settings a service gets from the runner; the same values feed its process and our migrate/seed.
        What the operator set and the runner does not own is not here: the service reads it from the environment
        and ``.env`` as it would anywhere (the database URL is, since the runner's migrate and seed need it)."""
        fields = entry.settings_class().model_fields
        operator = self.operator.for_service(entry.name)
        values: dict[str, Any] = {
            "database_url": self.database_url(entry),
            "nats_url": self.nats_url,
            "bus_prefix": self.config.bus_prefix,
            "stream_replicas": self.stream_replicas,
            "jwt_public_key_file": str(self.keys_dir / "issuer.pub.pem"),
        }
        if "data_dir" not in operator:
            values["data_dir"] = str(self.var / entry.name)
        for other in SERVICES:
            values[f"{other.name}_url"] = self.url(other.name)
        if self.config.nats_auth:
            values["nats_user"] = entry.name
            values["nats_password"] = self.nats_passwords.get(entry.name)
        if self.runs_portal:
            # The link in every message to a resident opens the application's page in the portal.
            values["app_base_url"] = self.url(PORTAL.name)
        if self.issuer is not None:
            values["service_token"] = self.issuer.mint(Role.SERVICE, service=entry.name, ttl_seconds=365 * 24 * 3600)
        values.update(self.config.overrides.get(entry.name, {}))
        return {k: v for k, v in values.items() if k in fields}

    def settings(self, entry: ServiceEntry) -> Any:
        """The service's settings as its process sees them (the operator's, then the runner's)."""
        return entry.settings(_env_file=self.config.env_file, **self.settings_values(entry))

    def env_for(self, entry: ServiceEntry, process: str | None = None) -> dict[str, str]:
        """The environment one of the service's processes starts with (its first, unless named)."""
        return self._env(entry.env_prefix, self.process_settings(entry, process or entry.name))

    def process_settings(self, entry: ServiceEntry, process: str) -> dict[str, Any]:
        """The service's settings with the part one of its processes plays: the same for every process unless the
        platform runs workers."""
        values = self.settings_values(entry)
        if self.config.workers:
            if process in self.worker_names(entry.name):
                values |= {"process_role": "worker", "process_nice": self.config.worker_nice}
            else:
                values |= {"process_role": "api"}
        return values

    def _env(self, prefix: str, values: dict[str, Any]) -> dict[str, str]:
        # The operator's ONESTOP_ variables, the .env file's included, go through; the runner's own come on top
        # (refusals() made sure the two never name the same setting).
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ONESTOP_")}
        env.update(self.operator.variables)
        for key, value in values.items():
            env[prefix + key.upper()] = _env_value(value)
        env["PYTHONUNBUFFERED"] = "1"
        # glibc gives each thread that allocates its own arena (the database driver's threads, Polars' pool), and
        # each keeps freed memory. Under bench/api.py's load intake, routing and notify peaked at 135-144 MB with two
        # arenas against 149-150 MB without (two runs against one), the throughput the same. An operator's value wins.
        env.setdefault("MALLOC_ARENA_MAX", "2")
        return env

    # ------------------------------------------------------------------------------------------ the portal

    @property
    def runs_portal(self) -> bool:
        return PORTAL.name in self.config.ports

    def portal_settings(self) -> PortalSettings:
        return PortalSettings(**self.portal_settings_values())

    def portal_settings_values(self) -> dict[str, Any]:
        """The portal's settings: where the services are, where people reach it, and the embedded issuer's keys (its
        OIDC provider signs with them)."""
        values: dict[str, Any] = {
            "public_url": self.url(PORTAL.name),
            "keys_dir": str(self.keys_dir),
            **{f"{s.name}_url": self.url(s.name) for s in SERVICES},
        }
        values.update(self.config.overrides.get(PORTAL.name, {}))
        return values

    def register_demo_people(self) -> str:
        """The demo residents the embedded provider lets one sign in as, registered with intake (once)."""
        assert self.issuer is not None
        people = DemoPeople.load(self.portal_settings().demo_people_file)
        return register_residents(people, self.url("intake"), self.issuer)

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        refused = self.refusals()
        if refused:
            raise PlatformError("\n".join(refused))
        self.var.mkdir(parents=True, exist_ok=True)
        (self.var / "logs").mkdir(exist_ok=True)
        ensure_keypair(self.keys_dir)
        self.issuer = TokenIssuer.from_directory(self.keys_dir)
        wanted = [n.ports.client for n in self.nats_nodes]
        wanted += [n.ports.cluster for n in self.nats_nodes if n.ports.cluster]
        if self.postgres is not None:
            wanted.append(self.postgres.port)
        busy = [p for p in wanted if not port_is_free(self.config.host, p)]
        if busy:
            raise PlatformError(f"port(s) {', '.join(map(str, busy))} already in use: is OneStop already running?")
        try:
            self.bind_sockets()
            if self.postgres is not None:
                self.start_postgres()
            self.start_nats()
            self.write_run_file()
            self.rewind_consumers()
            self.migrate()
            if self.config.seed:
                self.seed()
            for entry in SERVICES:
                self.start_service(entry.name, wait=False)
            for entry in SERVICES:
                self.wait_ready(entry.name)
            if self.runs_portal:
                if self.config.seed:
                    self.register_demo_people()
                # Made here, once: replicas starting together would each make their own and not open each other's
                # session cookies.
                session_secret(self.portal_settings())
                self.start_service(PORTAL.name)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        # The portal, then the services, so they can drain their acks and publishes into a NATS that is still there.
        with self.lock:
            for group in reversed(self.groups):
                self.stop_service(group)
            self.stop_nats()
            self.stop_postgres()
            self.run_file.unlink(missing_ok=True)
            for sock in self.sockets.values():
                sock.close()
            self.sockets.clear()

    def supervise(self) -> None:
        """One look at every process: restart what died (with backoff). Raises GaveUp when one keeps crashing."""
        self.supervisor.check()

    @contextlib.contextmanager
    def supervising(self, interval: float = 0.2) -> Iterator[list[BaseException]]:
        """Supervise from a thread while the block runs (what `onestop run` does in its main loop); the list
        receives the GaveUp that ended supervision, if any."""
        failures: list[BaseException] = []
        done = threading.Event()

        def loop() -> None:
            while not done.wait(interval):
                try:
                    self.supervise()
                except BaseException as exc:
                    failures.append(exc)
                    return

        thread = threading.Thread(target=loop, name="onestop-supervisor", daemon=True)
        thread.start()
        try:
            yield failures
        finally:
            done.set()
            thread.join()

    def _report(self, line: str) -> None:
        self.events.append(line)
        print(f"onestop run: {line}", file=sys.stderr, flush=True)

    def _manage(self, name: str, spawn: Callable[[IO[bytes] | None], subprocess.Popen[bytes]],
                stop_signal: int = signal.SIGTERM) -> ManagedProcess:  # fmt: skip
        log_path = None if self.config.console_logs else self.log_path(name)
        process = ManagedProcess(name, spawn, log_path, stop_signal=stop_signal)
        with self.lock:
            self.managed[name] = process
            process.start()
        return process

    def _unmanage(self, name: str, sig: int | None = None) -> None:
        with self.lock:
            process = self.managed.pop(name, None)
        if process is not None:
            process.stop(sig)

    # ------------------------------------------------------------------------------------------ PostgreSQL

    def start_postgres(self) -> None:
        assert self.postgres is not None
        pg = self.postgres
        self._manage("postgres", lambda log: pg.spawn(log), stop_signal=signal.SIGINT)
        pg.wait_ready()
        for entry in SERVICES:
            pg.ensure_database(entry.name)

    def stop_postgres(self) -> None:
        self._unmanage("postgres")

    # ------------------------------------------------------------------------------------------ NATS

    def nats_config(self, node: NatsNode) -> str:
        extra = self.config.nats_config_extra + (self.nats_authorization() if self.config.nats_auth else "")
        if not self.config.cluster:
            return single_node_config(
                store_dir=self.var / "nats" / "jetstream", host=self.config.host, port=node.ports.client,
                http_port=node.ports.http, sync_interval=self.config.sync_interval, extra=extra,
            )  # fmt: skip
        assert node.ports.cluster is not None
        return cluster_node_config(
            server_name=node.name, store_dir=self.var / "nats" / "cluster" / node.name, host=self.config.host,
            port=node.ports.client, http_port=node.ports.http, cluster_port=node.ports.cluster,
            route_ports=[n.ports.cluster for n in self.nats_nodes if n.ports.cluster],
            sync_interval=self.config.sync_interval, extra=extra,
        )  # fmt: skip

    def start_nats(self) -> None:
        for node in self.nats_nodes:
            self.start_nats_node(node.name, wait=False)
        for node in self.nats_nodes:
            process = self.managed[node.name].popen
            wait_for_port(self.config.host, node.ports.client, timeout=20, process=process)
        if self.config.cluster:
            self.wait_nats_healthy()

    def start_nats_node(self, name: str, *, wait: bool = True) -> None:
        node = next(n for n in self.nats_nodes if n.name == name)
        store = self.var / "nats" / ("cluster" if self.config.cluster else "jetstream")
        store.mkdir(parents=True, exist_ok=True)
        conf = self.var / "nats" / f"{node.name}.conf"
        conf.write_text(self.nats_config(node))
        conf.chmod(0o600)  # it holds the NATS passwords
        command = [nats_server_binary(), "-c", str(conf)]
        self._manage(node.name, lambda log: subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                              start_new_session=True))  # fmt: skip
        if wait:
            wait_for_port(self.config.host, node.ports.client, timeout=20, process=self.managed[node.name].popen)

    def wait_nats_healthy(self, timeout: float = 60.0) -> None:
        """Every node's JetStream is up and knows its meta leader, where monitoring is on.

        ``js-meta-only``, not ``js-enabled-only``: a clustered node reports JetStream enabled before it has found a
        meta leader, and a stream created in that window waits on a leader that does not exist yet (the durability
        benchmark's ``add_stream`` timed out so)."""
        deadline = time.monotonic() + timeout
        for node in self.nats_nodes:
            if node.ports.http is None:
                continue
            url = f"http://{self.config.host}:{node.ports.http}/healthz"
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url, params={"js-meta-only": "true"}, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise PlatformError(f"{node.name}: JetStream not healthy after {timeout}s")
                time.sleep(0.1)

    @property
    def nats(self) -> subprocess.Popen[bytes] | None:
        """The (first) NATS server's process."""
        process = self.managed.get(self.nats_nodes[0].name)
        return process.popen if process else None

    @property
    def run_file(self) -> Path:
        return self.var / "run.json"

    def write_run_file(self) -> None:
        """Where the running platform is, for the commands that talk to it (onestop backup)."""
        self.run_file.write_text(json.dumps(
            {"pid": os.getpid(), "nats_url": self.nats_url, "services": {g: self.url(g) for g in self.groups}}
        ))  # fmt: skip

    def running_nats_url(self) -> str | None:
        try:
            url = json.loads(self.run_file.read_text())["nats_url"]
        except (OSError, ValueError, KeyError):
            return None
        return str(url)

    def rewind_consumers(self) -> None:
        """After `onestop restore`: put each consumer back where it stood at the backup (onestop/backup.py), before
        any service starts."""
        from onestop.backup import finish_rewind, pending_rewind, rewind

        plan = pending_rewind(self.var)
        if plan is None:
            return
        credentials = self.nats_credentials()
        deadline = time.monotonic() + 60
        while True:
            try:
                done = asyncio.run(rewind(self.nats_url, credentials, self.config.bus_prefix, plan))
                break
            except Exception as exc:  # JetStream may still be electing its leaders
                if time.monotonic() > deadline:
                    raise PlatformError(f"cannot rewind the consumers after the restore: {exc!r}") from exc
                time.sleep(0.5)
        for line in done:
            self._report(f"restore: {line}")
        finish_rewind(self.var)

    def stop_nats(self, sig: int = signal.SIGTERM) -> None:
        for node in self.nats_nodes:
            self._unmanage(node.name, sig)

    # ------------------------------------------------------------------------------------------ services

    def bind_sockets(self) -> None:
        """Each service's (and the portal's) listening socket, held by the runner and shared by its replicas."""
        for group in self.groups:
            # A worker's port is any free one: only operators (and the runner, for readiness) call it.
            for name, port in [(group, self.config.ports[group]), *((w, 0) for w in self.worker_names(group))]:
                if name in self.sockets:
                    continue
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.config.host, port))
                except OSError as exc:
                    sock.close()
                    raise PlatformError(f"port {port} ({name}) already in use: is OneStop already running?") from exc
                sock.listen(2048)
                sock.set_inheritable(True)
                self.sockets[name] = sock

    def migrate(self) -> None:
        # The four services' databases; the portal has none (it calls their APIs).
        for entry in SERVICES:
            asyncio.run(upgrade(self.database_url(entry), entry.migrations))

    def seed(self) -> list[str]:
        done = []
        for entry in SERVICES:
            seeder = entry.seeder()
            if seeder is not None:
                done.append(f"{entry.name}: " + asyncio.run(seeder(self.settings(entry))))
        return done

    @property
    def groups(self) -> list[str]:
        """What runs as replicas behind one socket: the four services, and the portal when it runs."""
        return [s.name for s in SERVICES] + ([PORTAL.name] if self.runs_portal else [])

    def _group_of(self, name: str) -> str:
        """The service (or portal) a process name belongs to: "intake" for "intake" or "intake-2"."""
        return next(g for g in [s.name for s in SERVICES] + [PORTAL.name] if name == g or name.startswith(f"{g}-"))

    def _processes_named(self, name: str) -> list[str]:
        """A service's replicas and its worker, or the one process named."""
        if name in self.groups:
            return self.replica_names(name) + self.worker_names(name)
        return [name]

    def start_service(self, name: str, *, wait: bool = True) -> None:
        """Start a service's (or the portal's) replicas and its worker, or one of them by its name; waits until they
        answer /readyz."""
        group = self._group_of(name)
        self.bind_sockets()
        for process in self._processes_named(name):
            fd = self.sockets[process if process in self.worker_names(group) else group].fileno()
            if group == PORTAL.name:
                factory, env = PORTAL.app_factory, self._env(PORTAL.env_prefix, self.portal_settings_values())
            else:
                entry = BY_NAME[group]
                factory, env = entry.app_factory, self.env_for(entry, process)
            command = [sys.executable, "-m", "onestop.serve", "--factory", factory, "--fd", str(fd)]
            self._manage(process, _spawner(command, env, fd))
        if wait:
            self.wait_ready(group)

    def stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop a service's replicas (or one) for good: the supervisor no longer restarts them."""
        for replica in self._processes_named(name):
            self._unmanage(replica, sig)

    def kill_service(self, name: str) -> None:
        """``kill -9``: no drain, no last relay pass, no acks; the process stays down (start_service brings it back)."""
        self.stop_service(name, signal.SIGKILL)

    def crash(self, name: str) -> int:
        """SIGKILL a process as a crash would, leaving it to the supervisor; returns the pid killed."""
        with self.lock:
            process = self.managed[name]
            pid = process.pid
            assert pid is not None
            assert process.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            process.popen.wait()
        return pid

    def wait_ready(self, name: str) -> None:
        group = self._group_of(name)
        deadline = time.monotonic() + self.config.ready_timeout
        last = "no answer"
        # The service's port (whichever replica answers), and its worker's.
        waiting = [self.url(group), *(self.process_url(w) for w in self.worker_names(group))]
        while time.monotonic() < deadline:
            with self.lock:
                processes = [self.managed[r] for r in self._processes_named(group) if r in self.managed]
            dead = [p for p in processes if p.restart_at is None and p.exit_code() is not None]
            if dead:
                code = dead[0].exit_code()
                assert code is not None
                raise PlatformError(f"{dead[0].name} ended ({describe_exit(code)}); see {self.log_path(dead[0].name)}")
            try:
                response = httpx.get(f"{waiting[0]}/readyz", timeout=2)
                if response.status_code == 200:
                    waiting.pop(0)
                    if not waiting:
                        return
                    continue
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise PlatformError(f"{group} not ready after {self.config.ready_timeout}s: {last}")

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The services' and the portal's processes by name (replicas included)."""
        with self.lock:
            return {
                name: p.popen
                for name, p in self.managed.items()
                if p.popen is not None and name not in {n.name for n in self.nats_nodes} | {"postgres"}
            }

    def exited(self) -> dict[str, int]:
        """Processes that ended by themselves and are not (yet) running again."""
        with self.lock:
            return {name: code for name, p in self.managed.items() if (code := p.exit_code()) is not None}

    # ------------------------------------------------------------------------------------------ logs

    def log_path(self, name: str) -> Path:
        return self.var / "logs" / f"{name}.log"


def _spawner(command: list[str], env: dict[str, str], fd: int) -> Callable[[IO[bytes] | None], subprocess.Popen[bytes]]:
    """How a service's process is started (and started again by the supervisor), handed its listening socket."""

    def spawn(log: IO[bytes] | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=(fd,))  # fmt: skip

    return spawn


def _env_value(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# Where unused_port notes the ports it has picked, for every process on the machine (the suite's workers).
PORT_RESERVATIONS = Path(tempfile.gettempdir()) / "onestop-ports"
# How long a picked port is passed by: longer than any pick-to-listen (a PostgreSQL cluster's start, say).
PORT_RESERVED_SECONDS = 600.0


def unused_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range, not picked by another process in the last ten minutes.

    A port from the ephemeral range (what ``free_port`` gets) may be taken by an outgoing connection — a NATS node's
    route to another, say — between the pick and the listen. A port merely free may be picked by another process at
    the same time (the suite's other worker), which then listens on it first: each pick is noted in
    :data:`PORT_RESERVATIONS`, and a port noted there recently is passed by."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return free_port(host)
    for _ in range(200):
        port = random.randint(max(ephemeral - 12_000, 1024), ephemeral - 1)  # noqa: S311 - not a secret
        if port_is_free(host, port) and _reserve(port):
            return port
    return free_port(host)


def _reserve(port: int) -> bool:
    """Note ``port`` as picked unless another pick noted it less than :data:`PORT_RESERVED_SECONDS` ago."""
    PORT_RESERVATIONS.mkdir(exist_ok=True)
    note = PORT_RESERVATIONS / str(port)
    with (PORT_RESERVATIONS / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process at a time looks and notes; released when the file closes
        with contextlib.suppress(FileNotFoundError):
            if time.time() - note.stat().st_mtime < PORT_RESERVED_SECONDS:
                return False
        note.touch()  # an old note's time renewed
        return True


def wait_for_port(host: str, port: int, *, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise PlatformError(f"process exited with code {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise PlatformError(f"nothing listening on {host}:{port} after {timeout}s")


__all__ = [
    "NatsNodePorts",
    "Platform",
    "PlatformConfig",
    "PlatformError",
    "free_port",
    "terminate",
    "unused_port",
    "wait_for_port",
]
