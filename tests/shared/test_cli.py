"""The onestop command: tokens from the embedded issuer, and status when nothing runs."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from onestop.cli import main
from onestop.runner import free_port
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


def test_status_reports_what_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["status", "--host", "127.0.0.1", "--nats-monitor", f"http://127.0.0.1:{port}"]) in (0, 1)
    out = capsys.readouterr().out
    assert "nats" in out
    assert "unreachable" in out
