"""A client for Bazel's HTTP remote-cache protocol, as served by nginx (WebDAV), bazel-remote & co.

The protocol is Bazel's ``--remote_cache=http(s)://...`` one, nothing more:

    GET | HEAD | PUT  <base>/cas/<hex>   the exact bytes of the blob whose digest is <hex>
    GET | HEAD | PUT  <base>/ac/<hex>    the action-cache entry for the action key <hex>

200 is a hit, 404 a miss, and a PUT is answered 200, 201 or 204. So any server that can
store and serve files by path works, which is why a plain nginx with ``dav_methods PUT`` is
enough for a team cache. Two differences from Bazel, both deliberate:

- The value under ``/ac/`` is trtcas's own ``ActionResult.to_bytes()`` (msgpack), not REAPI's
  ``ActionResult`` protobuf: our entries name engine outputs, not files of an exec root. A
  server that validates AC entries (bazel-remote without ``--disable_http_ac_validation``)
  rejects them; nginx does not look.
- ``<hex>`` is in the store's algorithm, blake3 by default. A server that checks ``/cas/``
  uploads against their sha256 needs a sha256 cache dir.

Faults are not misses here: this module raises ``RemoteError`` for them, and the tiered store
(``trtcas.cas.tiered``) is what turns them into warnings and misses. What belongs to the
protocol lives here: streaming in both directions (a multi-GB engine never sits in memory),
one keep-alive connection per thread, timeouts, bounded retries with exponential backoff on
connection errors and 5xx (never on a 404 or another 4xx: asking again gets the same
answer), and a circuit breaker that turns the remote off for the rest of the process after a
few consecutive failed requests, so a dead server costs a few timeouts, not one per action.

Credentials are resolved by ``trtcas.cas.remote.url``; https verifies certificates.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
import weakref
from typing import BinaryIO, Callable, Mapping, TypeVar

from trtcas.cas.blobstore import DigestMismatch
from trtcas.cas.digest import CHUNK, DEFAULT_ALGO, Digest, check_algo
from trtcas.cas.remote.breaker import CircuitBreaker
from trtcas.cas.remote.errors import RemoteRejected, RemoteUnavailable
from trtcas.cas.remote.url import PASSWORD_ENV, TOKEN_ENV, USER_ENV, parse_remote_url, resolve_credentials
from trtcas.errors import TrtcasError

log = logging.getLogger(__name__)

T = TypeVar("T")
SCHEMES = ("http", "https")

MAX_ACTION_ENTRY_BYTES = 16 << 20  # an AC entry is a few KB; anything this big is not one
MAX_DRAINED_BYTES = 64 << 10  # error pages are read to keep the connection; bigger bodies close it
DEADLINE_BYTES_PER_S = 16 << 20  # a request's overall deadline grows by 1 s per this many bytes
_PUT_OK = (200, 201, 204)
# What a kept-alive connection that the server closed meanwhile looks like on the next request.
_STALE_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


# ---- reading a response body ------------------------------------------------------------


class _TransportError(Exception):
    """A failure of the connection itself (worth retrying); never escapes this module.

    ``stale`` marks a kept-alive connection found closed by the server before it answered:
    normal for HTTP/1.1 keep-alive, and retried at once on a new connection.
    """

    def __init__(self, message: str, stale: bool = False):
        super().__init__(message)
        self.stale = stale


class ResponseBody:
    """A GET response body as a readable stream for a consumer.

    A connection that breaks mid-body raises (so the request is retried) instead of ending
    the stream early, which ``http.client`` does silently: a short read must not look like
    a blob with wrong bytes, or a flaky network would get a good server distrusted.
    """

    def __init__(self, response: http.client.HTTPResponse):
        self._response = response
        self.length = response.length

    def read(self, amount: int = CHUNK) -> bytes:
        try:
            chunk = self._response.read(amount)
        except (OSError, http.client.HTTPException) as exc:
            raise _TransportError(f"connection broke while reading the body ({_describe(exc)})") from None
        if not chunk and amount and self._response.length:
            raise _TransportError(f"connection closed with {self._response.length} bytes of the body unread")
        return chunk


class _LocalReadError(TrtcasError):
    """Reading the local file being uploaded failed (not the network's fault: no retry)."""


class _UploadBody:
    """The upload stream as ``http.client`` reads it: local read errors told apart from the
    network's, and a stream shorter than the announced length caught before the server
    waits for bytes that never come."""

    def __init__(self, stream: BinaryIO, length: int):
        self._stream = stream
        self._left = length

    def read(self, amount: int = CHUNK) -> bytes:
        try:
            chunk = self._stream.read(min(amount, self._left)) if self._left else b""
        except OSError as exc:
            raise _LocalReadError(f"cannot read the local blob being uploaded ({exc.strerror or exc})") from None
        if not chunk and self._left:
            raise _LocalReadError(f"the local blob being uploaded ended {self._left} bytes early")
        self._left -= len(chunk)
        return chunk


# ---- the client -------------------------------------------------------------------------


def _ack_quickly(conn) -> None:
    """Linux's delayed ACK stalled kept-alive downloads by ~40 ms (measured on loopback:
    5 of 9 GETs of a 200 KB blob after a few small ones); TCP_QUICKACK turns it off. The
    kernel clears the option again as it goes, so it is set per request."""
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None and conn.sock is not None:
        try:
            conn.sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        except OSError:
            pass


class HttpRemote:
    """Bazel-protocol HTTP cache at ``url``: blobs under ``/cas/``, action entries under ``/ac/``.

    Thread-safe; each thread gets its own keep-alive connection. One instance per remote per
    process: the circuit breaker and the list of blobs the remote got wrong live here.

    ``timeout`` bounds connecting and each socket read or write. ``deadline_s`` bounds a whole
    request, retries included, plus 1 s per ``DEADLINE_BYTES_PER_S`` of its body (a 10 GB
    engine may take minutes): a server that drips bytes slowly enough to keep every read
    under ``timeout`` is cut off there, and that counts as a failure for the circuit
    breaker, like a stalled one. ``retries`` is how many more attempts a transport fault or 5xx gets, after
    ``backoff_s``, then twice that, and so on. ``failure_threshold`` consecutive requests
    that failed even so turn the remote off for the rest of the process.
    """

    def __init__(
        self,
        url: str,
        algo: str = DEFAULT_ALGO,
        *,
        timeout: float = 30.0,
        deadline_s: float = 120.0,
        retries: int = 2,
        backoff_s: float = 0.2,
        failure_threshold: int = 3,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        cafile: str | None = None,
        env: Mapping[str, str] | None = None,
    ):
        self.endpoint, url_user, url_password = parse_remote_url(url)
        if self.endpoint.scheme not in SCHEMES:
            raise TrtcasError(f"remote cache URL {self.endpoint.display!r} must start with http:// or https://")
        self.url = self.endpoint.display
        self.algo = check_algo(algo)
        self.timeout = timeout
        self.deadline_s = deadline_s
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self._credentials = resolve_credentials(url_user, url_password, token, user, password, env)
        self._ssl = ssl.create_default_context(cafile=cafile) if self.endpoint.scheme == "https" else None
        self._breaker = CircuitBreaker(failure_threshold)
        self._local = threading.local()
        # Weak: a connection lives as long as its thread's thread-local; this set is only
        # how close() finds the live ones.
        self._connections: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._distrusted: set[Digest] = set()

    def __repr__(self) -> str:
        return f"HttpRemote({self.url!r}, algo={self.algo!r}, auth={self._credentials.kind!r})"

    # ---- health ---------------------------------------------------------------------
    @property
    def disabled(self) -> bool:
        return self._breaker.reason is not None

    @property
    def disabled_reason(self) -> str | None:
        return self._breaker.reason

    def distrust(self, digest: Digest) -> None:
        """Never fetch ``digest`` from this remote again: it served wrong bytes for it."""
        with self._lock:
            self._distrusted.add(digest)

    def trusts(self, digest: Digest) -> bool:
        return digest not in self._distrusted

    # ---- the protocol ---------------------------------------------------------------
    def head_blob(self, digest: Digest) -> bool:
        """Whether the remote has ``digest`` (a stored size that differs counts as absent,
        so the next upload overwrites it)."""
        path = self._path("cas", digest)
        return self._call("HEAD", path, lambda r: self._found(r, path, digest.size))

    def head_action(self, key: Digest) -> bool:
        path = self._path("ac", key)
        return self._call("HEAD", path, lambda r: self._found(r, path, None))

    def get_blob(self, digest: Digest, consume: Callable[[ResponseBody], T]) -> T | None:
        """``consume(body)`` on the blob's bytes as they arrive, or None if the remote has
        no (trusted) copy. ``consume`` may run again if the connection breaks mid-body, so
        it must start afresh each time (a temp file per call does).

        A ``Content-Length`` other than the digest's size raises ``DigestMismatch`` before
        any byte is read; checking the bytes themselves is the consumer's job.
        """
        if not self.trusts(digest):
            return None
        path = self._path("cas", digest)

        def on_response(response: http.client.HTTPResponse) -> T | None:
            if response.status == 404:
                _drain(response)
                return None
            if response.status != 200:
                raise self._rejected("GET", path, response)
            if response.length is not None and response.length != digest.size:
                raise DigestMismatch(f"{self.url} announced {response.length} bytes for {digest}")
            return consume(ResponseBody(response))

        return self._call("GET", path, on_response, size=digest.size)

    def put_blob(self, digest: Digest, open_stream: Callable[[], BinaryIO]) -> None:
        """Upload ``digest``'s bytes, streamed from ``open_stream()`` (called once per attempt,
        so a retry starts from the first byte again)."""
        path = self._path("cas", digest)
        self._call("PUT", path, lambda r: self._stored(r, "PUT", path), body=open_stream, length=digest.size)

    def get_action(self, key: Digest) -> bytes | None:
        """The raw action-cache entry for ``key`` (our msgpack ``ActionResult``), or None."""
        path = self._path("ac", key)

        def on_response(response: http.client.HTTPResponse) -> bytes | None:
            if response.status == 404:
                _drain(response)
                return None
            if response.status != 200:
                raise self._rejected("GET", path, response)
            if response.length is not None and response.length > MAX_ACTION_ENTRY_BYTES:
                raise RemoteRejected(f"GET {self.url}{path}: a {response.length}-byte action entry is not one of ours")
            body = ResponseBody(response)
            chunks, size = [], 0
            while chunk := body.read(CHUNK):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ACTION_ENTRY_BYTES:
                    raise RemoteRejected(f"GET {self.url}{path}: action entry larger than {MAX_ACTION_ENTRY_BYTES} bytes")
            return b"".join(chunks)

        return self._call("GET", path, on_response)

    def put_action(self, key: Digest, data: bytes) -> None:
        path = self._path("ac", key)
        self._call("PUT", path, lambda r: self._stored(r, "PUT", path), body=data, length=len(data))

    def close(self) -> None:
        """Close every connection (threads that call again reconnect)."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.close()

    def __enter__(self) -> "HttpRemote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- status handling ------------------------------------------------------------
    def _path(self, kind: str, digest: Digest) -> str:
        if digest.algo != self.algo:
            raise TrtcasError(f"{digest} is a {digest.algo} digest but the remote cache client uses {self.algo}")
        return f"{self.endpoint.base_path}/{kind}/{digest.hex}"

    def _found(self, response: http.client.HTTPResponse, path: str, size: int | None) -> bool:
        _drain(response)
        if response.status == 404:
            return False
        if response.status != 200:
            raise self._rejected("HEAD", path, response)
        announced = response.getheader("Content-Length")  # .length is 0 for any HEAD
        return size is None or announced is None or announced.strip() == str(size)

    def _stored(self, response: http.client.HTTPResponse, method: str, path: str) -> None:
        _drain(response)
        if response.status not in _PUT_OK:
            raise self._rejected(method, path, response)

    def _rejected(self, method: str, path: str, response: http.client.HTTPResponse) -> RemoteRejected:
        hint = ""
        if response.status in (401, 403):
            hint = f"; check {TOKEN_ENV} or {USER_ENV}/{PASSWORD_ENV}" + (
                " (credentials were sent)" if self._credentials.kind != "none" else " (no credentials were sent)"
            )
        elif response.status == 413:
            hint = "; the server limits upload size (nginx: client_max_body_size 0)"
        elif response.status == 405:
            hint = "; the server does not accept this method (nginx: dav_methods PUT)"
        return RemoteRejected(f"{method} {self.url}{path}: HTTP {response.status} {response.reason}{hint}", response.status)

    # ---- requests, retries and connections -------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        on_response: Callable[[http.client.HTTPResponse], T],
        body: Callable[[], BinaryIO] | bytes | None = None,
        length: int = 0,
        size: int = 0,
    ) -> T:
        """One protocol request, retried with exponential backoff on transport faults and 5xx,
        all within one overall deadline (see the class docstring)."""
        self._breaker.check(self.url)
        budget = self.deadline_s + max(size, length) / DEADLINE_BYTES_PER_S
        deadline = time.monotonic() + budget
        attempt = 0
        while True:
            watchdog = _Watchdog(deadline - time.monotonic())
            try:
                with watchdog:
                    result = self._attempt(method, path, on_response, body, length, watchdog)
            except _TransportError as exc:
                if watchdog.expired or time.monotonic() >= deadline:
                    message = f"{method} {self.url}{path}: not done within its {budget:.0f}s deadline (slow or stalled)"
                    self._breaker.failure(message)
                    raise RemoteUnavailable(message) from None
                if attempt < self.retries:
                    delay = self.backoff_s * (2**attempt)
                    log.debug("retrying %s %s%s in %.2fs: %s", method, self.url, path, delay, exc)
                    time.sleep(delay)
                    attempt += 1
                    continue
                tries = f"{attempt + 1} attempts" if attempt else "1 attempt"
                message = f"{method} {self.url}{path}: {exc} (after {tries})"
                self._breaker.failure(message)
                raise RemoteUnavailable(message) from None
            except RemoteRejected:
                self._breaker.success()  # the server is up and answering; it just said no
                raise
            self._breaker.success()
            return result

    def _attempt(self, method, path, on_response, body, length, watchdog: "_Watchdog"):
        # The upload stream is opened outside the network's try: a missing local blob is
        # not a connection failure and must not be retried or trip the breaker.
        stream = body() if callable(body) else None
        try:
            conn, reused = self._connection()
            watchdog.watch(conn)
            try:
                response, broken = self._send(conn, method, path, _payload(stream, body, length), length)
            except _TransportError as exc:
                if not (reused and exc.stale) or watchdog.expired:
                    raise
                if stream is not None:
                    stream.close()
                    stream = body()
                conn, _ = self._connection()
                watchdog.watch(conn)
                response, broken = self._send(conn, method, path, _payload(stream, body, length), length)
            self._local.reused = True
            try:
                if response.status >= 500:
                    _drain(response)
                    raise _TransportError(f"HTTP {response.status} {response.reason}")
                return on_response(response)
            finally:
                if broken or response.will_close or not response.isclosed():
                    self._drop(conn)
        finally:
            if stream is not None:
                stream.close()

    def _send(self, conn, method, path, payload, length) -> tuple[http.client.HTTPResponse, bool]:
        """Send one request; returns the response and whether the connection is now unusable.
        Any failure drops the connection: it may hold half a request."""
        headers = {"User-Agent": "trtcas"}
        if self._credentials.header:
            headers["Authorization"] = self._credentials.header
        if method == "PUT":
            headers["Content-Length"] = str(length)
            headers["Content-Type"] = "application/octet-stream"
        try:
            try:
                conn.request(method, path, body=payload, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                # The server may have answered (401, 413) and closed before reading the
                # whole upload; that answer says more than the broken pipe.
                return conn.getresponse(), True
            _ack_quickly(conn)
            return conn.getresponse(), False
        except BaseException as exc:
            self._drop(conn)
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise RemoteRejected(
                    f"{method} {self.url}{path}: TLS certificate not trusted ({exc.verify_message}); "
                    "pass the CA bundle (cafile) or fix the server's certificate"
                ) from None
            if isinstance(exc, (OSError, http.client.HTTPException)):
                stale = isinstance(exc, _STALE_ERRORS)
                raise _TransportError(_describe(exc, self.timeout), stale=stale) from None
            raise

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, getattr(self._local, "reused", False)
        host, port = self.endpoint.host, self.endpoint.port
        if self._ssl is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl, blocksize=CHUNK)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout, blocksize=CHUNK)
        self._local.conn, self._local.reused = conn, False
        with self._lock:
            self._connections.add(conn)
        return conn, False

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            self._connections.discard(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None


class _Watchdog:
    """Cuts a request's connection when its deadline passes: a socket timeout fires only when
    nothing arrives for that long, so a server sending a byte a second would never trip it.
    Shutting the socket down makes whatever read or write is blocked fail at once."""

    def __init__(self, seconds: float):
        self.expired = seconds <= 0
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def watch(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
        if self.expired:
            self._fire()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._conn.sock if self._conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


def _payload(stream: BinaryIO | None, body, length: int):
    return _UploadBody(stream, length) if stream is not None else body


def _drain(response: http.client.HTTPResponse) -> None:
    """Read a small body to the end, so the connection can carry the next request."""
    if response.length is None or response.length <= MAX_DRAINED_BYTES:
        try:
            response.read(MAX_DRAINED_BYTES + 1)
        except (OSError, http.client.HTTPException):
            pass


def _describe(exc: BaseException, timeout: float | None = None) -> str:
    """A short, secret-free description of a transport exception."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout}s" if timeout else "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text

