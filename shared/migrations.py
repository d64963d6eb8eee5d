"""One Alembic history per service. ``upgrade`` runs inside an event loop by handing Alembic a connection (the
"connection sharing" recipe), so the CLI, the runner and the tests all migrate the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from shared.db import create_engine


def alembic_config(script_location: Path, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(url: str, script_location: Path, revision: str = "head") -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run, alembic_config(script_location, url), "upgrade", revision)
    finally:
        await engine.dispose()


async def current(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        await engine.dispose()


async def revision(url: str, script_location: Path, message: str) -> None:
    """Autogenerate a new revision from the difference between the models and a database at head."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run, alembic_config(script_location, url), "revision", message)
    finally:
        await engine.dispose()


def _run(connection: Connection, config: Config, action: str, arg: str) -> None:
    config.attributes["connection"] = connection
    if action == "upgrade":
        command.upgrade(config, arg)
    else:
        command.revision(config, message=arg, autogenerate=True)


def configure_context(connection: Connection, metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_env(metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py``."""
    config = context.config
    connection: Any = config.attributes.get("connection")
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    if connection is not None:
        configure_context(connection, metadata)
        with context.begin_transaction():
            context.run_migrations()
        return

    # Started by the alembic command line: make our own engine.
    async def run_async() -> None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        async with engine.begin() as conn:
            await conn.run_sync(_configure_and_run, metadata)
        await engine.dispose()

    asyncio.run(run_async())


def _configure_and_run(connection: Connection, metadata: MetaData) -> None:
    configure_context(connection, metadata)
    with context.begin_transaction():
        context.run_migrations()
