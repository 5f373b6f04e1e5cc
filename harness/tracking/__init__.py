"""MLflow, the only writer of results: one experiment per suite, a parent run per
``harness run``, a nested run per cell (docs/architecture.md).

Everything goes through :class:`Tracker`, which talks to ``MlflowClient`` with
explicit run ids (no global "active run") and retries the brief "database is
locked" errors SQLite gives concurrent writers. Metrics never block the
training loop: :class:`MetricWriter` sends them from a background thread in
``log_batch`` calls; :meth:`Tracker.flush` waits for them (before a checkpoint,
at the end of a cell, on interrupt), so nothing logged is lost.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import HarnessError, one_line
from harness.tracking.store import check_store, quiet_mlflow_logs

DEFAULT_URI = "sqlite:///mlflow.db"
FLUSH_EVERY_S = 5.0  # buffered metrics reach the store at least this often (live curves in the UI)
BATCH = 1000  # metrics per log_batch call (MLflow's limit)
T = TypeVar("T")

# Fail fast on an unreachable tracking server instead of retrying for minutes.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# MLflow prints two "View run / View experiment" lines per run ended on a tracking server, on
# stdout, between the harness's progress lines; `harness run` ends by saying where the runs are.
# Set it to false to see them again.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# Reading an artifact back (`harness diagnose`, the leaderboard's figures) would draw MLflow's
# download progress bar on stderr for a file of a few kilobytes.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


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


#: what requests/urllib3 say when no server answers, and the short reason a user reads
UNREACHABLE = (("connection refused", "connection refused"), ("name or service not known", "unknown host"),
               ("name resolution", "unknown host"), ("timed out", "timed out"),
               ("failed to establish a new connection", "no connection"),
               ("max retries exceeded", "no answer"), ("connection reset", "connection reset"),
               ("remotedisconnected", "connection closed"), ("no route to host", "no route to host"))


def store_error(uri: str, exc: BaseException, doing: str = "open") -> HarnessError:
    """One line a user can act on for a store that failed: an unreachable server says what to check."""
    text = f"{type(exc).__name__}: {exc}"
    why = next((short for needle, short in UNREACHABLE if needle in text.lower()), None)
    if why and uri.startswith(("http://", "https://")):
        return HarnessError(
            f"cannot reach the MLflow tracking server {uri} ({why}). Check that the server is running "
            "(`harness server` starts one) and that the host and port are right, or pass --tracking-uri "
            "(or set MLFLOW_TRACKING_URI) to another store")
    first = (text.splitlines() or [""])[0]
    if len(first) > 300:  # cut at a word, and say so
        first = first[:300].rsplit(" ", 1)[0] + " ..."
    return HarnessError(f"cannot {doing} the MLflow tracking store {uri}: {first}")


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
    exists"). An ``flock`` on a lock file beside the database (``.mlflow.db.harness-lock``)
    makes the second process wait and then find the tables.
    """
    from harness.tracking.store import init_lock

    with init_lock(uri):  # waits at most $HARNESS_STORE_LOCK_TIMEOUT s, then names the holder
        yield


def as_floats(values: dict[str, Any]) -> dict[str, float]:
    """Numbers and scalar tensors as floats, with one device transfer for all the tensors."""
    import torch

    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    out = {k: float(v) for k, v in values.items() if k not in tensors}
    if tensors:
        stacked = torch.stack([t.detach().reshape(()).float() for t in tensors.values()]).cpu()
        out.update(zip(tensors, stacked.tolist(), strict=True))
    return out


class MetricWriter:
    """Writes metrics from a background thread in batches; :meth:`flush` waits for them.

    ``put`` only appends to a list under a lock, so logging costs the training
    loop nothing; the thread wakes every ``FLUSH_EVERY_S`` seconds, when
    ``BATCH`` metrics are pending, or when a flush is asked for. A write error is
    raised by the next ``put`` or ``flush``. Where MLflow opens a SQL database itself, a
    batch is one insert statement (:mod:`harness.tracking.metric_rows`, about 15x less
    CPU on this thread, which shares the GIL with training); elsewhere ``log_batch``.
    """

    def __init__(self, client: Any) -> None:
        from harness.tracking.metric_rows import SqlMetricRows

        self.client = client
        self.rows = SqlMetricRows.of(client)  # one executemany where MLflow's store is SQL
        self._pending: list[tuple[str, Any]] = []
        self._queued = self._written = 0
        self._error: BaseException | None = None
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def put(self, run_id: str, metrics: list[Any]) -> None:
        self._raise()
        with self._wake:
            self._pending.extend((run_id, m) for m in metrics)
            self._queued += len(metrics)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="harness-metrics", daemon=True)
                self._thread.start()
            if len(self._pending) >= BATCH:
                self._wake.notify_all()

    def flush(self) -> None:
        """Block until everything put so far is in the store."""
        with self._wake:
            target = self._queued
            self._wake.notify_all()
            while self._written < target and self._error is None and self._thread is not None:
                self._wake.wait(0.5)
        self._raise()

    def close(self) -> None:
        self.flush()
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise HarnessError(f"writing metrics to the tracking store failed: {error}") from error

    def _loop(self) -> None:
        while True:
            with self._wake:
                if not self._pending and not self._closed:
                    self._wake.wait(FLUSH_EVERY_S)
                if self._closed and not self._pending:
                    return
                batch, self._pending = self._pending, []
            try:
                self._write(batch)
            except BaseException as exc:  # raised in the training thread by the next put/flush
                self._error = exc
            with self._wake:
                self._written += len(batch)
                self._wake.notify_all()

    def _write(self, batch: list[tuple[str, Any]]) -> None:
        by_run: dict[str, list[Any]] = {}
        for run_id, metric in batch:
            by_run.setdefault(run_id, []).append(metric)
        for run_id, items in by_run.items():
            for i in range(0, len(items), BATCH):
                _retry(lambda run=run_id, chunk=items[i:i + BATCH]: self._log(run, chunk))

    def _log(self, run_id: str, points: list[Any]) -> None:
        if self.rows is None or not self.rows.write(run_id, points):
            self.client.log_batch(run_id, metrics=points)


