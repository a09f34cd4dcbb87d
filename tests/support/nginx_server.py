"""A real nginx serving Bazel's HTTP cache protocol, for tests and benchmarks.

Debian's ``nginx-light`` has the WebDAV module: ``dav_methods PUT`` plus
``create_full_put_path`` turn a directory into a ``/ac/`` + ``/cas/`` cache, which is what
many teams deploy. Each server gets its own prefix directory (config, pid, logs, temp
files, data) and a free loopback port, runs in the foreground (``daemon off``) as our child,
and is stopped by signal, so nothing of it outlives the test or touches /etc/nginx.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

INSTALL_HINT = "nginx is not installed; run .ci/install-nginx.sh (installs Debian's nginx-light)"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
_START_TIMEOUT_S = 10.0


class NginxMissing(RuntimeError):
    """No nginx binary on this machine."""


def nginx_binary() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NginxMissing(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (as an IP SAN, which is what TLS clients check)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the TLS test server needs the openssl command (Debian package openssl)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return cert, key


def render_config(prefix: Path, port: int, token: str | None, basic: str | None, tls: bool = False) -> str:
    """An nginx config that is a Bazel HTTP cache rooted at ``<prefix>/data``.

    ``token`` demands ``Authorization: Bearer <token>``; ``basic`` demands
    ``Authorization: Basic <basic>`` (already base64). Either answers 401 otherwise.
    ``tls`` serves https with ``<prefix>/cert.pem`` and ``<prefix>/key.pem``.
    """
    check = ""
    expected = f"Bearer {token}" if token else (f"Basic {basic}" if basic else None)
    if expected:
        if not _TOKEN_RE.match(expected.split(" ", 1)[1]):
            raise ValueError("test credentials must be plain token characters")
        check = f'if ($http_authorization != "{expected}") {{ return 401; }}'
    # As root, workers would drop to "nobody" and could not write our 0700 temp dirs.
    user = "user root;" if os.geteuid() == 0 else ""
    temp = prefix / "tmp"
    return f"""
daemon off;
master_process on;
worker_processes 2;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 512; }}
http {{
    default_type application/octet-stream;
    access_log {prefix}/logs/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 75s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port}{" ssl" if tls else ""};
        {f"ssl_certificate {prefix}/cert.pem; ssl_certificate_key {prefix}/key.pem;" if tls else ""}
        root {prefix}/data;
        client_max_body_size 0;
        location / {{
            {check}
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""


@dataclass
class NginxServer:
    """One nginx process; ``url`` is the cache's base URL (no trailing slash)."""

    prefix: Path
    port: int
    token: str | None = None
    basic: str | None = None
    tls: bool = False
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def cert(self) -> Path:
        return self.prefix / "cert.pem"

    @property
    def data_dir(self) -> Path:
        return self.prefix / "data"

    @property
    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> "NginxServer":
        """Start (or restart on the same port) and wait until it accepts connections."""
        binary = nginx_binary()
        for sub in ("data", "logs", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        if self.tls and not self.cert.exists():
            make_self_signed_cert(self.prefix)
        conf.write_text(render_config(self.prefix, self.port, self.token, self.basic, self.tls))
        self.process = subprocess.Popen(
            [binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "logs" / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"nginx exited at start ({self.process.returncode}): {stderr.strip()} {self.error_log.strip()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nginx did not listen on 127.0.0.1:{self.port} within {_START_TIMEOUT_S}s: {self.error_log}")

    def stop(self) -> None:
        """Fast shutdown (SIGTERM to the master, which stops its workers), then reap it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@contextmanager
def run_nginx(
    prefix: str | os.PathLike | None = None, token: str | None = None, basic: str | None = None, tls: bool = False
) -> Iterator[NginxServer]:
    """A running nginx cache server on a free loopback port; stopped (and its temp prefix
    removed, if we made it) on exit."""
    nginx_binary()  # fail fast with the install hint
    own_prefix = prefix is None
    root = Path(tempfile.mkdtemp(prefix="trtcas-nginx-")) if own_prefix else Path(prefix)
    server = None
    try:
        for attempt in range(3):  # the free port may be taken between probe and bind
            server = NginxServer(root, free_port(), token, basic, tls)
            try:
                server.start()
                break
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
        yield server
    finally:
        if server is not None:
            server.stop()
        if own_prefix:
            shutil.rmtree(root, ignore_errors=True)
