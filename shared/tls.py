"""One TLS context for every HTTP client of the process. httpx makes its own for each client, loading certifi's CA
bundle (about 55 ms of CPU each); a service makes a few clients as it starts and the test suite hundreds of
services. A context verifies peers the same however many connections use it."""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def verifying_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """httpx's default context (certifi's bundle; with ``trust_env`` the ``SSL_CERT_FILE``/``SSL_CERT_DIR`` of the
    environment first), made once per process and setting of ``trust_env``."""
    return httpx.create_ssl_context(trust_env=trust_env)
