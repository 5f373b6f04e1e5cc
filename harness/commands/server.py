"""``harness server`` and ``harness ui``: an MLflow server that leaves nothing behind.

``mlflow server`` is a launcher that starts a web server with worker processes.
Run as a plain child, a SIGTERM or Ctrl-C to ``harness`` stopped only the
launcher, and the web server kept answering with its workers orphaned. So the
server runs in its own process group (its own session): ``harness`` forwards
SIGINT, SIGTERM and SIGHUP to the whole group, waits for it, and on the way out
kills whatever of the group is still there. Should ``harness`` itself be killed
outright (SIGKILL), the launcher gets SIGTERM from the kernel (``PR_SET_PDEATHSIG``).

Defaults chosen for one machine and a small team: loopback only, two workers
and no job-runner processes (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``):
about 610 MB instead of about 2.5 GB, at the same write throughput.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from harness.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_WORKERS = 2
STOP_WAIT_S = 20.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def backend_uri(uri: str) -> str:
    """A database URI for ``--backend-store-uri``; ``postgresql://`` means psycopg2 (MLflow 3's
    SQLAlchemy otherwise looks for psycopg 3, which the ``postgres`` extra does not install)."""
    from harness.tracking import resolve_uri

    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if "://" in uri and scheme not in DATABASE_SCHEMES:
        raise UsageError(f"--backend-store-uri must be a database URI (postgresql://, sqlite:///...), "
                         f"got {uri!r}")
    if scheme == "postgresql":
        if uri.startswith("postgresql://"):
            uri = "postgresql+psycopg2://" + uri[len("postgresql://"):]
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise UsageError("a PostgreSQL backend needs psycopg2: pip install 'vq-harness[postgres]'"
                             ) from None
        return uri
    return resolve_uri(uri)


def server_command(backend: str, artifacts: str | None, host: str = DEFAULT_HOST,
                   port: int = DEFAULT_PORT, workers: int = DEFAULT_WORKERS,
                   subcommand: str = "server") -> list[str]:
    """The ``mlflow server`` (or ``mlflow ui``) command line."""
    command = [sys.executable, "-m", "mlflow", subcommand, "--backend-store-uri", backend,
               "--host", host, "--port", str(port), "--workers", str(workers)]
    if artifacts is not None:
        command += ["--artifacts-destination", artifacts]
    return command


def _bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be bound now (as the web server binds it), else ``None``."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        return exc
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc
    return None


def check_port(host: str, port: int) -> None:
    """Refuse a taken port before the server starts (it would log the error and exit 0)."""
    error = _bind_error(host, port)
    if error is None:
        return
    if error.errno != errno.EADDRINUSE:
        raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}; check --host and --port")
    free = next((p for p in range(port + 1, min(port + 50, 65536)) if _bind_error(host, p) is None), None)
    hint = f"pass --port {free} (free now)" if free else "pass --port with a free port"
    raise UsageError(f"port {port} on {host} is already in use (another server is listening there); "
                     f"{hint}, or stop what listens on {port}")


def server_env() -> dict[str, str]:
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve(command: Sequence[str], env: dict[str, str] | None = None, stop_wait_s: float = STOP_WAIT_S
          ) -> int:
    """Run ``command`` in a new process group until it exits or a signal stops it.

    Returns 0 when a forwarded signal stopped it, else the server's own exit code, or 1 when it
    stopped by itself with 0 (``mlflow ui`` does so when it cannot bind its port).
    """
    proc = subprocess.Popen(list(command), env=env, preexec_fn=_die_with_parent)
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        _signal_group(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # a handler installed before ours raised; keep forwarding
                _signal_group(proc.pid, signal.SIGINT)
                received.append(signal.SIGINT)
    finally:
        stop_group(proc.pid, stop_wait_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        return 0
    if code == 0:
        print("harness: the server stopped by itself (its messages are above)", file=sys.stderr)
    return code or 1


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from ``/proc``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def stop_group(pgid: int, wait_s: float = STOP_WAIT_S) -> None:
    """SIGTERM what is left of group ``pgid``, wait up to ``wait_s``, then SIGKILL the rest."""
    if not Path("/proc/self/stat").exists():  # not Linux: signal the group blindly
        _signal_group(pgid, signal.SIGTERM)
        return
    if group_members(pgid):
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_members(pgid):
        print(f"harness: server processes {group_members(pgid)} did not stop within {wait_s:.0f} s; "
              "killing them", file=sys.stderr)
        _signal_group(pgid, signal.SIGKILL)
