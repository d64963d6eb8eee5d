"""``onestop backup`` and ``onestop restore`` for the SQLite databases `onestop run` keeps.

A service keeps everything in one database: its data, its outbox (events not yet published) and its inbox (events
already handled). One online backup of that file (SQLite's backup API, safe while the service writes) is therefore
consistent for the service: a state and the events announcing it are in it together, or neither is.

What a database cannot hold is the stream. A restore puts the whole platform back to the moment of the backup, and
the stream must go back with it:

- Each consumer's acknowledgement floor is recorded *before* the databases are copied (every event acknowledged by
  then is in the copies); a restore rewinds each consumer to just after its floor. Events handled before the backup
  are in the restored inbox and acknowledged without effects; the rest are handled again, once.
- The stream's last sequence is recorded *after* the copies: every event an outbox in the copies marked as
  published is at or below it. A restore deletes the events after it — the work of the lost time after the backup,
  which the restored services do again (with new ids: left in the stream, they would be told twice). Rows the copies
  hold unpublished are published again by their relay.

The rewind needs NATS, which is down while restoring, so the restore leaves a plan (``<var>/nats/rewind.json``) that
the next `onestop run` carries out before any service starts. (An event deleted this way and published again within
JetStream's duplicate window — two minutes after the original — would be taken for a duplicate: restore a backup
taken at least that long before, which any real one is.)

PostgreSQL deployments: ``--positions-only`` records (backup) and plans (restore) the consumer positions around the
operator's own ``pg_dump`` / ``pg_restore`` (README, "Backup and restore").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import DeliverPolicy
from sqlalchemy.engine import make_url

from onestop.registry import SERVICES
from shared.bus import stream_name

MANIFEST = "manifest.json"
REWIND = Path("nats") / "rewind.json"
# Without recorded positions (NATS was unreachable at backup time), consumers are rewound to this long before the
# backup was taken: longer than any consumer lags in a healthy platform. The inbox drops what was handled already.
TIME_MARGIN = dt.timedelta(minutes=30)


class BackupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Target:
    service: str
    path: Path  # the SQLite file


def sqlite_targets(urls: dict[str, str]) -> list[Target]:
    """Each service's SQLite file; a service on another database (PostgreSQL) is refused with what to do instead."""
    targets = []
    for service, url in urls.items():
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            raise BackupError(
                f"{service} keeps its data in {parsed.get_backend_name()}, not SQLite: back it up with pg_dump around "
                "`onestop backup --positions-only` (README, Backup and restore)"
            )
        if not parsed.database or parsed.database == ":memory:":
            raise BackupError(f"{service}: no database file in {url}")
        targets.append(Target(service, Path(parsed.database)))
    return targets


# ---------------------------------------------------------------------------------------------- consumer positions


async def stream_last_sequence(nats_url: str, credentials: dict[str, str], prefix: str, *, timeout: float = 3.0) -> int:
    nc = await nats.connect(nats_url.split(","), connect_timeout=timeout, allow_reconnect=False, **credentials)
    try:
        info = await nc.jetstream(timeout=timeout).stream_info(stream_name(prefix))
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def consumer_positions(
    nats_url: str, credentials: dict[str, str], prefix: str, *, timeout: float = 3.0
) -> dict[str, int]:
    """Each service consumer's acknowledgement floor (a stream sequence)."""
    urls = nats_url.split(",")
    nc = await nats.connect(urls, connect_timeout=timeout, allow_reconnect=False, **credentials)
    try:
        infos = await nc.jetstream(timeout=timeout).consumers_info(stream_name(prefix))
        services = tuple(f"{s.name}-" for s in SERVICES)
        return {
            info.name: int(info.ack_floor.stream_seq if info.ack_floor else 0)
            for info in infos
            if info.name.startswith(services)
        }
    finally:
        await nc.close()


async def rewind(nats_url: str, credentials: dict[str, str], prefix: str, plan: dict[str, Any]) -> list[str]:
    """Carry out a restore's plan: each named consumer starts again just after where it stood at the backup (or,
    without positions, at a time before it). Returns what was done, for the log."""
    nc = await nats.connect(nats_url.split(","), connect_timeout=5, **credentials)
    done = []
    try:
        js = nc.jetstream(timeout=10)
        stream = stream_name(prefix)
        last = plan.get("stream_last_seq")
        if last is not None:
            now_last = int((await js.stream_info(stream)).state.last_seq)
            deleted = 0
            for seq in range(int(last) + 1, now_last + 1):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_msg(stream, seq)
                    deleted += 1
            done.append(f"stream {stream}: {deleted} events after the backup (sequence {last}) deleted")
        durables: dict[str, int] = plan.get("consumers") or {}
        if not durables and plan.get("start_time"):
            services = tuple(f"{s.name}-" for s in SERVICES)
            durables = {i.name: 0 for i in await js.consumers_info(stream) if i.name.startswith(services)}
        for durable, floor in sorted(durables.items()):
            try:
                info = await js.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                done.append(
                    f"{durable}: not on the stream (its service creates it and reads the stream from the start)"
                )
                continue
            config = info.config
            if plan.get("consumers"):
                config.deliver_policy, config.opt_start_seq, config.opt_start_time = (
                    DeliverPolicy.BY_START_SEQUENCE, floor + 1, None)  # fmt: skip
                where = f"stream sequence {floor + 1}"
            else:
                config.deliver_policy, config.opt_start_seq, config.opt_start_time = (
                    DeliverPolicy.BY_START_TIME, None, plan["start_time"])  # fmt: skip
                where = plan["start_time"]
            await js.delete_consumer(stream, durable)
            await js.add_consumer(stream, config=config)
            done.append(f"{durable}: rewound to {where}")
    finally:
        await nc.close()
    return done


