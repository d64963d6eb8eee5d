"""A webhook is delivered to the address the safety check approved, never to whatever the name resolves to later."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import httpx
import pytest

from services.notify import webhooks
from services.notify.settings import DEFAULT_FORBIDDEN_NETWORKS
from services.notify.webhooks import AddressPolicy, IPAddress, UnsafeUrl, pinned
from tests.support.endpoints import Endpoint

# The defaults, with the loopback the test's endpoint listens on allowed (as the service's tests configure it).
POLICY = AddressPolicy.from_settings(DEFAULT_FORBIDDEN_NETWORKS, ["127.0.0.1/32"])
SECRET = webhooks.new_secret()


class Resolver:
    """DNS for names under .invalid (which never resolve for real): each lookup returns the next answer, as a
    rebinding attacker's name server would."""

    def __init__(self, *answers: str) -> None:
        self.answers = [ipaddress.ip_address(a) for a in answers]
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        assert host.endswith(".invalid")
        answer = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return [answer]


async def deliver(url: str) -> webhooks.Attempt:
    async with httpx.AsyncClient() as client:
        return await webhooks.post(
            client, url, msg_id="msg_1", body=b'{"n": 1}', signing_secrets=[SECRET], policy=POLICY, timeout=5.0
        )


async def test_the_request_goes_to_the_checked_address_with_the_partners_host_name(
    partner_endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checked once: 127.0.0.1 (allowed). Any second lookup would answer the cloud metadata address.
    resolver = Resolver("127.0.0.1", "169.254.169.254")
    monkeypatch.setattr(webhooks, "_resolve", resolver)
    port = urlsplit(partner_endpoint.url).port

    attempt = await deliver(f"http://partner.invalid:{port}/hooks/onestop?v=1")

    assert attempt.ok, attempt.error
    assert resolver.lookups == 1
    [received] = partner_endpoint.requests
    assert received.path == "hooks/onestop"
    assert received.headers["host"] == f"partner.invalid:{port}"
    assert received.headers["webhook-id"] == "msg_1"
    assert received.body == b'{"n": 1}'


async def test_a_name_that_resolves_to_a_forbidden_range_is_not_contacted(
    partner_endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "_resolve", Resolver("169.254.169.254"))
    port = urlsplit(partner_endpoint.url).port

    attempt = await deliver(f"http://partner.invalid:{port}/hooks")

    assert not attempt.ok
    assert attempt.error == "URL refused: points at a forbidden address range"
    assert partner_endpoint.requests == []


@pytest.mark.parametrize(
    ("url", "address", "target", "host", "sni"),
    [
        (
            "https://hooks.partner.example/onestop",
            "203.0.113.7",
            "https://203.0.113.7/onestop",
            "hooks.partner.example",
            "hooks.partner.example",
        ),
        (
            "https://bücher.example:8443/h?x=1",
            "2001:db8::5",
            "https://[2001:db8::5]:8443/h?x=1",
            "xn--bcher-kva.example:8443",
            "xn--bcher-kva.example",
        ),
        ("http://partner.example:8080/h", "203.0.113.7", "http://203.0.113.7:8080/h", "partner.example:8080", None),
        ("https://203.0.113.7/h", "203.0.113.7", "https://203.0.113.7/h", "203.0.113.7", None),
    ],
)
def test_pinning_keeps_the_partners_name_for_the_host_header_and_tls(
    url: str, address: str, target: str, host: str, sni: str | None
) -> None:
    pinned_url, host_header, extensions = pinned(url, ipaddress.ip_address(address))
    assert str(pinned_url) == target
    assert host_header == host
    assert extensions.get("sni_hostname") == sni


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://partner.example/h", "must be an http or https URL"),
        ("http://user:pw@partner.example/h", "must not carry credentials; the signature authenticates us"),
        ("http://10.1.2.3/h", "points at a forbidden address range"),
        ("http://[::ffff:169.254.169.254]/h", "points at a forbidden address range"),
    ],
)
async def test_unsafe_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl, match=reason):
        await webhooks.check_url(url, POLICY)
