"""``onestop``: run the platform, mint tokens, migrate, seed, check status, compare the catalogue between two dates,
run a screening with a progress bar, regenerate the AsyncAPI document."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from onestop.postgres import PostgresError
from onestop.registry import BY_NAME, PORTAL, ROOT, SERVICES
from onestop.runner import Platform, PlatformConfig, PlatformError
from onestop.supervisor import GaveUp
from shared.auth import Role, TokenIssuer, ensure_keypair
from shared.migrations import revision, upgrade

ASYNCAPI_PATH = ROOT / "docs" / "asyncapi.yaml"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "run": cmd_run,
        "token": cmd_token,
        "migrate": cmd_migrate,
        "seed": cmd_seed,
        "init": cmd_init,
        "status": cmd_status,
        "catalogue": cmd_catalogue,
        "registry": cmd_registry,
        "backup": cmd_backup,
        "restore": cmd_restore,
        "screen": cmd_screen,
        "asyncapi": cmd_asyncapi,
        "revision": cmd_revision,
    }[args.command]
    return handler(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onestop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="start NATS, the four services and the portal (what `make run` does)")
    run.add_argument("--var", type=Path, default=Path("var"), help="where data, keys and logs live (default: var)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--no-seed", action="store_true", help="do not load the seed data")
    run.add_argument("--console-logs", action="store_true", help="services log to this console, not var/logs")
    run.add_argument(
        "--postgres", action="store_true", help="a local PostgreSQL under <var>/postgres, one database per service"
    )
    run.add_argument("--postgres-port", type=int, default=5433, help="its port (default 5433)")
    run.add_argument("--cluster", action="store_true", help="a 3-node JetStream cluster with replicated (R3) streams")
    run.add_argument("--replicas", type=int, default=1, help="processes per service (default 1)")
    run.add_argument(
        "--workers",
        action="store_true",
        help="each service's consumers in a worker process of their own at a lower CPU priority, so that requests "
        "are answered first when the CPUs are short",
    )
    run.add_argument(
        "--worker-nice", type=int, default=10, choices=range(20), metavar="0-19",
        help="how much lower the workers' CPU priority is (nice; default 10)",
    )  # fmt: skip

    token = commands.add_parser("token", help="print a signed JWT from the embedded issuer")
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--resident", help="resident id (role resident)")
    token.add_argument("--office", action="append", default=[], help="office code (caseworker/supervisor; repeatable)")
    token.add_argument("--partner", help="partner id (role partner)")
    token.add_argument("--service", help="service name (role service)")
    token.add_argument("--subject", help="the token's subject (default: derived from the role)")
    token.add_argument("--name", help="a display name, e.g. the caseworker's")
    token.add_argument("--ttl", type=int, default=8 * 3600, help="lifetime in seconds (default 8 hours)")
    token.add_argument("--var", type=Path, default=Path("var"))

    migrate = commands.add_parser("migrate", help="apply each service's migrations to its database")
    migrate.add_argument("--service", choices=list(BY_NAME))

    seed = commands.add_parser("seed", help="load the seed data (safe to repeat)")
    seed.add_argument("--service", choices=list(BY_NAME))

    init = commands.add_parser("init", help="issuer keys, migrations and seed data (a deployment's one-shot setup)")
    init.add_argument("--var", type=Path, default=Path("var"), help="where the issuer keys go (keys/ below it)")

    status = commands.add_parser("status", help="health of every service, the portal and NATS")
    status.add_argument("--host", default="127.0.0.1")
    status.add_argument("--nats-monitor", default="http://127.0.0.1:8222")

    catalogue = commands.add_parser("catalogue", help="the program catalogue")
    catalogue_commands = catalogue.add_subparsers(dest="catalogue_command", required=True)
    diff = catalogue_commands.add_parser(
        "diff", help="what changed between the rule versions in force on two dates (YAML, or the database)"
    )
    diff.add_argument("first", type=dt.date.fromisoformat, help="a date, YYYY-MM-DD")
    diff.add_argument("second", type=dt.date.fromisoformat, help="a later (or earlier) date, YYYY-MM-DD")
    diff.add_argument(
        "--database-url", help="read the catalogue the eligibility service serves from its database, not the YAML"
    )
    diff.add_argument("--catalogue-dir", type=Path, help="the YAML catalogue (default: the eligibility service's)")
    check = catalogue_commands.add_parser(
        "check", help="list the rule versions proactive screening cannot judge in columns (judged per record)"
    )
    check.add_argument("--catalogue-dir", type=Path, help="the YAML catalogue (default: the eligibility service's)")

    registry = commands.add_parser("registry", help="a synthetic resident registry, for screening at scale")
    registry_commands = registry.add_subparsers(dest="registry_command", required=True)
    generate = registry_commands.add_parser("generate", help="write a synthetic population to Parquet (and a manifest)")
    generate.add_argument("--residents", type=int, required=True, help="how many residents (whole households)")
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--as-of", type=dt.date.fromisoformat, help="the registry's day (default: today)")
    generate.add_argument("--out", type=Path, default=Path("var/registry"), help="directory (default var/registry)")
    load = registry_commands.add_parser("load", help="fill eligibility's registry projection from the Parquet")
    load.add_argument("--from", dest="source", type=Path, default=Path("var/registry"))
    load.add_argument("--database-url", help="eligibility's database (default: its settings)")
    load.add_argument("--replace", action="store_true", help="empty the projection first (drills and benchmarks)")

    backup = commands.add_parser(
        "backup", help="an online backup of every service's SQLite database, with where its consumers stood"
    )
    backup.add_argument("--var", type=Path, default=Path("var"))
    backup.add_argument("--to", type=Path, help="an empty directory (default: <var>/backups/<UTC time>)")
    backup.add_argument(
        "--positions-only", action="store_true", help="only the consumers' positions (before a pg_dump: README)"
    )
    backup.add_argument(
        "--seal", type=Path, metavar="DIR", help="record the stream's position in DIR's manifest (after the dumps)"
    )

    restore = commands.add_parser(
        "restore", help="put a backup back (the platform stopped); its consumers are rewound at the next run"
    )
    restore.add_argument("backup", type=Path, help="a directory `onestop backup` wrote")
    restore.add_argument("--var", type=Path, default=Path("var"))
    restore.add_argument(
        "--positions-only", action="store_true", help="only plan the consumers' rewind (after a pg_restore: README)"
    )

    screen = commands.add_parser(
        "screen", help="run a proactive screening of every consenting resident in the background, with a progress bar"
    )
    screen.add_argument("--url", default=f"http://127.0.0.1:{BY_NAME['eligibility'].port}", help="eligibility")
    screen.add_argument("--token", help="an administrator's or supervisor's token (default: minted from --var)")
    screen.add_argument("--var", type=Path, default=Path("var"), help="where the issuer keys are (keys/ below it)")
    screen.add_argument("--program", action="append", dest="programs", help="only this program (repeatable)")
    screen.add_argument("--as-of", help="judge by the rules in force on this date (YYYY-MM-DD; default today)")
    screen.add_argument("--no-wait", action="store_true", help="queue it and return at once")
    screen.add_argument("--interval", type=float, default=0.5, help="seconds between progress reads")

    asyncapi = commands.add_parser("asyncapi", help="write the AsyncAPI document generated from the event catalogue")
    asyncapi.add_argument("--check", action="store_true", help="fail if the committed document is stale")

    rev = commands.add_parser("revision", help="(developers) autogenerate a migration for a service")
    rev.add_argument("service", choices=list(BY_NAME))
    rev.add_argument("-m", "--message", required=True)

    return parser


def run_config(args: argparse.Namespace) -> PlatformConfig:
    """What ``onestop run``'s options ask the runner for."""
    return PlatformConfig(
        var_dir=args.var,
        host=args.host,
        seed=not args.no_seed,
        console_logs=args.console_logs,
        postgres=args.postgres,
        postgres_port=args.postgres_port,
        cluster=args.cluster,
        replicas=args.replicas,
        workers=args.workers,
        worker_nice=args.worker_nice,
    )


