"""A stand-in for the mail relay outside the platform: a real SMTP server (aiosmtpd) on loopback, with STARTTLS and
AUTH required, that keeps what it received and can refuse chosen recipients."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import ipaddress
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from onestop.runner import unused_port


@dataclass
class MailServer:
    host: str
    port: int
    received: list[EmailMessage] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    logins: list[str] = field(default_factory=list)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.received if m["To"] == address]

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            # As real servers do, the refusal quotes the address (which notify must not keep or publish).
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(message)
        return "250 Message accepted"


def self_signed(directory: Path) -> ssl.SSLContext:
    """A server's TLS context, its certificate for 127.0.0.1 signed by itself (chaining to no CA a client trusts)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


@contextlib.contextmanager
def mail_server(directory: Path, *, user: str, password: str) -> Iterator[MailServer]:
    """A real SMTP server on loopback that requires STARTTLS and AUTH with ``user`` and ``password``, as a mail relay
    would (its certificate is made in ``directory``)."""
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd warns about its own deprecated internals
    mail = MailServer("127.0.0.1", unused_port())

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            user.encode(),
            password.encode(),
        )
        if ok:
            mail.logins.append(mechanism)
        return AuthResult(success=ok)

    controller = Controller(
        mail,
        hostname=mail.host,
        port=mail.port,
        tls_context=self_signed(directory),
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    controller.start()
    try:
        yield mail
    finally:
        controller.stop()
