"""`harness ui` and `harness server` serve MLflow on loopback only, and leave nothing behind when
stopped: after SIGTERM, or a Ctrl-C to their process group, nothing listens and no process remains."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_serves_the_store_on_loopback(workdir):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "harness.commands.cli", "ui", "--port", str(port)],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    try:
        deadline, body = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert body is not None, "the UI did not answer within 120 s"
        assert "OK" in body
        assert (workdir / "mlflow.db").exists()  # the default store of `harness run`
        # bound to loopback only: no other local address answers
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
        if listening.returncode == 0 and listening.stdout.strip():
            assert all("127.0.0.1:" in line for line in listening.stdout.strip().splitlines())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_health(port: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if b"OK" in response.read():
                    return
        except OSError:
            time.sleep(0.5)
    out = proc.stdout.read() if proc.poll() is not None and proc.stdout else ""
    raise AssertionError(f"no answer on port {port} within {timeout:.0f} s: {out[-2000:]}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("command, how", [
    (["ui"], "sigterm"),
    (["ui"], "ctrl-c"),
    (["server", "--backend-store-uri", "sqlite:///server.db"], "sigterm"),
])
def test_stopping_leaves_no_server_process_and_no_listener(command, how, workdir):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "harness.commands.cli", *command, "--port", str(port)],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    try:
        wait_health(port, proc)
        below = descendants(proc.pid)
        assert len(below) >= 2  # the mlflow launcher and its web server (its workers below it)
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:  # a terminal's Ctrl-C: SIGINT to the foreground process group, which is harness's own
            os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not answers(port)
        assert [pid for pid in below if alive(pid)] == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