def cmd_run(args: argparse.Namespace) -> int:
    try:
        platform = Platform(run_config(args))
    except (PlatformError, PostgresError) as exc:
        print(f"onestop run: {exc}", file=sys.stderr)
        return 2
    for warning in platform.warnings():
        print(f"onestop run: warning: {warning}", file=sys.stderr)
    refused = platform.refusals()
    if refused:
        for line in refused:
            print(f"onestop run: {line}", file=sys.stderr)
        return 2
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    print(f"Starting OneStop: {_what(platform)}, migrations, seed data, four services, the portal...", flush=True)
    try:
        platform.start()
    except (PlatformError, PostgresError) as exc:
        print(f"onestop run: {exc}", file=sys.stderr)
        return 1
    print(_banner(platform, time.monotonic() - started), flush=True)
    code = 0
    while not stopping:
        try:
            # A process that died is restarted with backoff (and reported); one that keeps crashing ends the run.
            platform.supervise()
        except GaveUp as exc:
            print(f"onestop run: stopping the platform: {exc}", file=sys.stderr)
            code = 1
            break
        time.sleep(0.2)
    print("\nStopping OneStop...", flush=True)
    platform.stop()
    print("Stopped.", flush=True)
    return code


def _what(platform: Platform) -> str:
    c = platform.config
    nats = "a 3-node NATS JetStream cluster" if c.cluster else "NATS"
    database = "PostgreSQL" if c.postgres else "SQLite"
    replicas = f", {c.replicas} processes per service" if c.replicas > 1 else ""
    workers = ", a worker per service" if c.workers else ""
    return f"{nats}, {database}{replicas}{workers}"


