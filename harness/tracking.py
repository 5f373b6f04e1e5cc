"""MLflow, the only writer of results: one experiment per suite, a parent run per
``harness run``, a nested run per cell (DESIGN.md, "Tracking").

Everything goes through :class:`Tracker`, which talks to ``MlflowClient`` with
explicit run ids (no global "active run"), batches metrics, and retries the
brief "database is locked" errors SQLite gives concurrent writers.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import HarnessError

DEFAULT_URI = "sqlite:///mlflow.db"
FLUSH_EVERY_S = 5.0  # buffered metrics reach the store at least this often (live curves in the UI)
T = TypeVar("T")

# Fail fast on an unreachable tracking server instead of retrying for minutes.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def resolve_uri(uri: str | None = None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` here."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        uri = f"sqlite:///{path}"
    if uri.startswith("file:") or (("://" not in uri) and not uri.startswith("sqlite")):
        raise HarnessError(f"tracking URI {uri!r} is a file store; use sqlite:///mlflow.db or an "
                           "http(s):// tracking server (the ./mlruns file store is deprecated)")
    return uri


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"quantizer": {"params": {"beta": .25}}}`` -> ``{"quantizer.beta": "0.25"}``.

    ``params`` tables flatten into their parent so keys read like the design's
    ``quantizer.beta``; lists of tables (schedules) are numbered.
    """
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = prefix if key == "params" else (f"{prefix}.{key}" if prefix else str(key))
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{name}.{i}"))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def git_commit() -> str:
    """The commit of the working folder's repository (or the harness's), else "unknown"."""
    for folder in (Path.cwd(), Path(__file__).resolve().parent):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                                 text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0:
            return out.stdout.strip()
    return "unknown"


def _retry(fn: Callable[[], T], attempts: int = 20) -> T:
    """Retry SQLite lock contention (several processes writing one ``mlflow.db``)."""
    delay = 0.05
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            text = str(exc).lower()
            if attempt == attempts - 1 or not ("database is locked" in text or "database is busy" in text):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")


