"""A fault-injecting HTTP/1.1 proxy on loopback, to put between a client and a real server.

Real servers fail in ways that are hard to provoke on demand: a dropped connection, a slow
answer, a 500, a body whose bytes are wrong, a body cut short. This proxy forwards requests
to an upstream server one at a time per client connection (keep-alive preserved), streaming
bodies in bounded chunks, and applies the current fault, switchable at runtime:

    pass      forward unchanged
    drop      close the client connection as soon as a request head arrives
    delay     wait ``delay_s`` before forwarding (client timeouts fire)
    error500  answer 500 without asking upstream
    corrupt   flip bits in a non-empty 200 GET body, keeping its length
    truncate  send half of a 200 GET body, then close
    drip      send a 200 GET body one byte per ``drip_s`` (each read is quick; the transfer is not)

``path_contains`` limits the fault to matching request paths (e.g. ``"/cas/"``); other
requests pass. Threads are bounded (``max_connections``), every socket has a timeout, and
``stop()`` closes everything and joins the threads.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from dataclasses import dataclass

MODES = ("pass", "drop", "delay", "error500", "corrupt", "truncate", "drip")
_CHUNK = 1 << 20
_MAX_HEAD = 64 << 10


@dataclass(frozen=True)
class ProxiedRequest:
    """One request the proxy saw, and the fault applied to it."""

    method: str
    path: str
    fault: str


class _Peer:
    """A socket with a read buffer, enough to split HTTP heads from bodies."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def read_head(self) -> bytes | None:
        """Bytes up to and including the blank line, or None at a clean EOF."""
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > _MAX_HEAD:
                raise ConnectionError("HTTP head too large")
            data = self.sock.recv(65536)
            if not data:
                if self.buffer:
                    raise ConnectionError("EOF inside an HTTP head")
                return None
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def body_chunks(self, length: int | None):
        """Yield the next ``length`` bytes (or everything until EOF if None) in chunks."""
        left = length
        if self.buffer:
            take = self.buffer if left is None else self.buffer[:left]
            self.buffer = self.buffer[len(take) :]
            if left is not None:
                left -= len(take)
            if take:
                yield take
        while left is None or left > 0:
            data = self.sock.recv(_CHUNK if left is None else min(_CHUNK, left))
            if not data:
                if left is None:
                    return
                raise ConnectionError(f"EOF with {left} body bytes missing")
            if left is not None:
                left -= len(data)
            yield data


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
        if name.strip().lower() == b"transfer-encoding":
            raise ConnectionError("chunked bodies are not supported by this test proxy")
    return None


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


class FaultProxy:
    """``http://127.0.0.1:<port>`` in front of ``upstream_port``; set ``mode`` at any time."""

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        delay_s: float = 2.0,
        max_connections: int = 32,
        socket_timeout_s: float = 30.0,
        drip_s: float = 0.5,
    ):
        self.upstream = (upstream_host, upstream_port)
        self.delay_s = delay_s
        self.drip_s = drip_s
        self.socket_timeout_s = socket_timeout_s
        self.mode = "pass"
        self.path_contains: str | None = None
        self.requests: deque[ProxiedRequest] = deque(maxlen=10_000)
        self.connections_accepted = 0
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # accept() wakes up to notice stop()
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-proxy-accept", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str, path_contains: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; one of {MODES}")
        self.mode, self.path_contains = mode, path_contains

    def start(self) -> "FaultProxy":
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=5)
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- plumbing ---------------------------------------------------------------------
    def _track(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(self.socket_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # heads and bodies go out separately
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _untrack(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.discard(sock)
        sock.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                client.close()  # bounded: refuse rather than pile up threads
                continue
            self.connections_accepted += 1
            thread = threading.Thread(target=self._serve, args=(self._track(client),), daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            peer = _Peer(client)
            up_peer = None
            while not self._stop.is_set():
                head = peer.read_head()
                if head is None:
                    return
                method, path = head.split(b" ", 2)[:2]
                method, path = method.decode(), path.decode()
                mode, only = self.mode, self.path_contains
                fault = mode if (only is None or only in path) else "pass"
                self.requests.append(ProxiedRequest(method, path, fault))
                length = _content_length(head) or 0
                if fault == "drop":
                    return
                if fault == "error500":
                    for _ in peer.body_chunks(length):
                        pass
                    client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                    continue
                if fault == "delay" and self._stop.wait(self.delay_s):
                    return
                if upstream is None:
                    upstream = self._track(socket.create_connection(self.upstream, timeout=self.socket_timeout_s))
                    up_peer = _Peer(upstream)
                upstream.sendall(head)
                for chunk in peer.body_chunks(length):
                    upstream.sendall(chunk)
                if not self._relay_response(up_peer, client, method, fault):
                    return
        except (OSError, ValueError, IndexError):
            return
        finally:
            self._untrack(upstream)
            self._untrack(client)
            self._slots.release()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _relay_response(self, upstream: _Peer, client: socket.socket, method: str, fault: str) -> bool:
        """Copy one response, applying ``fault``; False when the client connection must close."""
        head = upstream.read_head()
        if head is None:
            raise ConnectionError("upstream closed without answering")
        status = _status(head)
        has_body = method != "HEAD" and status not in (204, 304) and status >= 200
        length = _content_length(head) if has_body else 0
        client.sendall(head)
        sent = 0
        tamper = method == "GET" and status == 200 and fault in ("corrupt", "truncate", "drip")
        for chunk in upstream.body_chunks(length):
            if tamper and fault == "drip":
                for i in range(len(chunk)):
                    if self._stop.wait(self.drip_s):
                        return False
                    client.sendall(chunk[i : i + 1])
                sent += len(chunk)
                continue
            if tamper and fault == "corrupt":
                chunk = bytes(b ^ 0x5A for b in chunk[:64]) + chunk[64:]
            if tamper and fault == "truncate" and length is not None and sent + len(chunk) > length // 2:
                client.sendall(chunk[: length // 2 - sent])
                return False
            client.sendall(chunk)
            sent += len(chunk)
        return length is not None
