"""Where a remote is and who we are to it: URL parsing, credentials, redaction.

Credentials (first found wins): ``token=`` or ``user=``/``password=`` arguments, then
``user:password@`` in the URL, then ``$TRTCAS_REMOTE_TOKEN`` (sent as ``Authorization:
Bearer``), then ``$TRTCAS_REMOTE_USER``/``$TRTCAS_REMOTE_PASSWORD`` (basic auth). They are
only ever put in the ``Authorization`` header: every URL in a message, log line or repr is
the redacted one, so a token cannot leak into CI logs.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import unquote, urlsplit

from trtcas.cas.redact import redact, userinfo
from trtcas.errors import TrtcasError

TOKEN_ENV = "TRTCAS_REMOTE_TOKEN"
USER_ENV = "TRTCAS_REMOTE_USER"
PASSWORD_ENV = "TRTCAS_REMOTE_PASSWORD"
_SAFE_SECRET = re.compile(r"^[\x21-\x7e]+$")  # printable, no spaces or line breaks


@dataclass(frozen=True)
class RemoteEndpoint:
    """A parsed remote-cache URL, credentials removed."""

    scheme: str
    host: str
    port: int
    base_path: str  # "" or "/some/prefix", no trailing slash

    @property
    def display(self) -> str:
        """The URL as it may appear in messages (credentials are never part of it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}"


@dataclass(frozen=True)
class Credentials:
    """The value of the ``Authorization`` header, kept out of every repr."""

    kind: str  # "none", "bearer" or "basic"
    header: str | None = field(default=None, repr=False)


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``, for messages and logs."""
    return redact(url.strip())


def parse_remote_url(url: str) -> tuple[RemoteEndpoint, str | None, str | None]:
    """Split a remote-cache URL into endpoint, user and password (percent-decoded)."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TrtcasError(f"malformed remote cache URL {shown!r} ({_without_secrets(str(exc), url)})") from None
    if not parts.scheme:
        raise TrtcasError(f"remote cache URL {shown!r} has no scheme; expected e.g. http://cache.example:8080/trtcas")
    if not parts.hostname:
        raise TrtcasError(f"remote cache URL {shown!r} has no host; expected e.g. http://cache.example:8080/trtcas")
    if parts.query or parts.fragment:
        raise TrtcasError(f"remote cache URL {shown!r} must not have a query or fragment")
    endpoint = RemoteEndpoint(
        parts.scheme,
        parts.hostname,
        port if port is not None else (443 if parts.scheme == "https" else 80),
        parts.path.rstrip("/"),
    )
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return endpoint, user, password


def resolve_credentials(
    url_user: str | None,
    url_password: str | None,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """Pick the credentials to send (see the module docstring for the order)."""
    env = os.environ if env is None else env
    if token and user:
        raise TrtcasError("give the remote cache a token or a user and password, not both")
    candidates = (
        ("bearer", token, None),
        ("basic", user, password),
        ("basic", url_user, url_password),
        ("bearer", env.get(TOKEN_ENV), None),
        ("basic", env.get(USER_ENV), env.get(PASSWORD_ENV)),
    )
    for kind, first, second in candidates:
        if not first:
            continue
        if kind == "bearer":
            _check_secret(first, "the remote cache token")
            return Credentials("bearer", f"Bearer {first}")
        pair = f"{first}:{second or ''}"
        if "\n" in pair or "\r" in pair:
            raise TrtcasError("the remote cache user or password contains a line break")
        return Credentials("basic", "Basic " + base64.b64encode(pair.encode()).decode("ascii"))
    return Credentials("none")


def _check_secret(secret: str, what: str) -> None:
    if not _SAFE_SECRET.match(secret):
        raise TrtcasError(f"{what} contains spaces, line breaks or non-ASCII characters; check {TOKEN_ENV}")


def _without_secrets(text: str, url: str) -> str:
    """``text`` with any credentials of ``url`` cut out (for wrapped parser errors, which quote
    pieces of it: ``Port could not be cast to integer value as 'PW'``)."""
    secret = userinfo(url.strip())
    pieces = sorted({secret, *re.split(r"[:/@]", secret)} - {""}, key=len, reverse=True)
    for piece in pieces:
        text = text.replace(piece, "***")
    return redact(text)
