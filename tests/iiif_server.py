"""A real IIIF image server (IIPImage behind lighttpd) on loopback, for checking pyramids.

iipsrv runs standalone on a Unix socket and lighttpd forwards ``/iiif/`` to it over FastCGI; both
are children of the test process, in their own process groups, and are stopped on exit.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import pytest

IIPSRV = Path("/usr/lib/iipimage-server/iipsrv.fcgi")
LIGHTTPD = Path("/usr/sbin/lighttpd")
HOST = "127.0.0.1"
PREFIX = "/iiif/"
LOG_NAMES = ("iipsrv.log", "iipsrv.out", "lighttpd-error.log", "lighttpd.out")
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerStartError(RuntimeError):
    """The server did not come up; the message carries its logs."""


def require_binaries() -> None:
    missing = [str(p) for p in (IIPSRV, LIGHTTPD) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(
            f"IIIF server tests need {', '.join(missing)}; install them with scripts/system-deps.sh"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_logs(log_dir: Path, tail: int = 60) -> str:
    sections = []
    for name in LOG_NAMES:
        path = log_dir / name
        lines = path.read_text(errors="replace").splitlines()[-tail:] if path.exists() else []
        if lines:
            sections.append(f"--- {path} ---\n" + "\n".join(lines))
    return "\n".join(sections) or f"(no logs in {log_dir})"


def iipsrv_environment(image_dir: Path, log_dir: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "FILESYSTEM_PREFIX": f"{image_dir.resolve()}/",
        "URI_MAP": "iiif=>IIIF",
        "LOGFILE": str(log_dir / "iipsrv.log"),
        "VERBOSITY": "2",
        "JPEG_QUALITY": "90",
        "MAX_IMAGE_CACHE_SIZE": "16",
        "MEMCACHED_SERVERS": "",
        "OMP_NUM_THREADS": "2",
    }


def lighttpd_config(run_dir: Path, log_dir: Path, port: int, fcgi_socket: Path) -> str:
    return f"""\
server.document-root = "{run_dir}"
server.bind = "{HOST}"
server.port = {port}
server.errorlog = "{log_dir / "lighttpd-error.log"}"
server.upload-dirs = ( "{run_dir}" )
server.modules = ( "mod_fastcgi" )
fastcgi.server = ( "{PREFIX}" => ((
    "socket" => "{fcgi_socket}",
    "check-local" => "disable",
)))
"""


def spawn(argv: list[str], out: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with out.open("ab") as sink:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_until(
    ready: Callable[[], bool], procs: list[subprocess.Popen[bytes]], timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        if ready():
            return True
        time.sleep(0.05)
    return False


def open_url(url: str, timeout: float = 30.0) -> http.client.HTTPResponse:
    """Open a loopback URL, ignoring any proxy settings in the environment."""
    response: http.client.HTTPResponse = DIRECT.open(url, timeout=timeout)
    return response


def iipsrv_answers(url: str) -> bool:
    try:
        with open_url(url, timeout=2) as response:
            server = response.headers.get("Server", "")
    except urllib.error.HTTPError as error:
        server = error.headers.get("Server", "")
    except OSError:
        return False
    return str(server).startswith("iipsrv")


def start_iipsrv(
    stack: ExitStack, image_dir: Path, run_dir: Path, log_dir: Path, timeout: float
) -> Path:
    fcgi_socket = run_dir / "iipsrv.sock"
    proc = spawn(
        [str(IIPSRV), "--bind", str(fcgi_socket)],
        log_dir / "iipsrv.out",
        iipsrv_environment(image_dir, log_dir),
    )
    stack.callback(stop, proc)
    if not wait_until(fcgi_socket.is_socket, [proc], timeout):
        raise ServerStartError(f"iipsrv did not open {fcgi_socket}\n{server_logs(log_dir)}")
    return fcgi_socket


def start_lighttpd(
    stack: ExitStack, run_dir: Path, log_dir: Path, fcgi_socket: Path, timeout: float
) -> str:
    for _attempt in range(3):
        port = free_port()
        config = run_dir / "lighttpd.conf"
        config.write_text(lighttpd_config(run_dir, log_dir, port, fcgi_socket))
        proc = spawn(
            [str(LIGHTTPD), "-D", "-f", str(config)],
            log_dir / "lighttpd.out",
            {"PATH": "/usr/bin:/bin"},
        )
        base_url = f"http://{HOST}:{port}{PREFIX}"
        if wait_until(partial(iipsrv_answers, base_url), [proc], timeout):
            stack.callback(stop, proc)
            return base_url
        stop(proc)
    raise ServerStartError(f"no answer from iipsrv through lighttpd\n{server_logs(log_dir)}")


@contextmanager
def iiif_server(
    image_dir: Path, *, log_dir: Path | None = None, timeout: float = 10.0
) -> Iterator[str]:
    """Serve the TIFFs in ``image_dir`` over IIIF; yields the base URL ending in ``/iiif/``."""
    require_binaries()
    with ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ptif-iiif-")))
        logs = log_dir or run_dir
        logs.mkdir(parents=True, exist_ok=True)
        fcgi_socket = start_iipsrv(stack, image_dir, run_dir, logs, timeout)
        yield start_lighttpd(stack, run_dir, logs, fcgi_socket, timeout)
