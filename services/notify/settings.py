"""Settings of the notify service: ``ONESTOP_NOTIFY_...`` environment variables (or ``.env``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

PACKAGE_DIR = Path(__file__).resolve().parent

# Where a webhook may never point unless explicitly allowed: loopback, "this network", private ranges (RFC 1918,
# unique-local IPv6), carrier-grade NAT, link-local (which holds the cloud metadata address 169.254.169.254),
# multicast and reserved ranges. IPv4-mapped IPv6 addresses are checked as the IPv4 address they map to.
DEFAULT_FORBIDDEN_NETWORKS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
]


class NotifySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ONESTOP_NOTIFY_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///var/notify.db"

    # Where to send: intake knows the contact details; notify never stores them.
    intake_url: str = "http://127.0.0.1:8001"
    intake_timeout_seconds: float = Field(default=5.0, gt=0)
    contact_cache_seconds: float = Field(default=60.0, ge=0)
    # The resident-facing link put in every message: ``<app_base_url>/applications/<id>``.
    app_base_url: str = "http://127.0.0.1:8001"

    # Email over SMTP. No host: messages are written as .eml files under ``<data_dir>/mail/new`` instead.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_implicit_tls: bool = False
    smtp_validate_certs: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "OneStop <no-reply@onestop.local>"
    smtp_timeout_seconds: float = Field(default=15.0, gt=0)

    # SMS through an HTTP gateway (contract in services/notify/channels.py). No URL: ``<data_dir>/sms.jsonl``.
    sms_gateway_url: str | None = None
    sms_api_key: SecretStr | None = None
    sms_sender: str = "OneStop"
    sms_timeout_seconds: float = Field(default=10.0, gt=0)

    # Letters (the post channel): PDFs under ``<data_dir>/post``, in a font with Hangul (Debian's fonts-nanum).
    letter_font: Path = Path("/usr/share/fonts/truetype/nanum/NanumGothic.ttf")
    letter_bold_font: Path | None = Path("/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf")

    # Resident deliveries: retries with exponential backoff and full jitter, then "dead".
    delivery_max_attempts: int = Field(default=8, ge=1, le=100)
    retry_base_seconds: float = Field(default=30.0, gt=0)
    retry_max_seconds: float = Field(default=6 * 3600.0, gt=0)
    # Messages for one application and kind arriving this close together become one message.
    bundle_window_seconds: float = Field(default=5.0, ge=0)

    # The background workers.
    worker_interval_seconds: float = Field(default=1.0, gt=0)
    worker_batch_size: int = Field(default=50, ge=1, le=1000)
    worker_concurrency: int = Field(default=8, ge=1, le=100)
    claim_lease_seconds: float = Field(default=120.0, gt=0)

    # Partner webhooks (Standard Webhooks).
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=12, ge=1, le=100)
    webhook_retry_base_seconds: float = Field(default=10.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=6 * 3600.0, gt=0)
    # A subscription whose deliveries failed this many times in a row is paused until resumed.
    webhook_pause_after_failures: int = Field(default=30, ge=1)
    webhook_secret_grace_seconds: float = Field(default=24 * 3600.0, ge=0)
    webhook_forbidden_networks: list[str] = Field(default_factory=lambda: list(DEFAULT_FORBIDDEN_NETWORKS))
    # Exceptions to the forbidden ranges (tests allow 127.0.0.1/32; an on-premises partner a private range).
    webhook_allowed_networks: list[str] = Field(default_factory=list)

    # The aggregate feed (services/notify/aggregates.py): determinations counted per district and program over periods
    # this long (from midnight in the city's time zone; a day by default), groups smaller than the minimum withheld.
    aggregate_period_seconds: float = Field(default=24 * 3600.0, ge=1, le=7 * 24 * 3600.0)
    aggregate_min_group: int = Field(default=10, ge=1)

    # Partners and their grants loaded by ``onestop seed``.
    partners_file: Path = PACKAGE_DIR / "partners.yaml"
