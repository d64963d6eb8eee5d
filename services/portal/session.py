"""Sessions in sealed cookies, and the CSRF token every form carries.

A session is a small JSON document sealed with Fernet (AES-CBC with an HMAC: signed and encrypted), kept in an
HttpOnly, SameSite=Lax cookie — Lax, not Strict, because the identity provider's redirect back to the portal is a
top-level navigation from another site, on which the sign-in's own cookie must come along. It holds who is signed in,
their access token (the services, not the portal, decide what it allows) and the session's CSRF token. Every visitor
has one, signed in or not, so that the sign-in page's forms carry a CSRF token too; signing in starts a new session
(new id, new CSRF token), and signing out ends it: the cookie is cleared and its id refused until it would have
expired anyway."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.portal.settings import PortalSettings

SESSION_SECRET_NAME = "portal-session.key"  # noqa: S105 - the file's name, not a secret


def session_secret(settings: PortalSettings) -> bytes:
    """The secret sessions are sealed with: from settings, a file, or made once under the keys directory."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    path = settings.session_secret_file or settings.keys_dir / SESSION_SECRET_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Replicas starting together must end up with one secret: each writes its own file, and only the first
        # link wins (a link never replaces); the others read the winner's.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return Path(path).read_text().strip().encode()


class Sealer:
    """Seals and opens small JSON documents for one purpose (its own key, derived from the session secret)."""

    def __init__(self, secret: bytes, purpose: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, document: dict[str, Any]) -> str:
        return self._fernet.encrypt(orjson.dumps(document)).decode()

    def open(self, sealed: str, *, max_age: float | None = None) -> dict[str, Any] | None:
        try:
            raw = self._fernet.decrypt(sealed.encode(), ttl=int(max_age) if max_age is not None else None)
            document = orjson.loads(raw)
        except (InvalidToken, ValueError, TypeError):
            return None
        return document if isinstance(document, dict) else None


@dataclass(frozen=True)
class User:
    """Who is signed in, as the identity provider's ID token says (the portal decides nothing with it but which pages
    to offer: the services authorize every call with the access token)."""

    subject: str
    role: str
    name: str | None = None
    resident_id: str | None = None
    offices: tuple[str, ...] = ()

    @property
    def is_resident(self) -> bool:
        return self.role == "resident"

    @property
    def is_staff(self) -> bool:
        return self.role in ("caseworker", "supervisor", "admin")

    @property
    def supervises(self) -> bool:
        return self.role in ("supervisor", "admin")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass
class Session:
    sid: str = field(default_factory=lambda: uuid.uuid4().hex)
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    expires_at: float = 0.0
    user: User | None = None
    access_token: str | None = None
    # Set when the session must be written back to the cookie (new, signed in, signed out).
    changed: bool = False

    @property
    def signed_in(self) -> bool:
        return self.user is not None and self.access_token is not None and self.expires_at > time.time()

    def document(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "csrf": self.csrf,
            "exp": self.expires_at,
            "user": asdict(self.user) if self.user else None,
            "at": self.access_token,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Session | None:
        try:
            user = document.get("user")
            return cls(
                sid=str(document["sid"]),
                csrf=str(document["csrf"]),
                expires_at=float(document["exp"]),
                user=User(**{**user, "offices": tuple(user.get("offices") or ())}) if user else None,
                access_token=document.get("at"),
            )
        except (KeyError, TypeError, ValueError):
            return None


class Revoked:
    """Ids of sessions signed out before they expired: a copy of their cookie is refused until then. Kept in the
    process (a portal with several replicas shares nothing here: each refuses what it saw signed out; the access
    token in a copied cookie still lapses with its short lifetime)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, sid: str, until: float) -> None:
        with self._lock:
            now = time.time()
            self._until = {s: t for s, t in self._until.items() if t > now}
            self._until[sid] = until

    def __contains__(self, sid: object) -> bool:
        with self._lock:
            until = self._until.get(str(sid))
            return until is not None and until > time.time()


class Sessions:
    """Reads a request's session from its cookie and writes it back."""

    def __init__(self, settings: PortalSettings, secret: bytes) -> None:
        self.settings = settings
        self._sealer = Sealer(secret, "onestop-portal-session")
        self.revoked = Revoked()
        self.cookie_name = "__Host-onestop-session" if settings.cookie_secure else "onestop_session"
        self.max_age = int(settings.session_hours * 3600)

    def load(self, cookie: str | None) -> Session:
        if cookie:
            document = self._sealer.open(cookie, max_age=self.max_age)
            session = Session.from_document(document) if document else None
            if session is not None and session.sid not in self.revoked:
                if session.user is not None and not session.signed_in:
                    # The token lapsed: keep the visitor's session (and its CSRF token), drop who they were.
                    session.user, session.access_token, session.changed = None, None, True
                return session
        return Session(changed=True)

    def seal(self, session: Session) -> str:
        return self._sealer.seal(session.document())

    def start(self, user: User, access_token: str, expires_in: float) -> Session:
        """A new session for someone who just signed in (a new id and CSRF token: no fixation)."""
        lifetime = min(expires_in, self.max_age)
        return Session(user=user, access_token=access_token, expires_at=time.time() + lifetime, changed=True)

    def end(self, session: Session) -> Session:
        if session.user is not None:
            self.revoked.add(session.sid, session.expires_at or time.time() + self.max_age)
        return Session(changed=True)

    def cookie_header(self, session: Session) -> str:
        parts = [
            f"{self.cookie_name}={self.seal(session)}",
            "Path=/",
            f"Max-Age={self.max_age}",
            "HttpOnly",
            "SameSite=Lax",
        ]
        if self.settings.cookie_secure:
            parts.append("Secure")
        return "; ".join(parts)


def csrf_matches(session: Session, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(session.csrf.encode(), (offered or "").encode())


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]
