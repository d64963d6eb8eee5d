"""One Alembic history per service. ``upgrade`` runs inside an event loop by handing Alembic a connection (the
"connection sharing" recipe), so the CLI, the runner and the tests all migrate the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
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


def for_dialect(dialect: str) -> Callable[..., bool]:
    """Autogenerate's ``include_object``: an index a model declares for one backend only (``Index(...).ddl_if(
    dialect=...)``, which ``create_all`` honours and autogenerate does not) is compared on that backend alone."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        only = getattr(obj, "_ddl_if", None) if type_ == "index" and not reflected else None
        return only is None or only.dialect is None or only.dialect == dialect

    return include


def configure_context(connection: Connection, metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        include_object=for_dialect(connection.dialect.name),
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


# ---------------------------------------------------------------------------------------------- platform tables
# Steps every service's history takes alike (each service has its own database and its own history).


def create_audit_log() -> None:
    """The platform audit log (``shared.tables``) as the migrations of 2026-11 created it; the columns added since
    come with :func:`add_audit_log_authority`."""
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("actor_role", sa.String(length=32), nullable=False),
        sa.Column("actor_name", sa.String(length=200), nullable=True),
        sa.Column("offices", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("record_type", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=True),
        sa.Column("resident_id", sa.Uuid(), nullable=True),
        sa.Column("purpose", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)
    op.create_index("ix_audit_log_resident_at", "audit_log", ["resident_id", "at"], unique=False)


def add_audit_log_authority() -> None:
    """On whose behalf and under which authority an entry's actor acted (``shared.tables``): nullable columns, so
    every entry already written stays as it was."""
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("on_behalf_of", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("authority_kind", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("authority_id", sa.String(length=64), nullable=True))


def drop_audit_log_authority() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("authority_id")
        batch.drop_column("authority_kind")
        batch.drop_column("on_behalf_of")


def add_outbox_stream_sequence() -> None:
    """The stream sequence each published event got (``shared.reconciler``): nullable, so rows sent before it are
    simply not looked at."""
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("stream_seq", sa.BigInteger(), nullable=True))


def drop_outbox_stream_sequence() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("stream_seq")


def drop_audit_log() -> None:
    op.drop_index("ix_audit_log_resident_at", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")


def audit_log_rows() -> sa.TableClause:
    """The audit log's columns, for copying entries in a migration (``op.bulk_insert``)."""
    return sa.table(
        "audit_log",
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("actor", sa.String()),
        sa.column("actor_role", sa.String()),
        sa.column("actor_name", sa.String()),
        sa.column("offices", sa.JSON()),
        sa.column("action", sa.String()),
        sa.column("record_type", sa.String()),
        sa.column("record_id", sa.String()),
        sa.column("resident_id", sa.Uuid()),
        sa.column("purpose", sa.String()),
    )


def move_into_audit_log(
    source: sa.TableClause, indexes: Sequence[str], entry: Callable[[sa.RowMapping], dict[str, Any]]
) -> None:
    """Replace a service's own audit table by the platform audit log, keeping every entry in its order: the old
    rows are read, the old table dropped, the new one created and each row written through ``entry``."""
    bind = op.get_bind()
    rows = bind.execute(sa.select(source).order_by(source.c.id)).mappings().all()
    for index in indexes:
        op.drop_index(index, table_name=source.name)
    op.drop_table(source.name)
    create_audit_log()
    if rows:
        op.bulk_insert(audit_log_rows(), [entry(row) for row in rows])
