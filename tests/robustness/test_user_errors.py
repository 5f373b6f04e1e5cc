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


def test_ui_on_a_taken_port_exits_non_zero_and_names_a_free_port(workdir: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, out, err = run(["ui", "--port", str(port)], workdir, timeout=120)
        rc_server, _, err_server = run(["server", "--port", str(port)], workdir, timeout=120)
    assert rc == 2 and rc_server == 2
    assert "at http://" not in out  # no address is announced that does not answer
    for text in (err, err_server):
        assert f"harness: error: port {port} on 127.0.0.1 is already in use" in text
        free = int(text.split("pass --port ")[1].split()[0])
        assert free != port
    assert not (workdir / "mlflow.db").exists()  # nothing was started


def test_a_server_that_stops_by_itself_is_a_failure(capsys):
    """The race the port check cannot close (taken between check and bind): still not exit 0."""
    import sys

    from harness.commands.server import serve

    assert serve([sys.executable, "-c", "print('Address already in use')"]) == 1
    assert "the server stopped by itself" in capsys.readouterr().err
    assert serve([sys.executable, "-c", "raise SystemExit(3)"]) == 3


def test_leaderboard_with_no_store_names_where_it_looked(workdir: Path):
    rc, out, _ = run(["leaderboard", "toy2d"], workdir)
    assert rc == 0
    store = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    assert (f"no run of suite 'toy2d' is recorded in {store} (no store there yet); `harness run toy2d` "
            "records them there; to read another store pass --tracking-uri URI or set "
            "MLFLOW_TRACKING_URI") in out
    other = workdir / "elsewhere" / "x.db"
    rc, out, _ = run(["leaderboard", "toy2d", "--tracking-uri", f"sqlite:///{other}"], workdir)
    assert rc == 0 and f"recorded in sqlite:///{other} (no store there yet)" in out
    assert not (workdir / "mlflow.db").exists() and not other.parent.exists()  # reading created nothing
