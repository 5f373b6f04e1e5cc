"""Errors a user can act on (issue 21): each test does the user's step for real, in a ``harness``
process, and reads what the user would read."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.robustness.conftest import run


def closed_port() -> int:
    """A local port nothing listens on (a stopped tracking server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_leaderboard_against_a_stopped_server_is_one_line(workdir: Path):
    port = closed_port()
    rc, out, err = run(["leaderboard", "toy2d", "--tracking-uri", f"http://127.0.0.1:{port}"], workdir)
    assert rc == 1 and out == ""
    assert err.strip().splitlines() == [
        f"harness: error: cannot reach the MLflow tracking server http://127.0.0.1:{port} (connection "
        "refused). Check that the server is running (`harness server` starts one) and that the host and "
        "port are right, or pass --tracking-uri (or set MLFLOW_TRACKING_URI) to another store"]