def _banner(platform: Platform, seconds: float) -> str:
    lines = [f"\nOneStop is running (ready in {seconds:.1f}s).\n"]
    if platform.runs_portal:
        portal = platform.url(PORTAL.name)
        lines += [
            f"  Portal: {portal}  (open it in a browser)",
            "  Sign in: click 'Sign in' and choose a person on the embedded OpenID Connect provider's page",
            f"  ({portal}/idp): a resident per life event, a caseworker per office, a supervisor, an administrator.",
            "",
        ]
    for entry in SERVICES:
        url = platform.url(entry.name)
        lines.append(f"  {entry.name:<12} {url:<24} API docs: {url}/docs")
    if platform.config.replicas > 1:
        lines.append(f"  ({platform.config.replicas} processes per service share each port)")
    for entry in SERVICES:
        for worker in platform.worker_names(entry.name):
            url = platform.process_url(worker)
            lines.append(f"  {worker:<19} {url:<24} its consumers, at CPU priority +{platform.config.worker_nice}")
    for node in platform.nats_nodes:
        url = node.url(platform.config.host)
        monitor = f"   monitoring: http://{platform.config.host}:{node.ports.http}" if node.ports.http else ""
        lines.append(f"  {node.name:<12} {url:<24}{monitor}")
    if platform.postgres is not None:
        lines.append(f"  {'postgres':<12} {platform.postgres.url():<24}   one database per service, data in "
                     f"{platform.postgres.data}")  # fmt: skip
    access = platform.partner_access()
    if access:
        lines += ["", "Partners connect to NATS with their own user and may subscribe to their own subjects only:"]
        for partner_id, user, password_file, subjects in access:
            lines.append(f"  {partner_id:<14} user {user}  password in {password_file}  subscribe {subjects}")
        lines.append(f"  {'operator':<14} user ops  password in {platform.nats_passwords.path('ops')}  (everything)")
    lines += [
        "",
        "Get a token (embedded issuer; keys in var/keys):",
        "  .venv/bin/onestop token --role admin",
        "  .venv/bin/onestop token --role resident --resident <resident id>",
        "  .venv/bin/onestop token --role caseworker --office <office code>",
        "  .venv/bin/onestop token --role partner --partner <partner id>",
        'Then: curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8001/v1/life-events',
        "",
        f"Data, keys and logs: {platform.var}   Health: .venv/bin/onestop status   Ctrl-C stops everything.",
        "A process that dies is restarted (and reported here); one that keeps crashing stops the platform.",
    ]
    return "\n".join(lines)


