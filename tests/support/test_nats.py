"""The suite's own NATS server: it starts where it says, or says it did not."""

from __future__ import annotations

import socket
from pathlib import Path

import nats

from tests.support.nats import NatsServer


async def test_a_server_whose_port_was_taken_meanwhile_starts_on_another_and_is_the_one_answering(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", server.port))  # someone else listens there first (another worker's server)
        squatter.listen()
        taken = server.port
        server.start()
        try:
            assert server.port != taken
            client = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=0)
            try:
                assert client.connected_url is not None
                assert client.connected_url.port == server.port
                assert client._server_info.get("server_name") == f"test-{server.port}"
            finally:
                await client.close()
        finally:
            server.stop()
