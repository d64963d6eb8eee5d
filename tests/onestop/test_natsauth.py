"""NATS users and permissions (onestop/natsauth.py, deploy/nats/generate-auth.py, the runner), enforced by a real
nats-server started with the generated configuration."""

from __future__ import annotations

import asyncio
import importlib.util
import stat
import subprocess
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from onestop.cli import _banner
from onestop.natsauth import PasswordStore, partner_user_name
from onestop.natsconf import nats_server_binary
from onestop.registry import BY_NAME, ROOT, SERVICES
from onestop.runner import Platform, PlatformConfig, unused_port
from tests.support.nats import NatsServer
from tests.support.nats_clients import Client, connect
from tests.support.waiting import wait_until

# ================================================================================================ permissions


async def test_a_partner_user_may_read_its_own_subjects_and_nothing_else(
    secured_nats: NatsServer, bus_prefix: str, passwords: PasswordStore, clients: list[Client]
) -> None:
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(secured_nats.url, allow_reconnect=False, connect_timeout=2)
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(
            secured_nats.url, user="partner-bank", password="guessed", allow_reconnect=False, connect_timeout=2
        )

    bank = await connect(clients, secured_nats, partner_user_name("bank"), passwords)
    own, other, internal = (
        f"{bus_prefix}.partner.bank.>",
        f"{bus_prefix}.partner.ngo.>",
        f"{bus_prefix}.case.decided",
    )
    for subject in (own, other, internal, "_INBOX.>", ">"):
        await bank.subscribe(subject)
    await wait_until(lambda: len(bank.violations()) == 4)
    refused = " ".join(bank.violations())
    for subject in (other, internal, "_INBOX.>"):
        assert f'subscription to "{subject.lower()}"' in refused.lower()

    # What the services publish: the bank gets its own subject only.
    notify = await connect(clients, secured_nats, "notify", passwords)
    for subject in (f"{bus_prefix}.partner.bank.case.decided", f"{bus_prefix}.partner.ngo.case.decided", internal):
        await notify.nc.publish(subject, subject.encode())
    await notify.nc.flush()
    await wait_until(lambda: bank.received.get(own) == [f"{bus_prefix}.partner.bank.case.decided".encode()])
    await bank.nc.flush()  # a round trip: anything else the server would deliver has arrived by now
    assert set(bank.received) == {own}
    assert notify.violations() == []

    # A partner publishes nothing (not even where a service would listen).
    ops = await connect(clients, secured_nats, "ops", passwords)
    await ops.subscribe(f"{bus_prefix}.>")
    await bank.nc.publish(f"{bus_prefix}.facts.reported", b"forged")
    await bank.nc.flush()
    await wait_until(lambda: len(bank.violations()) == 5)
    assert "publish to" in bank.violations()[-1].lower()
    await ops.nc.flush()
    assert b"forged" not in ops.received.get(f"{bus_prefix}.>", [])


# ================================================================================================ the runner


def test_the_runner_gives_each_service_its_user_and_keeps_the_passwords(tmp_path: Path) -> None:
    def platform() -> Platform:
        return Platform(
            PlatformConfig(
                var_dir=tmp_path / "var",
                nats_port=unused_port(),
                nats_http_port=None,
                ports={s.name: unused_port() for s in SERVICES},
            )
        )

    first = platform()
    values = first.settings_values(BY_NAME["notify"])
    assert values["nats_user"] == "notify"
    password_file = tmp_path / "var" / "nats" / "passwords" / "notify"
    assert values["nats_password"] == password_file.read_text().strip()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert platform().settings_values(BY_NAME["notify"])["nats_password"] == values["nats_password"], "reused"
    assert first.settings_values(BY_NAME["intake"])["nats_password"] != values["nats_password"]

    access = dict((p, (u, s)) for p, u, _, s in first.partner_access())
    assert access["hanbit-bank"] == ("partner-hanbit-bank", "onestop.partner.hanbit-bank.>")
    banner = _banner(first, 1.0)  # what `make run` prints: how a partner connects
    assert "user partner-hanbit-bank" in banner
    assert str(tmp_path / "var" / "nats" / "passwords" / "partner-hanbit-bank") in banner

    off = Platform(PlatformConfig(var_dir=tmp_path / "var2", nats_auth=False))
    assert "nats_user" not in off.settings_values(BY_NAME["notify"])

    (tmp_path / "var" / "logs").mkdir()
    first.start_nats()
    try:
        asyncio.run(_runner_nats_checks(first))
    finally:
        first.stop_nats()


async def _runner_nats_checks(platform: Platform) -> None:
    url = platform.nats_url
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    service = await nats.connect(url, allow_reconnect=False, **platform.nats_credentials("routing"))
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    partner = await nats.connect(
        url, allow_reconnect=False, error_cb=on_error, **platform.nats_credentials("partner-saebom-ngo")
    )
    try:
        await partner.subscribe("onestop.case.decided")
        await partner.flush()
        await wait_until(lambda: any("permissions violation" in e.lower() for e in errors))
        assert service.is_connected
    finally:
        await partner.close()
        await service.close()


# ================================================================================================ the generator


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate_auth", ROOT / "deploy" / "nats" / "generate-auth.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generator_writes_a_config_nats_server_accepts_and_keeps_passwords(tmp_path: Path) -> None:
    generator = _generator()
    out, secrets_dir = tmp_path / "auth.conf", tmp_path / "passwords"
    args = ["--passwords-dir", str(secrets_dir), "--prefix", "onestop", "-o", str(out)]
    assert generator.main(args) == 0
    first = out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert generator.main(args) == 0
    assert out.read_text() == first, "the second run reuses the passwords"
    assert (secrets_dir / "partner-hanbit-bank").read_text().strip() in first
    assert '"onestop.partner.hanbit-bank.>"' in first

    server_conf = tmp_path / "nats.conf"
    server_conf.write_text(f"listen: 127.0.0.1:{unused_port()}\ninclude ./auth.conf\n")
    checked = subprocess.run([nats_server_binary(), "-c", str(server_conf), "-t"], capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stderr.decode() + checked.stdout.decode()

    # The example shipped in deploy/nats is what the generator writes for the seed partners.
    example = tmp_path / "example.conf"
    assert generator.main(["--example", "-o", str(example)]) == 0
    assert example.read_text() == (ROOT / "deploy" / "nats" / "auth.example.conf").read_text()

    bad = tmp_path / "partners.yaml"
    bad.write_text("partners:\n  - id: Not.Valid\n")
    assert generator.main(["--example", "--partners", str(bad)]) == 1
