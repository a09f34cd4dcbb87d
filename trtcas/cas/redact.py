"""Credentials out of any text before it is printed or logged.

Why a module of its own: a remote-cache URL, a proxy URL in an exception, an ``Authorization``
header in a debug dump: every message trtcas writes may carry a secret, and CI logs are read by
many. ``redact`` is the one place that knows the shapes, and it errs towards hiding too much:

- URLs of any scheme (``http``, ``grpcs``, ``s3``, ``redis+tls`` ...): everything between
  ``scheme://`` and the *last* ``@`` that is followed by something host-shaped becomes ``***``.
  Userinfo written unencoded can hold ``/``, ``:``, ``@`` or ``?`` (``http://alice:PW/SECRET@
  127.0.0.1:1``), so the first ``/`` cannot end it, as it does in a well-formed URL. The price:
  a URL with an ``@`` in its path (``https://host/@user``) shows ``https://***@user``.
- the values of query parameters that carry secrets (``token=``, ``access_token=``,
  ``password=``, ``sig=``, ``X-Amz-Signature=`` ...) inside such URLs.
- ``Authorization:`` and ``Proxy-Authorization:`` values (header lines, ``'Authorization':
  '...'`` in a repr), the scheme word (``Bearer``, ``Basic`` ...) kept.

Scheme, host, port and path stay readable; text without a URL or such a header is unchanged.
"""

from __future__ import annotations

import re

MASK = "***"

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*")
# What may follow the userinfo's '@': an [IPv6] literal, or a dotted IPv4 or a DNS name whose
# last label starts with a letter (so "repo.git@v1.0" is not read as a host) that does not go on
# as a longer name; then an optional port. Reading too much as a host only masks more.
_HOST = re.compile(
    r"\[[0-9A-Za-z:.%_\-]+\]"
    r"|(?:(?:\d{1,3}\.){3}\d{1,3}|(?:[A-Za-z0-9_\-]+\.)*[A-Za-z_][A-Za-z0-9_\-]*)(?::\d*)?(?![\w\-]|\.[\w\-])",
    re.ASCII,
)
_SECRET_PARAMS = (
    "token", "access_token", "refresh_token", "id_token", "auth_token", "private_token", "api_token",
    "password", "passwd", "pwd", "pass", "secret", "client_secret", "api_key", "apikey", "key",
    "sig", "signature", "auth", "authorization", "credential", "credentials", "session", "code",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature", "x-goog-credential",
)
_QUERY_SECRET = re.compile(
    r"([?&;](?:" + "|".join(re.escape(p) for p in _SECRET_PARAMS) + r")=)[^&#;\s'\"<>]*", re.IGNORECASE | re.ASCII
)
_AUTH_SCHEMES = ("bearer", "basic", "digest", "token", "negotiate", "ntlm", "aws4-hmac-sha256", "hoba",
                 "mutual", "vapid", "scram-sha-1", "scram-sha-256", "signature", "dpop", "apikey")
_HEADER = re.compile(
    r"(?P<name>\b(?:proxy-)?authorization)(?P<close>['\"]?)(?P<sep>[ \t]*[:=][ \t]*)(?P<quote>['\"]?)"
    r"(?P<scheme>(?:" + "|".join(re.escape(s) for s in _AUTH_SCHEMES) + r")[ \t]+)?",
    re.IGNORECASE | re.ASCII,
)


def redact(text: str) -> str:
    """``text`` with URL userinfo, secret query values and ``Authorization`` values masked."""
    text = _URL.sub(lambda m: redact_url_token(m[0]), text)
    return _redact_headers(text)


def redact_url_token(token: str) -> str:
    """One whitespace-free run that starts with ``scheme://``: its userinfo and secret query values masked."""
    start = token.index("://") + 3
    end = userinfo_end(token)
    if end is not None:
        token = f"{token[:start]}{MASK}{token[end:]}"
    return _QUERY_SECRET.sub(lambda m: m[1] + MASK, token)


def userinfo_end(token: str) -> int | None:
    """Where the userinfo of a ``scheme://...`` token ends (the index of its '@'), or None.

    The last '@' followed by a host wins; failing that, the last '@' before the first '/', '?'
    or '#' (a well-formed URL's userinfo, whatever follows it).
    """
    start = token.index("://") + 3
    for at in range(len(token) - 1, start - 1, -1):
        if token[at] == "@" and _HOST.match(token, at + 1):
            return at
    authority = re.split(r"[/?#]", token[start:], maxsplit=1)[0]
    at = authority.rfind("@")
    return start + at if at >= 0 else None


def userinfo(url: str) -> str:
    """The userinfo of ``url`` as ``redact`` would mask it ("" when there is none)."""
    match = _URL.search(url)
    if not match:
        return ""
    end = userinfo_end(match[0])
    return match[0][match[0].index("://") + 3 : end] if end is not None else ""


def _redact_headers(text: str) -> str:
    out, pos = [], 0
    for match in _HEADER.finditer(text):
        if match.start() < pos:
            continue
        quote = match["quote"]
        value_start = match.end()
        if quote:  # 'Authorization': 'Bearer abc' (a repr): the value ends at the closing quote
            close = text.find(quote, value_start)
            value_end = close if close >= 0 else _line_end(text, value_start)
        else:  # a header line: the value is the rest of the line
            value_end = _line_end(text, value_start)
        out.append(text[pos:value_start])
        out.append(MASK if value_end > value_start else "")
        pos = value_end
    out.append(text[pos:])
    return "".join(out)


_EOL = re.compile(r"[\r\n]")


def _line_end(text: str, start: int) -> int:
    match = _EOL.search(text, start)
    return match.start() if match else len(text)
