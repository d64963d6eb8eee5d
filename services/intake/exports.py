"""A resident's copy of everything held about them, across every service, as one JSON document (개인정보 보호법
제35조 열람, 제35조의2 전송 요구 — in a form a machine reads).

Why a job and not one GET: the document is gathered from four services over HTTP. Held in a request, a slow or
unavailable service would fail the resident's request after a long wait, and the database would wait with it. As a
job (``POST .../data-exports`` → 202), intake records the request at once (in the resident's access log), a worker
gathers each service's part — retrying a service that is down, within the ten days the law allows (시행령 제41조
제4항 — 확인 필요) — and the resident fetches the document when it is ready (``GET .../data-exports/{id}``), for
``export_retention_days``; then it is destroyed (it is a complete copy).

Each service serves its part at ``GET /v1/residents/{id}/data`` to intake's own service token (each read in that
service's audit log); intake's part is read from its own database. Every request for and every fetch of a document is
in the resident's access log, the resident's own too: a copy of all their data left the platform. Nothing here
commits, except the worker, which is a unit of work of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import resident_data
from services.intake.access import PURPOSE_DATA_RIGHTS, exercising_rights, purpose_of, record_access
from services.intake.models import DataExport
from services.intake.repository import Repository
from services.intake.schemas import DataExportStatus, DataExportView, ExportPartView
from services.intake.settings import IntakeSettings
from shared.auth import Principal
from shared.db import Database
from shared.events import Localized
from shared.personal_data import ResidentDataPart
from shared.problems import NotFound
from shared.tls import verifying_context

log = logging.getLogger(__name__)

FORMAT = "onestop-resident-data/1"
EXPORT_PENDING = "intake_export_pending"
RIGHTS = Localized(
    ko="개인정보 보호법 제35조(열람)와 제35조의2(전송 요구)에 따라, 각 서비스가 보유한 귀하의 정보 전부와 "
    "보유 기간·근거입니다. 보관 중인 기록은 보관 사유와 파기 예정일을 함께 적었습니다.",
    en="Everything each service holds about you, with how long and why it is kept (Personal Information Protection "
    "Act, articles 35 and 35-2). Records kept after an erasure say why and the day they will be destroyed.",
)


def _part_view(raw: Any) -> ExportPartView:
    return ExportPartView.model_validate(raw)


def view(export: DataExport, *, with_document: bool) -> DataExportView:
    return DataExportView(
        id=export.id,
        resident_id=export.resident_id,
        status=DataExportStatus(export.status),
        requested_at=export.requested_at,
        attempts=export.attempts,
        parts={service: _part_view(part) for service, part in sorted(export.parts.items())},
        completed_at=export.completed_at,
        expires_at=export.expires_at,
        error=export.error,
        document=export.document if with_document else None,
    )


def wake_on_commit(session: AsyncSession) -> None:
    """Have the export worker look at once, when this transaction commits."""
    session.info[EXPORT_PENDING] = True


async def request(
    repo: Repository,
    settings: IntakeSettings,
    principal: Principal,
    resident_id: uuid.UUID,
    today: dt.date,
) -> DataExportView:
    """The resident (or a representative in the ``data_rights`` scope, or counter staff under the resident's
    authority) asks for everything held about the resident; gathered by the worker."""
    resident, authority = await exercising_rights(
        repo, principal, resident_id, today, action="ask for a copy of their data"
    )
    now = dt.datetime.now(dt.UTC)
    services = ["intake", *settings.resident_data_services]
    export = DataExport(
        id=uuid.uuid4(),
        resident_id=resident.id,
        status=DataExportStatus.PENDING.value,
        requested_at=now,
        requested_by=principal.subject[:255],
        requested_by_role=principal.role.value,
        authority_kind=authority.kind if authority else None,
        authority_id=str(authority.id) if authority else None,
        attempts=0,
        next_attempt_at=now,
        parts={service: {"status": "waiting"} for service in services},
    )
    repo.session.add(export)
    await repo.session.flush()
    await record_access(
        repo,
        principal,
        resident.id,
        action="request export",
        record_type="data_export",
        record_id=export.id,
        purpose=purpose_of(authority) if authority else PURPOSE_DATA_RIGHTS,
        authority=authority,
        even_by_the_resident=True,
    )
    wake_on_commit(repo.session)
    return view(export, with_document=False)


async def read(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, export_id: uuid.UUID, today: dt.date
) -> DataExportView:
    """An export's status, and its document once ready; each fetch of a document is in the access log."""
    resident, authority = await exercising_rights(
        repo, principal, resident_id, today, action="read a copy of their data"
    )
    export = await repo.data_export(export_id)
    if export is None or export.resident_id != resident.id:
        raise NotFound(f"No data export {export_id}.")
    if export.document is not None:
        await record_access(
            repo,
            principal,
            resident.id,
            action="read export",
            record_type="data_export",
            record_id=export.id,
            purpose=purpose_of(authority) if authority else PURPOSE_DATA_RIGHTS,
            authority=authority,
            even_by_the_resident=True,
        )
    return view(export, with_document=True)


# ---------------------------------------------------------------------------------------------- the worker


