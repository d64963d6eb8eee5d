"""The onestop command: tokens from the embedded issuer, status of the services, the portal and NATS, and what `run`
asks the runner for."""

from __future__ import annotations

import contextlib
import http.server
import json
import random
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from onestop.cli import build_parser, main, run_config
from onestop.registry import BY_NAME, PORTAL, SERVICES
from shared.auth import Role, TokenVerifier


async def test_token_prints_a_token_the_services_accept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    resident = uuid.uuid4()
    assert main(["token", "--role", "resident", "--resident", str(resident), "--var", str(tmp_path)]) == 0
    token = capsys.readouterr().out.strip()
    verifier = TokenVerifier(
        issuer="onestop-embedded",
        audience="onestop",
        algorithms=["EdDSA"],
        public_key_pem=(tmp_path / "keys" / "issuer.pub.pem").read_bytes(),
    )
    principal = await verifier.verify(token)
    assert (principal.role, principal.resident_id) == (Role.RESIDENT, resident)

    assert (
        main(["token", "--role", "caseworker", "--office", "JN-WEL", "--office", "JN-CSC", "--var", str(tmp_path)]) == 0
    )
    staff = await verifier.verify(capsys.readouterr().out.strip())
    assert staff.offices == frozenset({"JN-WEL", "JN-CSC"})


def test_token_refuses_a_role_without_its_scope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--role", "resident", "--var", str(tmp_path)]) == 2
    assert "resident id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["token", "--role", "emperor", "--var", str(tmp_path)])


# ---------------------------------------------------------------------------------------------- status

# What `onestop status` asks, in its order: the four services, then the portal (no database, but people use it).
NAMES = [*(entry.name for entry in SERVICES), PORTAL.name]
PORTS = [*(entry.port for entry in SERVICES), PORTAL.port]


@contextlib.contextmanager
def service_addresses() -> Iterator[tuple[str, list[socket.socket]]]:
    """A loopback address whose service ports and a port for the NATS monitor are ours: bound, not listening, so a
    connection there is refused until a test serves on them. ``status`` asks the services' fixed default ports, and
    something on this machine may listen on those at 127.0.0.1; another loopback address is free then."""
    candidates = ["127.0.0.1"] + [f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.1" for _ in range(20)]
    for host in candidates:
        held: list[socket.socket] = []
        try:
            for port in [*PORTS, 0]:  # the last for the NATS monitor, any port
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
        except OSError:
            for sock in held:
                sock.close()
            continue
        try:
            yield host, held
        finally:
            for sock in held:
                sock.close()
        return
    pytest.fail("no loopback address with the services' ports free")


def serve_health(sockets: list[socket.socket], status: dict[int, int]) -> list[http.server.HTTPServer]:
    """Answer /readyz and /healthz on each bound socket with the status given for its port (the body as the
    services and NATS give it)."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = status[self.connection.getsockname()[1]]
            body = json.dumps({"status": "ok" if code == 200 else "degraded", "checks": {"nats": code == 200}})
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    servers = []
    for sock in sockets:
        server = http.server.HTTPServer(sock.getsockname(), Health, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.server_activate()  # listen on the socket we hold
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    return servers


def status(host: str, sockets: list[socket.socket]) -> int:
    nats_monitor = sockets[-1].getsockname()[1]
    return main(["status", "--host", host, "--nats-monitor", f"http://{host}:{nats_monitor}"])


def test_status_reports_what_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    with service_addresses() as (host, sockets):
        assert status(host, sockets) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [*NAMES, "nats"]
    assert all(line.split(maxsplit=1)[1] == "unreachable (ConnectError)" for line in lines), lines


def test_status_is_zero_only_when_services_portal_and_nats_are_ready(capsys: pytest.CaptureFixture[str]) -> None:
    with service_addresses() as (host, sockets):
        ports = [sock.getsockname()[1] for sock in sockets]
        answers = dict.fromkeys(ports, 200)
        servers = serve_health(sockets, answers)
        try:
            assert status(host, sockets) == 0
            ready = capsys.readouterr().out.splitlines()
            answers[BY_NAME["routing"].port] = 503
            assert status(host, sockets) == 1
            one_down = capsys.readouterr().out.splitlines()
            answers[BY_NAME["routing"].port] = 200
            answers[PORTAL.port] = 503
            assert status(host, sockets) == 1, "the portal counts"
            portal_down = capsys.readouterr().out.splitlines()
        finally:
            for server in servers:
                server.shutdown()
    assert ready == [f"{name:<12} ready" for name in NAMES] + [f"{'nats':<12} ok (JetStream meta leader known)"]
    routing = NAMES.index("routing")
    assert one_down[routing] == f"{'routing':<12} not ready: {{'nats': False}}"
    assert one_down[:routing] + one_down[routing + 1 :] == ready[:routing] + ready[routing + 1 :]
    assert portal_down[NAMES.index("portal")].startswith(f"{'portal':<12} not ready")


def test_run_splits_the_services_only_when_asked_and_lowers_the_workers_priority_as_told(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = run_config(build_parser().parse_args(["run"]))
    assert (plain.workers, plain.worker_nice, plain.replicas) == (False, 10, 1)
    split = run_config(build_parser().parse_args(["run", "--workers", "--worker-nice", "5", "--replicas", "2"]))
    assert (split.workers, split.worker_nice, split.replicas) == (True, 5, 2)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--workers", "--worker-nice", "20"])
    assert "--worker-nice" in capsys.readouterr().err
