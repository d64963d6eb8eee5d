"""FastAPI dependencies every service uses: the runtime, the unit of work, the outbox, the caller, idempotency and
the service's typed context.

Dependencies are ``async def`` even when they await nothing: FastAPI runs a plain ``def`` dependency in a worker
thread, a thread hop each (a dozen per request added milliseconds to every answer)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import Principal, current_principal
from shared.idempotency import IdempotencyKeyHeader, IdempotentRequest, checked_key
from shared.outbox import Outbox
from shared.runtime import Runtime

C = TypeVar("C")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


# Methods that change nothing (RFC 9110 "safe"): their requests run in a read-only unit of work, which never waits
# for a writer (see shared.db).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed before the response is sent (``scope="function"``), rolled back
    when the endpoint raises, so a client never gets a success for something that was not written. A GET reads in a
    read-only transaction; what it must record (the audit log of a read) is written before the response is sent.
    Another method's transaction takes SQLite's writer lock at its first write, not before (``reads_first``)."""
    db = get_runtime(request).db
    async with db.read_session() if request.method in READ_METHODS else db.session(reads_first=True) as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read-only unit of work whatever the method: for a POST that computes an answer and writes nothing (a
    screener), so that it never waits for a writer."""
    async with get_runtime(request).db.read_session() as session:
        yield session


async def get_write_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A write unit of work whatever the method: for a GET whose answer shows what it records (a resident's data
    export lists its own read in the access log it returns), so the entry is written in the read's transaction."""
    async with get_runtime(request).db.session() as session:
        yield session


async def get_outbox(request: Request) -> Outbox:
    return get_runtime(request).outbox


def context_dependency(kind: type[C]) -> Callable[[Request], Awaitable[C]]:
    """The dependency that hands routes the service's context (``ServiceDefinition.context``), typed."""

    async def get_context(request: Request) -> C:
        context = get_runtime(request).context
        if not isinstance(context, kind):
            raise TypeError(f"the running service's context is not a {kind.__name__}")
        return context

    return get_context


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
WriteSessionDep = Annotated[AsyncSession, Depends(get_write_session, scope="function")]
OutboxDep = Annotated[Outbox, Depends(get_outbox)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def get_idempotent(request: Request, session: SessionDep, key: IdempotencyKeyHeader = None) -> IdempotentRequest:
    """The header is a parameter of this dependency, and the caller and the store are had by calling, not by
    depending: FastAPI solves each sub-dependency's tree again at every use, even when its value is cached, and this
    one is part of every POST that creates something."""
    return IdempotentRequest(
        get_runtime(request).idempotency, session, await current_principal(request), checked_key(key), request
    )


# For every POST that honours ``Idempotency-Key``: declares the header, and runs the route's domain call once per key.
IdempotentDep = Annotated[IdempotentRequest, Depends(get_idempotent)]