class ExportWorker:
    """Gathers pending exports: intake's part from its database, each other service's part over HTTP with intake's
    service token, all at once. A service that cannot be reached is tried again with a growing pause, up to
    ``export_max_attempts``; then the export fails, saying which service, and the resident may ask again."""

    def __init__(self, db: Database, settings: IntakeSettings, client: httpx.AsyncClient) -> None:
        self.db = db
        self.settings = settings
        self.client = client

    def url(self, service: str) -> str:
        base: str = getattr(self.settings, f"{service}_url")
        return base.rstrip("/")

    async def run_once(self) -> int:
        now = dt.datetime.now(dt.UTC)
        token = uuid.uuid4().hex
        lease = dt.timedelta(seconds=self.settings.export_timeout_seconds * 3 + 30)
        async with self.db.session() as session:
            claimed = await Repository(session).claim_due_exports(token, now=now, lease=lease, limit=10)
        for export_id in claimed:
            try:
                await self.gather(export_id, token)
            except Exception:
                log.exception("export not gathered; trying again later", extra={"export_id": str(export_id)})
        return len(claimed)

    async def gather(self, export_id: uuid.UUID, token: str) -> None:
        async with self.db.session() as session:
            export = await Repository(session).data_export(export_id)
            if export is None or export.claim_token != token:
                return
            resident_id, requested_at = export.resident_id, export.requested_at
            own = await resident_data.part(Repository(session), resident_id)
        services = list(self.settings.resident_data_services)
        fetched = await asyncio.gather(*(self.fetch(s, resident_id, export_id) for s in services))
        now = dt.datetime.now(dt.UTC)
        async with self.db.session() as session:
            export = await Repository(session).data_export(export_id, for_update=True)
            if export is None or export.claim_token != token:
                return  # destroyed meanwhile, or another worker took it over after our lease ran out
            parts: dict[str, Any] = {"intake": {"status": "gathered"}}
            documents: dict[str, Any] = {"intake": own.model_dump(mode="json")}
            failed = []
            for service, (document, error) in zip(services, fetched, strict=True):
                if document is None:
                    parts[service] = {"status": "unavailable", "error": error}
                    failed.append(service)
                else:
                    parts[service] = {"status": "gathered"}
                    documents[service] = document
            export.parts = parts
            export.attempts += 1
            export.claim_token = None
            export.claimed_until = None
            if not failed:
                export.status = DataExportStatus.READY.value
                export.completed_at = now
                export.expires_at = now + dt.timedelta(days=self.settings.export_retention_days)
                export.error = None
                export.document = {
                    "format": FORMAT,
                    "export_id": str(export.id),
                    "resident_id": str(resident_id),
                    "requested_at": requested_at.isoformat(),
                    "generated_at": now.isoformat(),
                    "rights": RIGHTS.model_dump(),
                    "services": documents,
                }
            elif export.attempts >= self.settings.export_max_attempts:
                export.status = DataExportStatus.FAILED.value
                export.completed_at = now
                export.error = f"not reachable: {', '.join(failed)}"[:500]
            else:
                pause = self.settings.export_retry_seconds * 2 ** (export.attempts - 1)
                export.next_attempt_at = now + dt.timedelta(seconds=pause)
                export.error = f"waiting for: {', '.join(failed)}"[:500]

    async def fetch(
        self, service: str, resident_id: uuid.UUID, export_id: uuid.UUID
    ) -> tuple[dict[str, Any] | None, str | None]:
        """A service's part as plain data, or why not."""
        token = self.settings.service_token.get_secret_value() if self.settings.service_token else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self.client.get(
                f"{self.url(service)}/v1/residents/{resident_id}/data",
                params={"export_id": str(export_id)},
                headers=headers,
                timeout=self.settings.export_timeout_seconds,
            )
        except httpx.HTTPError as exc:
            return None, f"{service} unreachable: {type(exc).__name__}"
        if response.status_code != 200:
            return None, f"{service} answered {response.status_code}"
        try:
            part = ResidentDataPart.model_validate_json(response.content)
        except ValidationError:
            return None, f"{service} answered with an unreadable part"
        if part.service != service or part.resident_id != resident_id:
            return None, f"{service} answered about something else"
        return part.model_dump(mode="json"), None


@contextlib.asynccontextmanager
async def export_worker(db: Database, settings: IntakeSettings) -> AsyncIterator[ExportWorker]:
    """The worker and its loop for the service's lifetime (part of intake's context): it looks every
    ``export_interval_seconds``, and at once when a request for an export commits."""
    wake = asyncio.Event()

    def on_commit(session: AsyncSession) -> None:
        if session.info.pop(EXPORT_PENDING, False):
            wake.set()

    db.on_commit(on_commit)
    async with httpx.AsyncClient(
        follow_redirects=False, headers={"Accept": "application/json"}, verify=verifying_context()
    ) as client:
        worker = ExportWorker(db, settings, client)
        task = asyncio.create_task(_loop(worker, wake, settings.export_interval_seconds), name="intake-exports")
        try:
            yield worker
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _loop(worker: ExportWorker, wake: asyncio.Event, interval: float) -> None:
    while True:
        wake.clear()
        try:
            worked = await worker.run_once()
        except Exception:
            log.exception("export pass failed")
            worked = 0
        if worked:
            continue
        # asyncio.timeout, not wait_for: a cancellation arriving as the wake fires must end the loop (see notify).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await wake.wait()
