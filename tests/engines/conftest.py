"""Real engines for the executor tests: a one-node SLURM cluster, PostgreSQL, a tracking server.

Each is brought up once per test session by ``scripts/engines/*.sh`` (every daemon on
127.0.0.1, stopped by its PID at the end). All engine tests share one xdist group, so
one worker owns the engines. An engine that cannot start skips its tests with the
reason, except under ``CI=true``, where it fails them (.ci/run installs everything and
runs the suite inside a private network namespace).

``HARNESS_ENGINES_DIR`` names the folder for their state (.ci/run sets it, so its trap
can stop the daemons even if pytest is killed); by default a fresh folder under /tmp.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "engines"
SLURM_BINARIES = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip (fail under CI=true): the engine tests must run in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: .ci/run installs the engines; they must run)")
    pytest.skip(reason)


def in_private_netns() -> bool:
    """Only ``lo`` exists: nothing a service binds can be reached from outside (Ray binds 0.0.0.0)."""
    try:  # /proc/net/dev is this process's namespace (/sys/class/net is the host's unless remounted)
        lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return [line.split(":", 1)[0].strip() for line in lines] == ["lo"]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for base in range(21000, 60000, 97):
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free block of loopback ports")


@pytest.fixture(scope="session")
def engines_dir() -> Iterator[Path]:
    base = os.environ.get("HARNESS_ENGINES_DIR")
    folder = Path(base) if base else Path(tempfile.mkdtemp(prefix="harness-engines-"))
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # munged and postgres run as their own users and must reach their state
    yield folder
    if not base:
        shutil.rmtree(folder, ignore_errors=True)


def _bring_up(script: str, state: Path, *args: str) -> str | None:
    """Run ``script up``; the error text when it failed."""
    try:
        done = subprocess.run(["bash", str(SCRIPTS / script), "up", str(state), *args],
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return f"{script} up did not finish within 300 s"
    return None if done.returncode == 0 else (done.stderr or done.stdout)[-2000:]


@pytest.fixture(scope="session")
def slurm(engines_dir: Path) -> Iterator[dict[str, str]]:
    """A one-node SLURM cluster with accounting; yields the environment its commands need."""
    if os.geteuid() != 0:
        unavailable("the one-node SLURM cluster needs root (its daemons and munged's user)")
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        unavailable(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm "
                    "slurmdbd munge mariadb-server")
    try:
        import submitit  # noqa: F401
    except ImportError:
        unavailable("submitit is not installed: pip install 'vq-harness[slurm]'")
    state = engines_dir / "slurm"
    os.environ["SLURM_ENGINE_PORT_BASE"] = str(free_ports(4))  # read by slurm.sh (ctld, slurmd, dbd, MariaDB)
    error = _bring_up("slurm.sh", state)
    if error:
        subprocess.run(["bash", str(SCRIPTS / "slurm.sh"), "down", str(state)], timeout=120)
        unavailable(f"the SLURM cluster did not start: {error}")
    try:
        yield {"SLURM_CONF": str(state / "etc" / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(SCRIPTS / "slurm.sh"), "down", str(state)], timeout=120)


@pytest.fixture(scope="session")
def postgres(engines_dir: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields its SQLAlchemy URI."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        unavailable("PostgreSQL is not installed: apt-get install postgresql")
    if os.geteuid() != 0 and not shutil.which("initdb"):
        unavailable("PostgreSQL's initdb is not reachable")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        unavailable("psycopg2 is not installed: pip install 'vq-harness[postgres]'")
    state, port = engines_dir / "postgres", free_ports(1)
    error = _bring_up("postgres.sh", state, str(port))
    if error:
        unavailable(f"PostgreSQL did not start: {error}")
    try:
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(["bash", str(SCRIPTS / "postgres.sh"), "down", str(state)], timeout=120)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if b"OK" in response.read():
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to ``harness server``: it stops its whole process group itself."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tracking_server(postgres: str, engines_dir: Path) -> Iterator[str]:
    """``harness server`` on the PostgreSQL cluster; yields its http:// URI."""
    port = free_ports(1)
    log = (engines_dir / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "harness.commands.cli", "server", "--backend-store-uri", postgres,
                             "--port", str(port), "--artifacts-destination", str(engines_dir / "artifacts")],
                            cwd=engines_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    (engines_dir / "server.pid").write_text(str(proc.pid))  # for .ci/run's trap
    try:
        if not wait_healthy(url, proc):
            unavailable(f"harness server did not answer on {url}: {(engines_dir / 'server.log').read_text()[-2000:]}")
        yield url
    finally:
        stop_server(proc)
        log.close()


# -- running suites --------------------------------------------------------------------------------

EXIT_PLUGIN = '''
"""A test plugin: ``exit-vq`` is vq whose process ends with os._exit(9) on its Nth quantize call."""
import os

from harness import hookimpl
from harness.plugins.quantizers.vq import VectorQuantizer


class ExitVQ(VectorQuantizer):
    """vq that kills its own process mid-training (a worker that dies without a result)."""

    name = "exit-vq"

    def __init__(self, dim, codebook_size, exit_after: int = 20, **params):
        super().__init__(dim, codebook_size, **params)
        self.exit_after, self.calls = exit_after, 0

    def quantize(self, z):
        self.calls += 1
        if self.training and self.calls >= self.exit_after:
            os._exit(9)
        return super().quantize(z)


@hookimpl
def harness_register_quantizers(register):
    register(ExitVQ)
'''


@pytest.fixture(scope="session")
def exit_plugin(engines_dir: Path) -> Path:
    """A folder for PYTHONPATH holding a real plugin distribution (module + dist-info entry point)."""
    site = engines_dir / "exit-plugin-site"
    info = site / "harness_exit_plugin-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (site / "harness_exit_plugin.py").write_text(EXIT_PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-exit-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness]\nexit = harness_exit_plugin\n")
    return site


def suite_copy(folder: Path, name: str, extra: str = "") -> Path:
    """toy2d under another suite name (its own experiment in the shared store), without its claims
    (they name cells the small profiles leave out), plus ``extra`` TOML."""
    from harness.suite import builtin_suites

    text = builtin_suites()["toy2d"].read_text().replace('name = "toy2d"', f'name = "{name}"', 1)
    text = text[:text.index("[[claims]]")] if "[[claims]]" in text else text
    path = folder / f"{name}.toml"
    path.write_text(text + extra)
    return path


def harness_env(*extra: dict[str, str], pythonpath: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": ""}
    for more in extra:
        env.update(more)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    return env


def harness(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.commands.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def cell_runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'cell'", max_results=1000)


def wait_for_training(uri: str, experiment: str, proc: subprocess.Popen, count: int = 1,
                      timeout: float = 300) -> list:
    """RUNNING cell runs that logged a training step (their first flush), at least ``count``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"harness run ended (exit {proc.returncode}) before training was seen:\n{out[-3000:]}")
        training = [r for r in cell_runs(uri, experiment)
                    if r.info.status == "RUNNING" and "train/loss" in r.data.metrics]
        if len(training) >= count:
            return training
        time.sleep(0.5)
    raise AssertionError(f"no cell of {experiment} was seen training within {timeout:.0f} s")
