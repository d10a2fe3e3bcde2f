"""A real nginx on a loopback address, serving a folder, for web seed tests.

Everything it writes (pid file, error and access logs, temp folders) is in the test's
own folder, and it runs in the foreground under `Processes`, so teardown kills it. The
access log records nginx's connection serial number (`$connection`) for each request,
which shows whether a client reused its connections.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.env import require_tool
from tests.support.procs import HANG, Processes

LOG_FORMAT = "$connection $status $bytes_sent $request_uri"


@dataclass
class Nginx:
    host: str
    port: int
    https_port: int | None
    access_log: Path

    def url(self, path: str = "/", *, https: bool = False) -> str:
        port = self.https_port if https else self.port
        return f"{'https' if https else 'http'}://{self.host}:{port}{path}"

    def requests(self) -> list[tuple[int, int, str]]:
        """(connection serial, status, request URI) of each request served so far."""
        if not self.access_log.exists():
            return []
        out = []
        for line in self.access_log.read_text().splitlines():
            conn, status, _sent, uri = line.split(" ", 3)
            out.append((int(conn), int(status), uri))
        return out

    async def requests_logged(self, count: int) -> list[tuple[int, int, str]]:
        """`requests`, once at least `count` are logged: nginx writes a request's line
        when it has finished with it, which can be after the client has read what it
        needed and hung up."""
        for _ in range(int(HANG / 0.02)):  # (a file: nothing to wait on but its lines)
            if len(self.requests()) >= count:
                break
            await trio.sleep(0.02)
        return self.requests()


def start_nginx(procs: Processes, workdir: Path, host: str, port: int, root: Path, *,
                locations: str = "", https_port: int | None = None,
                certificate: tuple[Path, Path] | None = None) -> Nginx:
    """nginx serving `root` on host:port (and TLS on `https_port` with `certificate`,
    a (cert, key) pair), with extra `location` blocks; returns once it accepts."""
    binary = require_tool("nginx", "nginx-light")
    workdir.mkdir(parents=True, exist_ok=True)
    tls = ""
    if https_port is not None and certificate is not None:
        tls = (f"listen {host}:{https_port} ssl;\n"
               f"ssl_certificate {certificate[0]};\nssl_certificate_key {certificate[1]};\n")
    temps = "\n".join(f"{kind}_temp_path {workdir / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # As root, the workers would run as nobody, who cannot read pytest's 0700 folders.
    user = "user root;" if os.geteuid() == 0 else ""
    config = workdir / "nginx.conf"
    config.write_text(f"""
{user}
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} info;
events {{ worker_connections 64; }}
http {{
    log_format conns '{LOG_FORMAT}';
    access_log {workdir / "access.log"} conns;
    {temps}
    default_type application/octet-stream;
    server {{
        listen {host}:{port};
        {tls}
        root {root};
        {locations}
    }}
}}
""")
    proc = procs.start([binary, "-p", str(workdir), "-e", str(workdir / "error.log"),
                        "-c", str(config), "-g", "daemon off;"], name="nginx")
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, procs.output(proc) + _read(workdir / "error.log")
        try:
            with socket.create_connection((host, port), timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, "nginx did not start listening"
            time.sleep(0.05)
    return Nginx(host, port, https_port, workdir / "access.log")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def self_signed_certificate(workdir: Path, host: str) -> tuple[Path, Path]:
    """A certificate for the IP address `host` and its key, as PEM files: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    workdir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = workdir / "cert.pem", workdir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
