"""Start and stop the whole platform as separate processes: nats-server, the four services and the portal.

``onestop run`` (and so ``make run``) uses this, and so does the end-to-end suite, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from onestop.natsauth import (
    OPERATOR_USER,
    PasswordStore,
    load_partners,
    partner_user_name,
    platform_users,
    render_authorization,
)
from onestop.natsconf import nats_server_binary, single_node_config
from onestop.registry import PORTAL, ROOT, SERVICES, ServiceEntry
from services.portal.people import DemoPeople, register_residents
from services.portal.settings import PortalSettings
from shared.auth import Role, TokenIssuer, ensure_keypair
from shared.migrations import upgrade


class PlatformError(RuntimeError):
    pass


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
    # Service logs go to var/logs/<service>.log unless they should share the console.
    console_logs: bool = False
    # Extra settings per service (field name -> value), e.g. shorter timers in tests.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    nats_config_extra: str = ""
    ready_timeout: float = 60.0
    # Per-service and per-partner NATS users with subject permissions (passwords under <var>/nats/passwords).
    nats_auth: bool = True
    partners_file: Path | None = ROOT / "services" / "notify" / "partners.yaml"


class Platform:
    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self.var = config.var_dir.resolve()
        self.nats: subprocess.Popen[bytes] | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self.issuer: TokenIssuer | None = None

    # ------------------------------------------------------------------------------------------ addresses

    @property
    def nats_url(self) -> str:
        return f"nats://{self.config.host}:{self.config.nats_port}"

    def url(self, service: str) -> str:
        return f"http://{self.config.host}:{self.config.ports[service]}"

    @property
    def keys_dir(self) -> Path:
        return self.var / "keys"

    # ------------------------------------------------------------------------------------------ NATS users

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
        """The settings a service gets from the runner; the same values feed its process and our migrate/seed."""
        fields = entry.settings_class().model_fields
        values: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{self.var / f'{entry.name}.db'}",
            "nats_url": self.nats_url,
            "bus_prefix": self.config.bus_prefix,
            "jwt_public_key_file": str(self.keys_dir / "issuer.pub.pem"),
            "data_dir": str(self.var / entry.name),
        }
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

    def env_for(self, entry: ServiceEntry) -> dict[str, str]:
        return self._env(entry.env_prefix, self.settings_values(entry))

    def _env(self, prefix: str, values: dict[str, Any]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONESTOP_")}
        for key, value in values.items():
            env[prefix + key.upper()] = _env_value(value)
        env["PYTHONUNBUFFERED"] = "1"
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
        self.var.mkdir(parents=True, exist_ok=True)
        (self.var / "logs").mkdir(exist_ok=True)
        ensure_keypair(self.keys_dir)
        self.issuer = TokenIssuer.from_directory(self.keys_dir)
        busy = [
            p for p in [self.config.nats_port, *self.config.ports.values()] if not port_is_free(self.config.host, p)
        ]
        if busy:
            raise PlatformError(f"port(s) {', '.join(map(str, busy))} already in use: is OneStop already running?")
        try:
            self.start_nats()
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
                self.start_service(PORTAL.name)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        # Services first, so they can drain their acks and publishes into a NATS that is still there.
        for name in list(self.processes):
            self.stop_service(name)
        self.stop_nats()

    def start_nats(self) -> None:
        store = self.var / "nats" / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        conf = self.var / "nats" / "nats.conf"
        conf.write_text(
            single_node_config(
                store_dir=store,
                host=self.config.host,
                port=self.config.nats_port,
                http_port=self.config.nats_http_port,
                extra=self.config.nats_config_extra + (self.nats_authorization() if self.config.nats_auth else ""),
            )
        )
        conf.chmod(0o600)  # it holds the NATS passwords
        self.nats = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdout=self._log("nats"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.config.host, self.config.nats_port, timeout=20, process=self.nats)

    def stop_nats(self, sig: int = signal.SIGTERM) -> None:
        if self.nats is not None:
            _terminate(self.nats, sig)
            self.nats = None
        self._close_log("nats")

    def migrate(self) -> None:
        for entry in SERVICES:
            values = self.settings_values(entry)
            asyncio.run(upgrade(values["database_url"], entry.migrations))

    def seed(self) -> list[str]:
        done = []
        for entry in SERVICES:
            seeder = entry.seeder()
            if seeder is not None:
                done.append(f"{entry.name}: " + asyncio.run(seeder(entry.settings(**self.settings_values(entry)))))
        return done

    def start_service(self, name: str, *, wait: bool = True) -> None:
        if name == PORTAL.name:
            factory, env = PORTAL.app_factory, self._env(PORTAL.env_prefix, self.portal_settings_values())
        else:
            entry = next(s for s in SERVICES if s.name == name)
            factory, env = entry.app_factory, self.env_for(entry)
        command = [
            sys.executable, "-m", "uvicorn", "--factory", factory,
            "--host", self.config.host, "--port", str(self.config.ports[name]),
            "--no-access-log", "--timeout-graceful-shutdown", "10",
        ]  # fmt: skip
        self.processes[name] = subprocess.Popen(
            command,
            env=env,
            stdout=self._log(name),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready(name)

    def stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            _terminate(process, sig)
        self._close_log(name)

    def kill_service(self, name: str) -> None:
        """``kill -9``: no drain, no last relay pass, no acks."""
        self.stop_service(name, signal.SIGKILL)

    def wait_ready(self, name: str) -> None:
        process = self.processes[name]
        deadline = time.monotonic() + self.config.ready_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PlatformError(f"{name} exited with code {process.returncode}; see {self.log_path(name)}")
            try:
                response = httpx.get(f"{self.url(name)}/readyz", timeout=2)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise PlatformError(f"{name} not ready after {self.config.ready_timeout}s: {last}")

    def exited(self) -> dict[str, int]:
        """Processes that ended by themselves."""
        out = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if self.nats is not None and self.nats.poll() is not None:
            out["nats"] = self.nats.returncode
        return out

    # ------------------------------------------------------------------------------------------ logs

    def log_path(self, name: str) -> Path:
        return self.var / "logs" / f"{name}.log"

    def _log(self, name: str) -> IO[bytes] | None:
        if self.config.console_logs:
            return None
        self._close_log(name)
        handle = open(self.log_path(name), "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self._logs[name] = handle
        return handle

    def _close_log(self, name: str) -> None:
        handle = self._logs.pop(name, None)
        if handle is not None:
            handle.close()


def _terminate(process: subprocess.Popen[bytes], sig: int, timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _env_value(value: Any) -> str:
    if isinstance(value, (list, dict)):
        import json

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


def wait_for_port(host: str, port: int, *, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise PlatformError(f"process exited with code {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise PlatformError(f"nothing listening on {host}:{port} after {timeout}s")
