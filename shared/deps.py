"""FastAPI dependencies every service uses: the runtime, the unit of work, the outbox and the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import Principal, current_principal
from shared.idempotency import Idempotency
from shared.outbox import Outbox

if TYPE_CHECKING:
    from shared.service import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed before the response is sent (``scope="function"``), rolled back
    when the endpoint raises, so a client never gets a success for something that was not written."""
    async with get_runtime(request).db.session() as session:
        yield session


def get_outbox(request: Request) -> Outbox:
    return get_runtime(request).outbox


def get_idempotency(request: Request) -> Idempotency:
    return get_runtime(request).idempotency


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
OutboxDep = Annotated[Outbox, Depends(get_outbox)]
IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
