"""Settings common to every service, read from ``ONESTOP_<SERVICE>_...`` environment variables or ``.env``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """The base every service's settings extend; each subclass sets its own ``env_prefix``."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_prefix="ONESTOP_")

    # Storage
    database_url: str = "sqlite+aiosqlite:///var/service.db"
    database_echo: bool = False
    # Database connections: on PostgreSQL the pool of each process (size kept open, overflow opened under load and
    # closed again; a replica uses up to their sum, so size max_connections for replicas x services); on SQLite its
    # read connections (its writes, one at a time, use at most three: shared.db.SQLITE_WRITE_CONNECTIONS).
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)
    # Count the SQL statements and transactions each kind of work runs (onestop_db_statements in /metrics), for the
    # benchmark that measures what the pipeline costs per application. Off: no listener on the engine at all.
    database_count_statements: bool = False
    # Time each write transaction's wait for SQLite's writer lock and its hold of it, by the kind of work
    # (onestop_db_writer_wait_seconds / _hold_seconds in /metrics), for the HTTP benchmark. Off: nothing timed.
    database_time_writer_lock: bool = False

    # Messaging
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    bus_prefix: str = Field(default="onestop", pattern=r"^[a-z][a-z0-9_-]*$")
    stream_replicas: int = Field(default=1, ge=1, le=5)
    stream_duplicate_window_seconds: float = Field(default=120.0, gt=0)
    # How long the stream keeps an event (applied when the stream is created and to an existing one). Events carry
    # residents' ids and what they declared, so their copies must not outlive an erasure by long (issue 13): 72 hours
    # is well below the shortest retention period in services/*/retention.yaml (7 days) and long enough for a consumer
    # to catch up after an outage over a long weekend. Longer than the outbox keeps sent events (the reconciler must
    # never miss an event the stream let go of by age), and no longer than the inbox remembers ids (a redelivery is
    # still recognised). Every service must have the same value: each one applies it to the one stream.
    stream_max_age_hours: float = Field(default=72.0, gt=0)
    consumer_ack_wait_seconds: float = Field(default=30.0, gt=0)
    consumer_max_deliver: int = Field(default=5, ge=1)
    consumer_max_ack_pending: int = Field(default=1000, ge=1)
    consumer_batch_size: int = Field(default=100, ge=1, le=1000)
    # A batch is applied in transactions of at most this long each (then it commits and goes on in the next), so a
    # request waiting to write waits for one short transaction; and at most this many batches at once per service.
    consumer_transaction_budget_ms: float = Field(default=20.0, gt=0)
    consumer_parallel_batches: int = Field(default=2, ge=1)
    # Before each transaction a batch waits while the service is serving requests, at most this long (0: never
    # waits): requests first, consumers still going on under a load that never lets up (shared.turns.Foreground).
    consumer_patience_ms: float = Field(default=50.0, ge=0)
    # What this process does of the service's work. "all" (one process per service): it answers requests and runs the
    # consumers. Split in two (``onestop run --workers``): an "api" process answers requests and runs no consumers,
    # and a "worker" runs them, on a port of its own that only operators call. The worker lowers its own CPU priority
    # by ``process_nice`` when it starts, so that when the CPUs are short a request is answered before the pipeline's
    # next batch is handled (README, "Performance").
    process_role: Literal["all", "api", "worker"] = "all"
    process_nice: int = Field(default=0, ge=0, le=19)
    # How often each consumer's backlog on the server is read into onestop_consumer_pending.
    consumer_lag_interval_seconds: float = Field(default=15.0, gt=0)
    outbox_batch_size: int = Field(default=1000, ge=1, le=10000)
    outbox_poll_interval_seconds: float = Field(default=0.5, gt=0)
    outbox_retention_hours: float = Field(default=24.0, gt=0)
    # The reconciler (shared/reconciler.py) looks whether each sent event is still in the stream this long after it
    # was sent (longer than JetStream's default fsync interval of two minutes), every interval seconds.
    outbox_reconcile_grace_seconds: float = Field(default=180.0, ge=0)
    outbox_reconcile_interval_seconds: float = Field(default=30.0, gt=0)
    # Longer than any redelivery or replay of the stream can come back, so a late duplicate is still recognised.
    inbox_retention_hours: float = Field(default=24.0 * 30, gt=0)
    # Long enough for any client retry; the stored answers may hold personal data, so not longer.
    idempotency_retention_hours: float = Field(default=24.0, gt=0)
    housekeeping_interval_seconds: float = Field(default=600.0, gt=0)

    # Identity: the embedded issuer's public key, or a production OIDC provider's JWKS.
    jwt_public_key_file: Path = Path("var/keys/issuer.pub.pem")
    jwt_issuer: str = "onestop-embedded"
    jwt_audience: str = "onestop"
    oidc_jwks_url: str | None = None
    jwt_algorithms: list[str] = ["EdDSA", "RS256", "ES256"]

    # Local files the service keeps (mail and SMS sinks, for example).
    data_dir: Path = Path("var")
    # This service's own bearer token for calls to other services (production: from the OIDC provider), given
    # directly or as a file (a mounted secret; `onestop init` writes one per service beside the issuer keys).
    service_token: SecretStr | None = None
    service_token_file: Path | None = None

    # Dates: "today" is a date in the city's time zone (application dates, rules in force, due dates); ``today``
    # pins it, for tests and drills (shared.clock).
    timezone: str = "Asia/Seoul"
    today: dt.date | None = None

    # Traces (OpenTelemetry): exported over OTLP/HTTP to this endpoint (e.g. http://collector:4318/v1/traces) with
    # these headers; unset, spans are still made (their trace ids are in the logs) and exported nowhere.
    otlp_endpoint: str | None = None
    otlp_headers: dict[str, str] = {}
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)

    # HTTP
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    # Every route's handlers built with the app (shared.service.build_route_handlers), not by the first request that
    # reaches each router with the event loop held. Off only where apps are made by the hundred and each answers a
    # few requests: the test suite's services (0.1-0.15 s of CPU an app).
    build_route_handlers: bool = True
    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _stream_age_between_outbox_and_inbox(self) -> ServiceSettings:
        if self.stream_max_age_hours <= self.outbox_retention_hours:
            raise ValueError(
                f"stream_max_age_hours ({self.stream_max_age_hours}) must be longer than outbox_retention_hours "
                f"({self.outbox_retention_hours}): the reconciler would publish again events the stream let go of"
            )
        if self.stream_max_age_hours > self.inbox_retention_hours:
            raise ValueError(
                f"stream_max_age_hours ({self.stream_max_age_hours}) must not be longer than inbox_retention_hours "
                f"({self.inbox_retention_hours}): a redelivered event must still be recognised as one"
            )
        return self

    @model_validator(mode="after")
    def _token_from_file(self) -> ServiceSettings:
        if self.service_token is None and self.service_token_file is not None:
            try:
                self.service_token = SecretStr(self.service_token_file.read_text().strip())
            except OSError as exc:
                raise ValueError(f"service_token_file: cannot read {self.service_token_file}: {exc}") from exc
        return self
