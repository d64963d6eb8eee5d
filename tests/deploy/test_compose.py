"""docker-compose.yml and the k8s manifests cannot run here (no Docker), so they are checked against the code: every
ONESTOP_ variable is a real setting of that service and validates, and the pieces point at each other."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from onestop.natsconf import nats_server_binary
from onestop.registry import BY_NAME, PORTAL, ROOT, SERVICES
from services.portal.settings import PortalSettings

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
CLUSTER = ROOT / "deploy" / "nats" / "cluster"
PASSWORDS = dict(
    line.split("=", 1)
    for line in (CLUSTER / "passwords.env").read_text().splitlines()
    if line and not line.startswith("#")
)
_INTERPOLATION = re.compile(r"\$\{(\w+):-([^}]*)\}")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default}, with the defaults (what `docker compose up` uses when nothing is set)."""
    return _INTERPOLATION.sub(lambda m: m.group(2), str(value))


def service_env(name: str) -> dict[str, str]:
    return {k: interpolate(v) for k, v in COMPOSE["services"][name]["environment"].items()}


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_every_variable_is_a_real_setting_and_validates(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    entry = BY_NAME[name]
    env = service_env(name)
    assert env.pop("SERVICE") == name
    # The token file exists in the container (written by `onestop init` into the keys volume); here, a stand-in.
    token_key = f"{entry.env_prefix}SERVICE_TOKEN_FILE"
    assert env[token_key] == f"/var/onestop/keys/service-{name}.token"
    (tmp_path / "token").write_text("a-token")
    env[token_key] = str(tmp_path / "token")
    fields = entry.settings_class().model_fields
    for key in env:
        assert key.startswith(entry.env_prefix), f"{name}: {key} is not {entry.env_prefix}*"
        assert key.removeprefix(entry.env_prefix).lower() in fields, f"{name}: {key} is not a setting"
    for key in list(os.environ):
        if key.startswith("ONESTOP_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = entry.settings()  # raises if a value does not validate
    url = make_url(settings.database_url)
    assert (url.drivername, url.host, url.database) == ("postgresql+asyncpg", "postgres", name)
    assert settings.stream_replicas == 3, "the stream is replicated across the three NATS nodes"
    assert [u.split("//")[1] for u in settings.nats_url.split(",")] == ["nats-1:4222", "nats-2:4222", "nats-3:4222"]
    assert settings.nats_user == name
    assert settings.nats_password is not None
    # The default password the service uses is the one the NATS servers are configured with.
    assert settings.nats_password.get_secret_value() == PASSWORDS[f"{name.upper()}_NATS_PASSWORD"]
    assert str(settings.jwt_public_key_file).startswith("/var/onestop/keys/")


def test_the_setup_container_prepares_the_same_databases_the_services_use() -> None:
    setup = COMPOSE["services"]["setup"]
    assert setup["command"][:2] == ["onestop", "init"]
    for entry in SERVICES:
        key = f"{entry.env_prefix}DATABASE_URL"
        assert setup["environment"][key] == service_env(entry.name)[key]
        assert COMPOSE["services"][entry.name]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    init_sql = (ROOT / "deploy" / "postgres" / "init.sql").read_text()
    for entry in SERVICES:
        url = make_url(service_env(entry.name)[f"{entry.env_prefix}DATABASE_URL"])
        assert f"CREATE USER {url.username} WITH PASSWORD '{url.password}'" in init_sql
        assert f"CREATE DATABASE {url.database} OWNER {url.username}" in init_sql


def test_the_nats_cluster_configuration_is_valid_and_knows_every_service() -> None:
    auth = (CLUSTER / "auth.conf").read_text()
    for entry in SERVICES:
        assert f'user: "{entry.name}"' in auth
    for node in (1, 2, 3):
        done = subprocess.run(
            [nats_server_binary(), "-t", "-c", str(CLUSTER / f"nats-{node}.conf")],
            env={**os.environ, **PASSWORDS},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        for other in (1, 2, 3):
            assert f"nats-route://nats-{other}:6222" in (CLUSTER / f"nats-{node}.conf").read_text()
    nats_services = [n for n in COMPOSE["services"] if n.startswith("nats-")]
    assert sorted(nats_services) == ["nats-1", "nats-2", "nats-3"]


def test_the_image_runs_the_service_each_container_names() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "services.${SERVICE}.main:create_app" in dockerfile
    for entry in SERVICES:
        assert entry.app_factory == f"services.{entry.name}.main:create_app"
        module = __import__(f"services.{entry.name}.main", fromlist=["create_app"])
        assert callable(module.create_app)


def test_the_kubernetes_manifests_use_real_settings() -> None:
    documents: list[dict[str, Any]] = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "onestop.yaml").read_text()))
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    assert sorted(deployments) == sorted([*(s.name for s in SERVICES), PORTAL.name])
    for name, deployment in deployments.items():
        if name == PORTAL.name:
            continue
        entry = BY_NAME[name]
        fields = entry.settings_class().model_fields
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        for variable in container["env"]:
            key = variable["name"]
            if key in ("SERVICE", "PORT"):
                continue
            assert key.startswith(entry.env_prefix), key
            assert key.removeprefix(entry.env_prefix).lower() in fields, f"{name}: {key} is not a setting"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> PortalSettings:
    for key in list(os.environ):
        if key.startswith("ONESTOP_"):
            monkeypatch.delenv(key)
    fields = PortalSettings.model_fields
    for key, value in env.items():
        assert key.startswith(PORTAL.env_prefix), key
        assert key.removeprefix(PORTAL.env_prefix).lower() in fields, f"portal: {key} is not a setting"
        monkeypatch.setenv(key, value)
    return PortalSettings(_env_file=None)  # raises if a value does not validate


