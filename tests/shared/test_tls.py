"""Every HTTP client of a process verifies peers with one context, made once: what httpx would make for each."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import pytest

from shared.tls import verifying_context
from tests.support.smtp import self_signed


def test_one_context_per_process_verifying_peers_as_httpx_would() -> None:
    context = verifying_context()
    assert verifying_context() is context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.get_ca_certs(), "certifi's bundle is loaded"
    own = httpx.create_ssl_context()
    assert {c["serialNumber"] for c in context.get_ca_certs()} == {c["serialNumber"] for c in own.get_ca_certs()}
    assert verifying_context(trust_env=False) is not context
    assert verifying_context(trust_env=False).verify_mode == ssl.CERT_REQUIRED


async def test_a_client_given_the_context_refuses_a_peer_it_cannot_verify(tmp_path: Path) -> None:
    """Not a context that trusts anyone: the handshake with a local server whose certificate signs itself fails."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=self_signed(tmp_path))
    port = server.sockets[0].getsockname()[1]
    async with server, httpx.AsyncClient(verify=verifying_context()) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(f"https://127.0.0.1:{port}/")
