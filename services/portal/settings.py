"""Settings of the portal: ``ONESTOP_PORTAL_...`` environment variables (or ``.env``).

The portal keeps no database and no bus connection: what it needs is where the four services are, where the identity
provider is, and the secret its session cookies are sealed with."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PORTAL_DIR = Path(__file__).resolve().parent


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONESTOP_PORTAL_", env_file=".env", extra="ignore")

    # Where people reach the portal (the OIDC redirect URI and, for the embedded provider, its issuer are below it).
    public_url: str = "http://127.0.0.1:8000"

    # The four services' public APIs, called with the signed-in person's own token.
    intake_url: str = "http://127.0.0.1:8001"
    eligibility_url: str = "http://127.0.0.1:8002"
    routing_url: str = "http://127.0.0.1:8003"
    notify_url: str = "http://127.0.0.1:8004"
    upstream_timeout_seconds: float = Field(default=10.0, gt=0)

    # Identity. With ``oidc_issuer_url`` unset the embedded provider (below /idp, signing with the embedded issuer's
    # keys) is on and is the provider; set it to an external provider's issuer and the embedded one is switched off.
    # The sign-in code path is the same either way: discovery, authorization code with PKCE, token, JWKS.
    oidc_issuer_url: str | None = None
    oidc_client_id: str = "onestop-portal"
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: str = "openid profile"
    # The embedded issuer's keys (``issuer.pem``; ``onestop run`` and ``onestop token`` use the same directory).
    keys_dir: Path = Path("var/keys")
    # Who the embedded provider's sign-in page lists (and ``onestop run`` seeds): a resident per life event, a
    # caseworker per office, a supervisor, an administrator.
    demo_people_file: Path = PORTAL_DIR / "demo_people.yaml"
    # How long a token the embedded provider issues lasts (the session lasts no longer than its token).
    token_ttl_seconds: int = Field(default=8 * 3600, ge=60, le=24 * 3600)

    # Sessions: a sealed (authenticated and encrypted), HttpOnly, SameSite=Lax cookie. The secret is given directly
    # or as a file; with neither, one is made on first start under ``keys_dir`` (so a restart keeps people signed in).
    session_secret: SecretStr | None = None
    session_secret_file: Path | None = None
    session_hours: float = Field(default=8.0, gt=0, le=24)
    # Production serves the portal over HTTPS only: cookies are then Secure (and named __Host-…).
    cookie_secure: bool = False

    timezone: str = "Asia/Seoul"
    log_level: str = "INFO"
    log_json: bool = True
    # Traces (as the services': a span per page, its calls to the services carrying ``traceparent``), exported over
    # OTLP/HTTP when an endpoint is set.
    otlp_endpoint: str | None = None
    otlp_headers: dict[str, str] = {}
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)

    @field_validator("public_url", "intake_url", "eligibility_url", "routing_url", "notify_url", "oidc_issuer_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def embedded_provider(self) -> bool:
        return self.oidc_issuer_url is None

    @property
    def issuer_url(self) -> str:
        """The provider's issuer identifier: the external one, or the embedded provider's, below the portal."""
        return self.oidc_issuer_url or f"{self.public_url}/idp"

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/auth/callback"