def test_the_portal_container_calls_the_services_by_their_names_and_signs_in_with_the_setup_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = service_env(PORTAL.name)
    assert env.pop("SERVICE") == PORTAL.name
    settings = _settings_from(env, monkeypatch)
    for entry in SERVICES:
        assert getattr(settings, f"{entry.name}_url") == f"http://{entry.name}:8000"
        assert entry.name in COMPOSE["services"]
    assert settings.embedded_provider, "compose has no external provider: the portal's own one signs people in"
    # The embedded provider signs with the issuer key `onestop init` wrote into the keys volume the services read.
    assert str(settings.keys_dir) == "/var/onestop/keys"
    assert "keys:/var/onestop/keys:ro" in COMPOSE["services"][PORTAL.name]["volumes"]
    assert settings.session_secret is not None, "the keys volume is read-only: the secret cannot be made there"
    assert COMPOSE["services"][PORTAL.name]["ports"] == ["8000:8000"]
    assert settings.public_url == "http://localhost:8000"
    # The links in residents' messages open the portal's pages.
    assert service_env("notify")["ONESTOP_NOTIFY_APP_BASE_URL"] == settings.public_url


def test_the_kubernetes_portal_signs_in_at_the_deployment_s_provider_behind_https(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    documents: list[dict[str, Any]] = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "onestop.yaml").read_text()))
    by_kind_name = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    [container] = by_kind_name[("Deployment", PORTAL.name)]["spec"]["template"]["spec"]["containers"]
    secrets = by_kind_name[("Secret", "onestop-secrets")]["stringData"]
    env: dict[str, str] = {}
    for variable in container["env"]:
        if variable["name"] in ("SERVICE", "PORT"):
            continue
        if "valueFrom" in variable:
            env[variable["name"]] = secrets[variable["valueFrom"]["secretKeyRef"]["key"]]
        else:
            env[variable["name"]] = variable["value"]
    settings = _settings_from(env, monkeypatch)
    assert not settings.embedded_provider
    assert settings.oidc_client_secret is not None
    assert settings.session_secret is not None
    assert settings.cookie_secure
    assert settings.public_url.startswith("https://")
    for entry in SERVICES:
        assert getattr(settings, f"{entry.name}_url") == f"http://{entry.name}.onestop.svc"
        assert ("Service", entry.name) in by_kind_name
    assert ("Service", PORTAL.name) in by_kind_name
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_init_prepares_keys_service_tokens_and_databases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onestop.cli import main

    for entry in SERVICES:
        monkeypatch.setenv(f"{entry.env_prefix}DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / entry.name}.db")
    assert main(["init", "--var", str(tmp_path)]) == 0
    assert main(["init", "--var", str(tmp_path)]) == 0, "a second run is harmless"
    for entry in SERVICES:
        monkeypatch.setenv(
            f"{entry.env_prefix}SERVICE_TOKEN_FILE", str(tmp_path / "keys" / f"service-{entry.name}.token")
        )
        settings = entry.settings()
        assert settings.service_token is not None
        import jwt

        claims = jwt.decode(settings.service_token.get_secret_value(), options={"verify_signature": False})
        assert (claims["role"], claims["service"]) == ("service", entry.name)
        assert (tmp_path / f"{entry.name}.db").exists()
    monkeypatch.setenv("ONESTOP_INTAKE_SERVICE_TOKEN_FILE", str(tmp_path / "missing.token"))
    with pytest.raises(ValueError, match="service_token_file"):
        BY_NAME["intake"].settings()
