"""nats-server authorization for OneStop: one user per service, one per partner (and an operator user).

- A service may publish and subscribe on ``<prefix>.>``, receive replies on ``_INBOX.>``, use the JetStream API of
  the platform's stream only (``$JS.API.STREAM.{INFO,CREATE,UPDATE}.<STREAM>``, ``$JS.API.CONSUMER.*.<STREAM>...``:
  create, look up and pull from its consumers) and acknowledge messages (``$JS.ACK.<STREAM>.>``).
- A partner may subscribe to ``<prefix>.partner.<partner id>.>`` only (where notify republishes the partner views of
  the event types the partner was granted) and may publish nothing. It gets no ``_INBOX.>``: pull-consumer deliveries
  to the services travel on ``_INBOX`` subjects, so that permission would let a partner read every internal event.
  A core-NATS subscriber needs no inbox.
- The operator user (optional) may do anything: tooling and tests that watch the whole stream.

``render_authorization`` returns the ``authorization { users = [...] }`` block to append to (or ``include`` from) a
nats-server configuration. Passwords are kept one per file under a directory (created on first use, reused after,
readable by the owner only); the server config holds them in clear, so it must be protected the same way.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.bus import stream_name
from shared.yamlfile import load_yaml

PARTNER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{1,39}$")
OPERATOR_USER = "ops"


@dataclass(frozen=True)
class Permissions:
    publish_allow: tuple[str, ...] = ()
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()
    unrestricted: bool = False


@dataclass(frozen=True)
class NatsUser:
    name: str
    password: str = field(repr=False)
    permissions: Permissions
    comment: str = ""


def partner_user_name(partner_id: str) -> str:
    return f"partner-{partner_id}"


def service_permissions(prefix: str) -> Permissions:
    stream = stream_name(prefix)
    api = "$JS.API"
    return Permissions(
        publish_allow=(
            f"{prefix}.>",
            f"{api}.INFO",
            f"{api}.STREAM.NAMES",
            f"{api}.STREAM.INFO.{stream}",
            f"{api}.STREAM.CREATE.{stream}",
            f"{api}.STREAM.UPDATE.{stream}",
            f"{api}.CONSUMER.CREATE.{stream}",
            f"{api}.CONSUMER.CREATE.{stream}.>",
            f"{api}.CONSUMER.DURABLE.CREATE.{stream}.>",
            f"{api}.CONSUMER.INFO.{stream}.>",
            f"{api}.CONSUMER.NAMES.{stream}",
            f"{api}.CONSUMER.MSG.NEXT.{stream}.>",
            f"$JS.ACK.{stream}.>",
        ),
        subscribe_allow=(f"{prefix}.>", "_INBOX.>"),
    )


def partner_permissions(prefix: str, partner_id: str) -> Permissions:
    if not PARTNER_ID.match(partner_id):
        raise ValueError(f"invalid partner id {partner_id!r}: lower-case letters, digits, '-' and '_' only")
    return Permissions(publish_deny=(">",), subscribe_allow=(f"{prefix}.partner.{partner_id}.>",))


def render_authorization(users: Sequence[NatsUser]) -> str:
    """The nats-server ``authorization`` block for ``users``."""
    names = [u.name for u in users]
    if len(set(names)) != len(names):
        raise ValueError("duplicate NATS user names")
    lines = ["authorization {", "  users = ["]
    for user in users:
        if user.comment:
            lines.append(f"    # {user.comment}")
        lines.append("    {")
        lines.append(f"      user: {_quote(user.name)}")
        lines.append(f"      password: {_quote(user.password)}")
        if not user.permissions.unrestricted:
            lines.append("      permissions: {")
            lines += _rule("publish", user.permissions.publish_allow, user.permissions.publish_deny)
            lines += _rule("subscribe", user.permissions.subscribe_allow, user.permissions.subscribe_deny)
            lines.append("      }")
        lines.append("    }")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def _rule(kind: str, allow: Sequence[str], deny: Sequence[str]) -> list[str]:
    parts = []
    if allow:
        parts.append(f"allow: [{', '.join(_quote(s) for s in allow)}]")
    if deny:
        parts.append(f"deny: [{', '.join(_quote(s) for s in deny)}]")
    if not parts:
        parts.append(f"deny: [{_quote('>')}]")
    return [f"        {kind}: {{ {', '.join(parts)} }}"]


def _quote(value: str) -> str:
    # JSON string syntax is valid nats-server config syntax; quoted strings are taken literally ($JS is no variable).
    return json.dumps(value)


# ---------------------------------------------------------------------------------------------- passwords


class PasswordStore:
    """One password per user, one file each (mode 0600), created on first use and reused after."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, user: str) -> Path:
        if not re.match(r"^[A-Za-z0-9_.-]+$", user):
            raise ValueError(f"invalid user name {user!r}")
        return self.directory / user

    def get(self, user: str) -> str:
        path = self.path(user)
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        password = secrets.token_urlsafe(24)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(password + "\n")
        try:
            os.link(tmp, path)  # never replaces a password another process wrote meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text(encoding="utf-8").strip()


# ---------------------------------------------------------------------------------------------- partners file


@dataclass(frozen=True)
class PartnerEntry:
    id: str
    name: str


def load_partners(path: Path) -> list[PartnerEntry]:
    """Partner ids (and names) from a partners YAML (``partners: [{id, name, ...}]``, see
    services/notify/partners.yaml)."""
    raw: Any = load_yaml(path) or {}
    out = []
    for item in raw.get("partners") or []:
        partner_id = str(item.get("id", ""))
        if not PARTNER_ID.match(partner_id):
            raise ValueError(f"{path}: invalid partner id {partner_id!r}")
        out.append(PartnerEntry(partner_id, str(item.get("name") or partner_id)))
    return out


def platform_users(
    *,
    prefix: str,
    services: Iterable[str],
    partners: Iterable[PartnerEntry],
    passwords: PasswordStore,
    operator: bool = True,
) -> list[NatsUser]:
    users = [NatsUser(name, passwords.get(name), service_permissions(prefix), f"service {name}") for name in services]
    users += [
        NatsUser(
            partner_user_name(p.id),
            passwords.get(partner_user_name(p.id)),
            partner_permissions(prefix, p.id),
            f"partner {p.id}: {p.name}".replace("\n", " "),
        )
        for p in partners
    ]
    if operator:
        users.append(
            NatsUser(
                OPERATOR_USER, passwords.get(OPERATOR_USER), Permissions(unrestricted=True), "operator: everything"
            )
        )
    return users