_WRITERS: weakref.WeakSet[MetricWriter] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    """A process that exits normally (or on an uncaught exception) writes what it logged."""
    for writer in list(_WRITERS):
        with contextlib.suppress(Exception):  # nothing left to report to at exit
            writer.close()


class Tracker:
    """Writes runs, params, metrics and artifacts for the harness."""

    def __init__(self, uri: str | None = None, *, write: bool = True) -> None:
        """``write=False``: a reader (``harness leaderboard``), which also opens a read-only store."""
        self.uri = resolve_uri(uri)
        if write:
            check_sqlite_folder(self.uri)
        check_store(self.uri)  # a folder, or damaged pages: reported, never used (harness.tracking.store)
        quiet_mlflow_logs()  # a full store is reported in one line, not a traceback per failed write
        from mlflow.tracking import MlflowClient  # after the checks: they fail before this import

        try:
            with store_init_lock(self.uri):  # MLflow migrates a new SQLite store unlocked
                self.client = _retry(lambda: MlflowClient(tracking_uri=self.uri))
        except HarnessError:
            raise
        except Exception as exc:
            raise store_error(self.uri, exc) from None
        self.writer = MetricWriter(self.client)
        _WRITERS.add(self.writer)

    def wrap_client(self, wrap: Callable[[Any], Any]) -> None:
        """Send every later store call (not the background metric writer's) through ``wrap(client)``.

        A worker process wraps it so each call defers signals and beats its
        no-progress watchdog (:class:`harness.run.executors.ProcessTracker`).
        """
        self.client = wrap(self.client)

    # -- experiments and runs ---------------------------------------------------
    def check(self) -> None:
        """Reach the store once, so a dead server fails the command within seconds."""
        try:
            _retry(lambda: self.client.search_experiments(max_results=1))
        except Exception as exc:
            raise store_error(self.uri, exc, "reach") from None

    def artifact_root(self) -> str | None:
        """Next to a SQLite database: ``mlartifacts/`` beside ``mlflow.db``."""
        if self.uri.startswith("sqlite:///"):
            return (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        return None

    def experiment_names(self) -> list[str]:
        """Every experiment in the store, all pages (``harness runs repair``, a reader's name check)."""
        names: list[str] = []
        token = None
        while True:
            page = _retry(lambda token=token: self.client.search_experiments(max_results=1000, page_token=token))
            names.extend(e.name for e in page)
            token = page.token
            if not token:
                return names

    def artifact_location(self, experiment: str) -> str | None:
        """Where ``experiment`` keeps its artifacts, as the store recorded it (``None``: no such experiment)."""
        exp = _retry(lambda: self.client.get_experiment_by_name(experiment))
        return exp.artifact_location if exp is not None else None

    def experiment_of(self, run_id: str) -> str:
        """The name of the experiment ``run_id`` is in (a lost cell's run goes beside its parent)."""
        exp_id = self.get_run(run_id).info.experiment_id
        return _retry(lambda: self.client.get_experiment(exp_id)).name

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
        self.terminate(run_id, status)

    def terminate(self, run_id: str, status: str) -> None:
        """Close a run without waiting for its queued metrics (when they cannot be written)."""
        _retry(lambda: self.client.set_terminated(run_id, status=status))

    def delete_run(self, run_id: str) -> None:
        """Delete a run (a ``--resume`` claim that gave way: nothing was trained in it)."""
        _retry(lambda: self.client.delete_run(run_id))

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
        """Queue metrics (scalar tensors allowed) for the background writer; never blocks."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.writer.put(run_id, [Metric(k, v, stamp, step) for k, v in as_floats(values).items()])

    def flush(self, run_id: str | None = None) -> None:
        """Wait until every metric logged so far (any run) is in the store."""
        self.writer.flush()

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        """Every point of one metric of a run (MLflow ``Metric``: key, value, timestamp, step)."""
        return list(_retry(lambda: self.client.get_metric_history(run_id, key)))

    def copy_metrics(self, source_run: str, target_run: str, prefix: str, up_to_step: int) -> list[Any]:
        """Copy ``source_run``'s curves whose keys start with ``prefix``, up to ``up_to_step``, into
        ``target_run`` (a resumed cell keeps its whole history); written now, in batches. Returns the points."""
        from mlflow.entities import Metric

        keys = [key for key in self.get_run(source_run).data.metrics if key.startswith(prefix)]
        points = [Metric(m.key, m.value, m.timestamp, m.step)
                  for key in keys for m in self.metric_history(source_run, key) if m.step <= up_to_step]
        for i in range(0, len(points), BATCH):
            _retry(lambda chunk=points[i:i + BATCH]: self.client.log_batch(target_run, metrics=chunk))
        return points

    # -- artifacts -------------------------------------------------------------
    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        _retry(lambda: self.client.log_text(run_id, text, artifact_file))

    def log_json(self, run_id: str, data: Any, artifact_file: str) -> None:
        self.log_text(run_id, json.dumps(data, indent=2, sort_keys=True, default=str), artifact_file)

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure as a PNG artifact (its own margins: no tight bounding box pass)."""
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        if "matplotlib.pyplot" in sys.modules:  # a figure made with pyplot is held by it until closed
            sys.modules["matplotlib.pyplot"].close(figure)
        self.log_bytes(run_id, buffer.getvalue(), artifact_file)

    def log_bytes(self, run_id: str, data: bytes, artifact_file: str) -> None:
        path = Path(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / path.name
            local.write_bytes(data)
            _retry(lambda: self.client.log_artifact(run_id, str(local),
                                                     str(path.parent) if str(path.parent) != "." else None))

    # -- reading ---------------------------------------------------------------
    def get_run(self, run_id: str) -> Any:
        """One run: its info, tags, params and last metric values (MLflow ``Run``)."""
        return _retry(lambda: self.client.get_run(run_id))

    def runs(self, experiment: str, filter_string: str = "", order_by: list[str] | None = None) -> list[Any]:
        """Every run of ``experiment`` matching ``filter_string`` (all pages)."""
        exp_id = self.experiment_id(experiment, create=False)
        return [] if exp_id is None else self._search(exp_id, filter_string, order_by)

    def child_runs(self, parent_run_id: str, filter_string: str = "") -> list[Any]:
        """Every run nested under ``parent_run_id`` matching ``filter_string`` (e.g. one cell by its tag)."""
        exp_id = self.get_run(parent_run_id).info.experiment_id
        query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
        return self._search(exp_id, f"{query} and {filter_string}" if filter_string else query)

    def _search(self, exp_id: str, filter_string: str, order_by: list[str] | None = None) -> list[Any]:
        out, token = [], None
        while True:
            page = _retry(lambda token=token: self.client.search_runs(
                [exp_id], filter_string=filter_string, max_results=1000, order_by=order_by, page_token=token))
            out.extend(page)
            token = page.token
            if not token:
                return out

    def list_artifacts(self, run_id: str, folder: str | None = None) -> list[str]:
        """The paths of the files directly in ``folder`` of a run's artifacts (the root if ``None``)."""
        return [f.path for f in _retry(lambda: self.client.list_artifacts(run_id, folder)) if not f.is_dir]

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """One artifact's bytes (downloaded into a temporary folder, removed after); raises when missing."""
        with tempfile.TemporaryDirectory() as tmp:
            local = _retry(lambda: self.client.download_artifacts(run_id, path, tmp))
            return Path(local).read_bytes()


def tags_for(items: Iterable[tuple[str, Any]]) -> dict[str, str]:
    return {f"harness.{k}": str(v) for k, v in items}


def guarded(what: str, write: Callable[[], Any]) -> str | None:
    """One write on a failure path: if it fails too, warn on stderr and return why; never raise.

    The handler that records a failed cell must not abort the suite itself: a
    read-only artifact folder or a full disk fails the ``traceback.txt`` upload
    just as it failed the cell.
    """
    try:
        write()
    except Exception as exc:
        why = f"{what} failed: {one_line(exc)}"
        print(f"harness: warning: {why}", file=sys.stderr)
        return why
    return None


def close_guarded(tracker: Any, run_id: str, status: str) -> str | None:
    """End a run with ``status`` even if its pending metrics cannot be written (then without them)."""
    why = guarded(f"closing run {run_id} {status}", lambda: tracker.end_run(run_id, status))
    if why is not None:
        guarded(f"closing run {run_id} {status} without its pending metrics",
                lambda: tracker.terminate(run_id, status))
    return why