def cmd_token(args: argparse.Namespace) -> int:
    issuer = TokenIssuer.from_directory(args.var / "keys")
    try:
        print(
            issuer.mint(
                args.role,
                subject=args.subject,
                resident_id=args.resident,
                offices=args.office,
                partner_id=args.partner,
                service=args.service,
                name=args.name,
                ttl_seconds=args.ttl,
            )
        )
    except ValueError as exc:
        print(f"onestop token: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    for entry in SERVICES:
        if args.service and entry.name != args.service:
            continue
        settings = entry.settings()
        asyncio.run(upgrade(settings.database_url, entry.migrations))
        print(f"{entry.name}: migrated")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    for entry in SERVICES:
        if args.service and entry.name != args.service:
            continue
        seeder = entry.seeder()
        if seeder is None:
            continue
        settings = entry.settings()
        asyncio.run(upgrade(settings.database_url, entry.migrations))
        print(f"{entry.name}: {asyncio.run(seeder(settings))}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """What a deployment runs once before the services start (docker-compose's `setup`): safe to repeat."""
    private, public = ensure_keypair(args.var / "keys")
    print(f"issuer keys: {public} (private key {private})")
    issuer = TokenIssuer(private.read_bytes())
    for entry in SERVICES:
        token_file = args.var / "keys" / f"service-{entry.name}.token"
        if not token_file.exists():
            token_file.write_text(issuer.mint(Role.SERVICE, service=entry.name, ttl_seconds=365 * 24 * 3600))
            token_file.chmod(0o644)  # read by the service's own (non-root) user in its container
        print(f"{entry.name}: service token in {token_file}")
    cmd_migrate(argparse.Namespace(service=None))
    return cmd_seed(argparse.Namespace(service=None))


def cmd_status(args: argparse.Namespace) -> int:
    healthy = True
    for name, port in [*((e.name, e.port) for e in SERVICES), (PORTAL.name, PORTAL.port)]:
        url = f"http://{args.host}:{port}/readyz"
        try:
            response = httpx.get(url, timeout=3)
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            checks = body.get("checks", body.get("status"))
            state = "ready" if response.status_code == 200 else f"not ready: {checks}"
            healthy &= response.status_code == 200
        except httpx.HTTPError as exc:
            state, healthy = f"unreachable ({type(exc).__name__})", False
        print(f"{name:<12} {state}")
    try:
        response = httpx.get(f"{args.nats_monitor}/healthz", params={"js-meta-only": "true"}, timeout=3)
        ok = response.status_code == 200
        state = "ok (JetStream meta leader known)" if ok else f"unhealthy: {response.text.strip()}"
        healthy &= response.status_code == 200
    except httpx.HTTPError as exc:
        state, healthy = f"unreachable ({type(exc).__name__})", False
    print(f"{'nats':<12} {state}")
    return 0 if healthy else 1


def cmd_catalogue(args: argparse.Namespace) -> int:
    if args.catalogue_command == "check":
        return cmd_catalogue_check(args)
    from services.eligibility.catalogue import load_files
    from services.eligibility.catalogue_diff import diff_files, diff_stored
    from services.eligibility.facts import CATALOGUE_DIR
    from services.eligibility.repository import Repository
    from shared.db import Database

    async def stored(url: str) -> str:
        db = Database(url)
        try:
            async with db.session() as session:
                return (await diff_stored(Repository(session), args.first, args.second)).render("database")
        finally:
            await db.dispose()

    if args.database_url:
        try:
            print(asyncio.run(stored(args.database_url)), end="")
        except Exception as exc:  # an unreachable or unmigrated database: say so, briefly
            print(f"onestop catalogue diff: cannot read the catalogue from the database: {exc}"[:500], file=sys.stderr)
            return 1
        return 0
    directory = args.catalogue_dir or CATALOGUE_DIR
    print(diff_files(load_files(directory), args.first, args.second).render(f"YAML catalogue in {directory}"), end="")
    return 0


def cmd_catalogue_check(args: argparse.Namespace) -> int:
    from services.eligibility.catalogue import load_files
    from services.eligibility.facts import CATALOGUE_DIR
    from services.eligibility.vectorised import check_catalogue

    directory = args.catalogue_dir or CATALOGUE_DIR
    catalogue = load_files(directory).catalogue()
    found = check_catalogue(catalogue)
    versions = sum(1 for p in catalogue.programs.values() for v in p.versions if not v.superseded)
    if not found:
        print(f"every one of the {versions} rule versions in {directory} is judged in columns by proactive screening")
        return 0
    print(f"{len(found)} of {versions} rule versions are judged per record by proactive screening (the columnar")
    print("compiler cannot translate them; correct, but a few hundred times slower):")
    for code, version, day, reason in found:
        print(f"  {code} v{version} (from {day.isoformat()}): {reason}")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from onestop.population import generate_registry, load_registry

    if args.registry_command == "generate":
        return generate_registry(args.residents, args.seed, args.as_of, args.out)
    return load_registry(args.source, args.database_url, replace=args.replace)


def _databases(platform: Platform, positions_only: bool) -> list[Any]:
    from onestop.backup import sqlite_targets

    if positions_only:
        return []
    return sqlite_targets({e.name: platform.database_url(e) for e in SERVICES})


def cmd_backup(args: argparse.Namespace) -> int:
    from onestop.backup import BackupError, backup, read_last_sequence, read_positions, seal

    platform = Platform(PlatformConfig(var_dir=args.var))
    destination = args.to or platform.var / "backups" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    # Where the running platform's NATS is (onestop run writes it), else the default address.
    nats_url = platform.running_nats_url() or platform.nats_url
    credentials, prefix = platform.nats_credentials(), platform.config.bus_prefix
    try:
        if args.seal:
            sealed = seal(args.seal, read_last_sequence(nats_url, credentials, prefix))
            print(f"stream position {sealed['stream_last_seq']} recorded in {args.seal / 'manifest.json'}")
            return 0
        targets = _databases(platform, args.positions_only)
        # Before the copies: every event acknowledged by then is in them.
        positions = read_positions(nats_url, credentials, prefix)
        if positions is None:
            print(f"onestop backup: NATS ({nats_url}) did not answer: no consumer positions recorded; a restore "
                  "rewinds the consumers by time instead", file=sys.stderr)  # fmt: skip
        manifest = backup(targets, destination, positions=positions, prefix=prefix,
                          positions_only=args.positions_only,
                          last_sequence=lambda: read_last_sequence(nats_url, credentials, prefix))  # fmt: skip
    except BackupError as exc:
        print(f"onestop backup: {exc}", file=sys.stderr)
        return 1
    for service in manifest["databases"]:
        print(f"{service}: {destination / manifest['databases'][service]['file']}")
    print(f"consumer positions: {len(manifest['consumers'] or {})}; manifest: {destination / 'manifest.json'}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from onestop.backup import BackupError, restore

    platform = Platform(PlatformConfig(var_dir=args.var))
    try:
        done = restore(_databases(platform, args.positions_only), args.backup, platform.var,
                       positions_only=args.positions_only)  # fmt: skip
    except BackupError as exc:
        print(f"onestop restore: {exc}", file=sys.stderr)
        return 1
    print("\n".join(done))
    return 0


def cmd_screen(args: argparse.Namespace) -> int:
    from rich.console import Console

    from onestop.screen import ScreenRequest, screen

    token = args.token
    if token is None:
        token = TokenIssuer.from_directory(args.var / "keys").mint(Role.ADMIN, subject="onestop-cli", ttl_seconds=3600)
    request = ScreenRequest(
        url=args.url,
        token=token,
        programs=args.programs,
        as_of=args.as_of,
        wait=not args.no_wait,
        interval=args.interval,
    )
    return screen(request, Console())


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from shared.asyncapi import render

    document = render()
    if args.check:
        if not ASYNCAPI_PATH.exists() or ASYNCAPI_PATH.read_text() != document:
            print(f"{ASYNCAPI_PATH} is stale: run `onestop asyncapi`", file=sys.stderr)
            return 1
        return 0
    ASYNCAPI_PATH.parent.mkdir(parents=True, exist_ok=True)
    ASYNCAPI_PATH.write_text(document)
    print(f"wrote {ASYNCAPI_PATH}")
    return 0


def cmd_revision(args: argparse.Namespace) -> int:
    """Autogenerate against a scratch database at head, so the developer's own data is never touched."""
    import tempfile

    entry = BY_NAME[args.service]
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{scratch}/{entry.name}.db"
        asyncio.run(upgrade(url, entry.migrations))
        asyncio.run(revision(url, entry.migrations, args.message))
    return 0


if __name__ == "__main__":
    sys.exit(main())
