"""Partner webhooks per the Standard Webhooks specification (https://www.standardwebhooks.com).

Every request carries ``webhook-id`` (the delivery's id: the same on every retry, so a partner can drop a copy it
already processed), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`` keyed with the subscription's secret ``whsec_<base64 key>``. Right after a rotation the
previous secret signs too, so the header then holds two space-separated signatures until the grace period ends.

Webhook URLs must be http(s) and may not point at forbidden address ranges (loopback, private, link-local, cloud
metadata... per settings). The check runs when a subscription is created and again before every delivery, because
what a name resolves to can change after it was accepted; and the delivery connects to the very address the check
approved (the Host header and TLS server name stay the partner's name), so a name re-pointed between the check and
the connection (DNS rebinding) cannot steer a request into the internal network.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format prefix, not a secret
SECRET_BYTES = 32

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# ---------------------------------------------------------------------------------------------- signing


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(signing_secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in signing_secrets)


def webhook_headers(
    signing_secrets: Sequence[str], msg_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    timestamp = int(now if now is not None else time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(signing_secrets, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": "OneStop-Webhooks/1.0",
    }


# ---------------------------------------------------------------------------------------------- where it may go


class UnsafeUrl(ValueError):
    """The webhook URL may not be used; the message says why (for the partner)."""


@dataclass(frozen=True)
class AddressPolicy:
    forbidden: tuple[IPNetwork, ...]
    allowed: tuple[IPNetwork, ...]

    @classmethod
    def from_settings(cls, forbidden: Iterable[str], allowed: Iterable[str]) -> AddressPolicy:
        return cls(
            tuple(ipaddress.ip_network(n, strict=False) for n in forbidden),
            tuple(ipaddress.ip_network(n, strict=False) for n in allowed),
        )

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed):
            return True
        return not any(address in network for network in self.forbidden)


async def check_url(url: str, policy: AddressPolicy) -> list[IPAddress]:
    """Raise :class:`UnsafeUrl` unless ``url`` is http(s) and every address its host resolves to is permitted;
    return those addresses."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("must be an http or https URL")
    if not parts.hostname:
        raise UnsafeUrl("has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("must not carry credentials; the signature authenticates us")
    if parts.fragment:
        raise UnsafeUrl("must not have a fragment")
    host = parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = await _resolve(host, port)
    for address in addresses:
        if not policy.permits(address):
            raise UnsafeUrl("points at a forbidden address range")
    return addresses


def _literal(host: str) -> IPAddress | None:
    """The address a host written as an IP literal names (an IPv6 zone id dropped), else None."""
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None


async def _resolve(host: str, port: int) -> list[IPAddress]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeUrl("does not resolve") from None
    addresses = []
    for info in infos:
        raw = str(info[4][0]).split("%")[0]
        try:
            addresses.append(ipaddress.ip_address(raw))
        except ValueError:
            continue
    if not addresses:
        raise UnsafeUrl("does not resolve")
    return addresses


# ---------------------------------------------------------------------------------------------- sending


def pinned(url: str, address: IPAddress) -> tuple[httpx.URL, str, dict[str, Any]]:
    """The URL rewritten to connect to ``address``, the Host header naming the original host, and for https the
    TLS server name (SNI, and the name the certificate is verified against) of the original host."""
    original = httpx.URL(url)
    host_header = original.netloc.decode("ascii")
    extensions: dict[str, Any] = {}
    if original.scheme == "https" and _literal(original.host) is None:
        extensions["sni_hostname"] = original.raw_host.decode("ascii")
    return original.copy_with(host=str(address)), host_header, extensions


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status_code: int | None
    error: str | None


async def post(
    client: httpx.AsyncClient,
    url: str,
    *,
    msg_id: str,
    body: bytes,
    signing_secrets: Sequence[str],
    policy: AddressPolicy,
    timeout: float,
) -> Attempt:
    try:
        addresses = await check_url(url, policy)
    except UnsafeUrl as exc:
        return Attempt(False, None, f"URL refused: {exc}")
    target, host_header, extensions = pinned(url, addresses[0])
    headers = {**webhook_headers(signing_secrets, msg_id, body), "host": host_header}
    try:
        # Redirects are not followed: a redirect could lead to an address the check above would refuse.
        response = await client.post(
            target, content=body, headers=headers, timeout=timeout, follow_redirects=False, extensions=extensions
        )
    except httpx.HTTPError as exc:
        return Attempt(False, None, f"{type(exc).__name__}: could not deliver")
    if response.is_success:
        return Attempt(True, response.status_code, None)
    return Attempt(False, response.status_code, f"endpoint answered {response.status_code}")