def check_sqlite_folder(uri: str) -> None:
    """A SQLite store that does not exist yet needs a writable folder; say so plainly."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri[len("sqlite:///"):])
    folder = path.parent if path.parent.exists() else next((p for p in path.parents if p.exists()), path.parent)
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        raise HarnessError(f"cannot write the MLflow store {path}: {target} is read-only. Run from a "
                           "writable folder, or pass --tracking-uri (or set MLFLOW_TRACKING_URI) to a "
                           "writable sqlite:///path/mlflow.db or an http:// tracking server")


@contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Serialise opening a SQLite store across processes.

    MLflow creates and migrates the tables of a new SQLite database when a client
    first opens it, without a lock; two ``harness run`` started together on a new
    ``mlflow.db`` would both migrate it ("table _alembic_tmp_experiments already
    exists"). An ``flock`` on a file in the temp folder, keyed by the database path,
    makes the second process wait and then find the tables.
    """
    if not uri.startswith("sqlite:///") or os.name == "nt":
        yield
        return
    import fcntl
    import hashlib

    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"harness-store-{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Tracker:
    """Writes runs, params, metrics and artifacts for the harness."""

    def __init__(self, uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = resolve_uri(uri)
        check_sqlite_folder(self.uri)
        try:
            with store_init_lock(self.uri):  # MLflow migrates a new SQLite store unlocked
                self.client = _retry(lambda: MlflowClient(tracking_uri=self.uri))
        except Exception as exc:
            raise HarnessError(f"cannot open the MLflow tracking store {self.uri}: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
        self._buffer: dict[str, list[Any]] = {}
        self._flushed: dict[str, float] = {}

    # -- experiments and runs ---------------------------------------------------
    def check(self) -> None:
        """Reach the store once, so a dead server fails the command within seconds."""
        try:
            _retry(lambda: self.client.search_experiments(max_results=1))
        except Exception as exc:
            raise HarnessError(f"cannot reach the MLflow tracking store {self.uri}: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None

    def artifact_root(self) -> str | None:
        """Next to a SQLite database: ``mlartifacts/`` beside ``mlflow.db``."""
        if self.uri.startswith("sqlite:///"):
            return (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        return None

    def experiment_id(self, name: str, create: bool = True) -> str | None:
        exp = _retry(lambda: self.client.get_experiment_by_name(name))
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        root = self.artifact_root()
        try:
            return _retry(lambda: self.client.create_experiment(
                name, artifact_location=f"{root}/{name}" if root else None))
        except Exception:  # another process created it first
            exp = _retry(lambda: self.client.get_experiment_by_name(name))
            if exp is None:
                raise
            return exp.experiment_id

    def start_run(self, experiment: str, name: str, tags: dict[str, str],
                  parent: str | None = None) -> str:
        tags = dict(tags)
        if parent:
            tags["mlflow.parentRunId"] = parent
        exp_id = self.experiment_id(experiment)
        run = _retry(lambda: self.client.create_run(exp_id, run_name=name, tags=tags))
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.flush(run_id)
        _retry(lambda: self.client.set_terminated(run_id, status=status))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            _retry(lambda chunk=items[i:i + 100]: self.client.log_batch(run_id, tags=chunk))

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            _retry(lambda chunk=items[i:i + 100]: self.client.log_batch(run_id, params=chunk))

    # -- metrics ---------------------------------------------------------------
    def log_metrics(self, run_id: str, values: dict[str, Any], step: int = 0) -> None:
        """Buffer metrics (tensors allowed); written in batches by :meth:`flush`."""
        self._buffer.setdefault(run_id, []).append((values, step, int(time.time() * 1000)))
        stale = time.monotonic() - self._flushed.setdefault(run_id, time.monotonic()) >= FLUSH_EVERY_S
        if stale or sum(len(v[0]) for v in self._buffer[run_id]) >= 500:
            self.flush(run_id)

    def flush(self, run_id: str) -> None:
        from mlflow.entities import Metric

        pending = self._buffer.pop(run_id, [])
        self._flushed[run_id] = time.monotonic()
        items = []
        for values, step, stamp in pending:
            for key, value in values.items():
                number = float(value.item() if hasattr(value, "item") else value)
                items.append(Metric(key, number, stamp, step))
        for i in range(0, len(items), 1000):
            _retry(lambda chunk=items[i:i + 1000]: self.client.log_batch(run_id, metrics=chunk))

    # -- artifacts -------------------------------------------------------------
    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        _retry(lambda: self.client.log_text(run_id, text, artifact_file))

    def log_json(self, run_id: str, data: Any, artifact_file: str) -> None:
        self.log_text(run_id, json.dumps(data, indent=2, sort_keys=True, default=str), artifact_file)

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        self.log_bytes(run_id, buffer.getvalue(), artifact_file)

    def log_bytes(self, run_id: str, data: bytes, artifact_file: str) -> None:
        path = Path(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / path.name
            local.write_bytes(data)
            _retry(lambda: self.client.log_artifact(run_id, str(local),
                                                     str(path.parent) if str(path.parent) != "." else None))

    def log_file(self, run_id: str, local: Path, artifact_path: str | None = None) -> None:
        _retry(lambda: self.client.log_artifact(run_id, str(local), artifact_path))

    # -- reading ---------------------------------------------------------------
    def runs(self, experiment: str, filter_string: str = "") -> list[Any]:
        """Every run of ``experiment`` matching ``filter_string`` (all pages)."""
        exp_id = self.experiment_id(experiment, create=False)
        if exp_id is None:
            return []
        out, token = [], None
        while True:
            page = _retry(lambda token=token: self.client.search_runs(
                [exp_id], filter_string=filter_string, max_results=1000, page_token=token))
            out.extend(page)
            token = page.token
            if not token:
                return out


def tags_for(items: Iterable[tuple[str, Any]]) -> dict[str, str]:
    return {f"harness.{k}": str(v) for k, v in items}