# ---------------------------------------------------------------------------------------------- backup


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def online_copy(source: Path, destination: Path) -> None:
    """SQLite's online backup: a consistent copy while the service keeps writing (pages it changes meanwhile are
    copied again), WAL included."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(destination)
    try:
        with dst:
            src.backup(dst, pages=1024, sleep=0.005)
        dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
    finally:
        dst.close()
        src.close()


def backup(
    targets: list[Target],
    destination: Path,
    *,
    positions: dict[str, int] | None,
    prefix: str,
    positions_only: bool = False,
    last_sequence: Callable[[], int | None] = lambda: None,
) -> dict[str, Any]:
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        raise BackupError(f"{destination} is not empty")
    manifest: dict[str, Any] = {
        "format": 1,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "bus_prefix": prefix,
        # Read before the databases were copied: every event acknowledged by then is in them.
        "consumers": positions,
        "databases": {},
    }
    if not positions_only:
        for target in targets:
            if not target.path.exists():
                raise BackupError(f"{target.service}: {target.path} does not exist")
            copy = destination / f"{target.service}.db"
            online_copy(target.path, copy)
            check = sqlite3.connect(copy)
            try:
                if check.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    raise BackupError(f"{target.service}: the copy of {target.path} fails its integrity check")
            finally:
                check.close()
            manifest["databases"][target.service] = {"file": copy.name, "sha256": _sha256(copy)}
    # After the copies: every event an outbox in them marked published is at or below it. (With the operator's own
    # dumps, `onestop backup --seal` records it once they are done.)
    manifest["stream_last_seq"] = last_sequence() if positions is not None and not positions_only else None
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------------- restore


def in_use(target: Target) -> bool:
    """Whether a running service holds the database: its outbox relay holds a lock beside it while it runs."""
    lock = Path(f"{target.path}.relay-lock")
    if not lock.exists():
        return False
    with open(lock, "ab") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def seal(source: Path, last_sequence: int | None) -> dict[str, Any]:
    """Record the stream's last sequence in a backup whose databases the operator dumped themselves (PostgreSQL)."""
    if last_sequence is None:
        raise BackupError("NATS did not answer: the stream's last sequence cannot be recorded")
    manifest = read_manifest(source)
    manifest["stream_last_seq"] = last_sequence
    (source / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(source: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source} holds no readable {MANIFEST}: {exc}") from exc
    return manifest


def restore(targets: list[Target], source: Path, var: Path, *, positions_only: bool = False) -> list[str]:
    manifest = read_manifest(source)
    done = []
    if not positions_only:
        busy = [t.service for t in targets if in_use(t)]
        if busy:
            raise BackupError(f"{', '.join(busy)} running on the database(s) to restore: stop the platform first")
        wanted = {t.service for t in targets}
        if set(manifest["databases"]) != wanted:
            raise BackupError(f"the backup holds {sorted(manifest['databases'])}, the platform {sorted(wanted)}")
        for target in targets:
            entry = manifest["databases"][target.service]
            copy = source / entry["file"]
            if _sha256(copy) != entry["sha256"]:
                raise BackupError(f"{copy} is not the file that was backed up (checksum differs)")
        for target in targets:
            copy = source / manifest["databases"][target.service]["file"]
            target.path.parent.mkdir(parents=True, exist_ok=True)
            staged = target.path.with_name(target.path.name + ".restoring")
            shutil.copyfile(copy, staged)
            for stale in (Path(f"{target.path}-wal"), Path(f"{target.path}-shm")):
                stale.unlink(missing_ok=True)
            staged.replace(target.path)
            done.append(f"{target.service}: {target.path} restored from {copy}")
    plan: dict[str, Any] = {"bus_prefix": manifest["bus_prefix"], "backup": str(source)}
    if manifest.get("consumers"):
        plan["consumers"] = manifest["consumers"]
        plan["stream_last_seq"] = manifest.get("stream_last_seq")
    else:
        created = dt.datetime.fromisoformat(manifest["created_at"])
        plan["start_time"] = (created - TIME_MARGIN).isoformat()
    rewind_file = var / REWIND
    rewind_file.parent.mkdir(parents=True, exist_ok=True)
    rewind_file.write_text(json.dumps(plan, indent=2) + "\n")
    done.append(f"consumers will be rewound when the platform next starts ({rewind_file})")
    return done


def pending_rewind(var: Path) -> dict[str, Any] | None:
    path = var / REWIND
    if not path.exists():
        return None
    plan: dict[str, Any] = json.loads(path.read_text())
    return plan


def finish_rewind(var: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (var / REWIND).unlink()


def read_positions(nats_url: str, credentials: dict[str, str], prefix: str) -> dict[str, int] | None:
    try:
        return asyncio.run(consumer_positions(nats_url, credentials, prefix))
    except (OSError, TimeoutError, nats.errors.Error, nats.js.errors.Error):
        return None


def read_last_sequence(nats_url: str, credentials: dict[str, str], prefix: str) -> int | None:
    try:
        return asyncio.run(stream_last_sequence(nats_url, credentials, prefix))
    except (OSError, TimeoutError, nats.errors.Error, nats.js.errors.Error):
        return None
