"""The pytest plugin shipped with vq-harness (entry point ``pytest11``): suites as tests.

``pytest --harness-suite toy2d [--harness-profile smoke|full] -n auto`` turns every
cell of the suite into a test item and every claim into an assertion, so a suite
spreads over pytest-xdist workers. docs/ci.md explains the route; in short:

* One store, one parent run. The controller (or the only process, without xdist)
  resolves the tracking URI once (``--harness-tracking-uri``, else
  ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<rootdir>/mlflow.db``) and creates the
  suite's parent run, which also creates the SQLite schema and the experiment, so
  workers never race on them. The URI goes to the workers through ``workerinput``;
  the parent is created on a thread while the workers start, and each worker reads
  it before its first cell (:mod:`harness.testing.handoff`). The controller hands out
  the longest cells first, by the durations earlier sessions recorded
  (:mod:`harness.testing.scheduling`). Every cell is a nested run of that parent, planned,
  parented, run (a :class:`harness.run.executors.CellSpec` on ``--harness-executor``:
  ``local`` by default, ``processes`` to isolate each cell) and closed by the same
  functions as ``harness run`` (:mod:`harness.run.lifecycle`), so the leaderboard
  afterwards is the one ``harness run`` would build. Concurrent
  SQLite writers go through :class:`harness.tracking.Tracker`, which retries
  "database is locked".
* Claims run after the cells. Claim items are collected after every cell item
  (and kept last after other plugins reorder), so on each worker a claim comes
  after that worker's cells; it then reads the cells it needs back from MLflow by
  the parent run id, waiting (``--harness-claim-timeout``, default one hour) for
  cells still running on other workers. Cells are not pinned to claims with
  ``xdist_group``: a claim over many cells would then serialise them on one worker.
  Cells share no expensive fixture (each builds its own data and nets); the
  plugin host and the tracker are built once per worker.
* When the session ends, the controller checks every claim once more over all
  cells, records them on the parent run (``claims.json``) and ends it.

Importing this module costs nothing: torch, mlflow and the plugins load inside
the hooks, and only when ``--harness-suite`` is given.
"""

from __future__ import annotations

import json
import os
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.testing.fixtures import harness_sandbox  # noqa: F401 - fixtures shipped with the plugin

if TYPE_CHECKING:
    from harness.testing.handoff import ParentHandoff

WORKER_KEY = "harness_suites"
CLAIM_POLL_SECONDS = 1.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "vq-harness: run suites as tests")
    group.addoption("--harness-suite", action="append", default=[], metavar="NAME_OR_PATH",
                    help="run this suite's cells and claims as tests (repeatable)")
    group.addoption("--harness-profile", default="smoke", metavar="PROFILE",
                    help="suite profile: smoke (default, CI-sized) or full (the paper's protocol)")
    group.addoption("--harness-tracking-uri", metavar="URI",
                    help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///<rootdir>/mlflow.db)")
    group.addoption("--harness-seeds", type=int, metavar="N", help="seeds per configuration")
    group.addoption("--harness-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a suite key, as `harness run --set` (repeatable)")
    group.addoption("--harness-method", action="append", default=[], metavar="NAME",
                    help="only these methods or quantizers, as `harness run -q` (repeatable)")
    group.addoption("--harness-device", default="auto", help="auto, cpu or cuda")
    group.addoption("--harness-claim-timeout", type=float, default=3600.0, metavar="SECONDS",
                    help="how long a claim waits for cells still running on other workers")
    group.addoption("--harness-executor", default="local", metavar="NAME",
                    help="where each cell item runs: local (default: in the pytest process or xdist "
                         "worker), processes (a worker process per item: isolated), or a plugin's")
    group.addoption("--harness-executor-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of --harness-executor (repeatable)")
    group.addoption("--harness-under-test", metavar="DISTRIBUTION",
                    help="the plugin distribution these tests exercise: a bare name another plugin "
                         "registers too means its entry (default: $HARNESS_UNDER_TEST, else the "
                         "rootdir's pyproject.toml [project] name when installed)")


_STATE = pytest.StashKey["HarnessSession"]()


def _state(config: pytest.Config) -> HarnessSession | None:
    return config.stash.get(_STATE, None)


def pytest_configure(config: pytest.Config) -> None:
    from harness.testing.under_test import configure

    configure(config.rootpath, config.getoption("harness_under_test"))
    if not config.getoption("harness_suite"):
        return
    state = HarnessSession(config)
    config.stash[_STATE] = state
    config.pluginmanager.register(_ClaimsLast(), "harness-claims-last")
    if hasattr(config, "workerinput"):  # an xdist worker: its process ends with the session
        config.pluginmanager.register(_FrozenExit(), "harness-frozen-exit")
    else:  # the controller, or the only process
        from harness.testing.durations import DurationRecorder

        config.pluginmanager.register(DurationRecorder(config), "harness-durations")
        if config.pluginmanager.hasplugin("xdist"):
            from harness.testing.scheduling import SchedulerPlugin

            config.pluginmanager.register(SchedulerPlugin(), "harness-scheduler")
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        # `pytest --harness-suite X` alone runs the suite, not the project's testpaths
        config.args = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The distribution under test and every plugin name clash, at the end (shown under ``-q`` too),
    and why the xdist controller could not create the parent runs, if it could not."""
    from harness.testing.under_test import header_lines

    state = _state(terminalreporter.config)
    if state is not None and state.handoff_error:
        terminalreporter.write_line(f"ERROR: {state.handoff_error}", red=True)
    lines = header_lines()
    if lines:
        terminalreporter.section("harness: plugin names", sep="-")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: the store for each worker, and where its parent runs will be
    (created on a thread while the workers start: harness.testing.handoff)."""
    state = _state(node.config)
    if state is not None:
        shared = {"uri": state.uri}
        if not node.config.option.collectonly:  # --collect-only records nothing
            shared["handoff"] = str(state.handoff().path)
        node.workerinput[WORKER_KEY] = json.dumps(shared)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    state = _state(config)
    if state is None:
        return
    for spec in state.specs:
        collector = SuiteCollector.from_parent(session, name=f"harness:{spec}", spec=spec)
        collected = collector.collect()
        # report them like collected files' items (the terminal's "N items" count)
        session.ihook.pytest_collectreport(
            report=pytest.CollectReport(collector.nodeid, "passed", None, collected))
        items.extend(collected)


class _FrozenExit:
    """An xdist worker's last hook. Its process exits next, and the controller waits for it: the
    interpreter's final garbage collection, 1 to 2 s over torch's and MLflow's objects, is skipped
    (:func:`harness.contracts.executor.freeze_for_exit`). Never the controller's or an only
    process's, which may be a caller's own (``pytest.main`` in a process that goes on)."""

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self) -> None:
        from harness.contracts.executor import freeze_for_exit

        freeze_for_exit()


class _ClaimsLast:
    """Runs after every other reordering: cells before claims, each claim knowing its cells."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        claims = [i for i in items if isinstance(i, ClaimItem)]
        items[:] = [i for i in items if not isinstance(i, ClaimItem)] + claims
        selected = {(i.suite.name, i.cell.run_name) for i in items if isinstance(i, CellItem)}
        for claim in claims:
            claim.expected = sorted(n for n in claim.matching if (claim.suite.name, n) in selected)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = _state(session.config)
    if state is not None and not hasattr(session.config, "workerinput"):
        state.finish(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
        if state.handoff_error:  # the same exit status as the error gives without xdist
            session.exitstatus = pytest.ExitCode.USAGE_ERROR


# -- the session state: suites, store, parent runs ------------------------------------------

class HarnessSession:
    """What one pytest process knows about the suites it runs."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.specs: list[str] = list(dict.fromkeys(config.getoption("harness_suite")))
        self.profile: str = config.getoption("harness_profile")
        self.claim_timeout: float = config.getoption("harness_claim_timeout")
        worker = getattr(config, "workerinput", None)
        shared = json.loads(worker[WORKER_KEY]) if worker is not None and WORKER_KEY in worker else {}
        self.uri: str = shared["uri"] if shared else self._resolve_uri(config)
        self._handoff_path: str | None = shared.get("handoff")  # a worker's: the controller's parents
        self._handoff: ParentHandoff | None = None  # the controller's: creating them
        self._parents: dict[str, str] = {}
        self._specs: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _resolve_uri(config: pytest.Config) -> str:
        from harness.tracking import resolve_uri

        uri = (config.getoption("harness_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
               or f"sqlite:///{Path(config.rootpath) / 'mlflow.db'}")
        return resolve_uri(uri)

    # suites and cells, loaded the same way in every process (identical collection)
    @cached_property
    def suites(self) -> dict[str, Any]:
        from harness.errors import HarnessError
        from harness.suite import load_suite

        seeds = self.config.getoption("harness_seeds")
        overrides = self.config.getoption("harness_set")
        try:
            return {spec: load_suite(spec, self.profile, overrides=overrides, seeds=seeds)
                    for spec in self.specs}
        except HarnessError as exc:
            raise pytest.UsageError(f"--harness-suite: {exc}") from None

    def cells(self, spec: str) -> list[Any]:
        return self._cells[spec]

    @cached_property
    def methods(self) -> dict[str, list[str] | None]:
        from harness.commands.select import select_methods
        from harness.errors import HarnessError

        try:
            return {spec: select_methods(suite, self.config.getoption("harness_method"), self.host)
                    for spec, suite in self.suites.items()}
        except HarnessError as exc:
            raise pytest.UsageError(f"--harness-suite: {exc}") from None

    @cached_property
    def _cells(self) -> dict[str, list[Any]]:
        """The same selection and checks as ``harness run`` (harness.run.selection.select_cells)."""
        from harness.errors import HarnessError
        from harness.run.selection import select_cells

        try:
            return {spec: select_cells(self.host, suite, self.methods[spec])
                    for spec, suite in self.suites.items()}
        except HarnessError as exc:
            raise pytest.UsageError(f"--harness-suite: {exc}") from None

    @cached_property
    def host(self) -> Any:
        from harness.host import get_host

        return get_host()

    @cached_property
    def tracker(self) -> Any:
        from harness.errors import HarnessError
        from harness.run.lifecycle import open_tracker

        try:
            return open_tracker(self.uri)
        except HarnessError as exc:
            raise pytest.UsageError(f"--harness-tracking-uri: {exc}") from None

    @cached_property
    def options(self) -> Any:
        from harness.run.options import RunOptions, parse_executor_options

        return RunOptions(device=self.config.getoption("harness_device"), tracking_uri=self.uri,
                          progress=False, executor=self.config.getoption("harness_executor"),
                          executor_options=parse_executor_options(
                              self.config.getoption("harness_executor_option")))

    @cached_property
    def executor(self) -> Any:
        """``--harness-executor`` (local unless asked), built and checked like ``harness run``'s."""
        from harness.errors import HarnessError
        from harness.run.executors import build_executor, check_tracking_uri

        try:
            executor = build_executor(self.host, self.options.executor, self.options.executor_options)
            check_tracking_uri(executor, self.uri)
        except HarnessError as exc:
            raise pytest.UsageError(f"--harness-executor: {exc}") from None
        return executor

    def cell_specs(self, spec: str) -> dict[str, Any]:
        """Each cell of ``spec`` as a CellSpec under its parent run, by config hash (built once)."""
        if spec not in self._specs:
            from harness.run.lifecycle import cell_options
            from harness.run.specs import cell_specs

            built = cell_specs(self.suites[spec], [(c, None) for c in self.cells(spec)], self.parents()[spec],
                               self.uri, cell_options(self.options, self.executor))
            self._specs[spec] = {s.cell_hash: s for s in built}
        return self._specs[spec]

    @property
    def handoff_error(self) -> str | None:
        """xdist controller: why the parent runs could not be created, if they could not."""
        return self._handoff.error if self._handoff is not None else None

    def handoff(self) -> ParentHandoff:
        """xdist controller: the parent runs, being created on a thread (started on first use)."""
        if self._handoff is None:
            from harness.testing.handoff import ParentHandoff

            self.methods, self.executor  # noqa: B018 - cheap checks first: a bad suite, method or
            # executor stops the session here with a usage error, before any worker starts
            self._handoff = ParentHandoff(self.parents)
        return self._handoff

    def parents(self) -> dict[str, str]:
        """The parent run of each suite: created on first use, or under xdist by the
        controller and read by each worker before its first cell."""
        from harness.run.lifecycle import start_parent

        if self._handoff_path is not None and not self._parents:
            from harness.testing.handoff import HandoffError, wait_for_parents

            try:
                self._parents = wait_for_parents(self._handoff_path, self.claim_timeout)
            except HandoffError as exc:
                raise SuiteFailure(str(exc)) from None
        for spec, suite in self.suites.items():
            if spec not in self._parents:
                self._parents[spec] = start_parent(
                    self.tracker, self.host, suite, self.cells(spec), self.methods[spec], self.options,
                    self.executor.name, extra=(("runner", "pytest"),))
        return dict(self._parents)

    def cell_runs(self, spec: str) -> dict[str, Any]:
        """This session's cell runs of ``spec`` in MLflow, by run name."""
        parent = self.parents()[spec]
        runs = self.tracker.runs(self.suites[spec].name,
                                 f"tags.`mlflow.parentRunId` = '{parent}' and tags.`harness.kind` = 'cell'")
        return {r.info.run_name: r for r in sorted(runs, key=lambda r: r.info.start_time or 0)}

    def finish(self, interrupted: bool) -> None:
        """Controller only: claims over all cells, no run left RUNNING, parent runs closed
        (harness.run.lifecycle.close_suite, as ``harness run`` ends)."""
        if self._handoff is not None:  # the cells already failed with its error, if any
            self._handoff.close()
        if not self._parents:
            return
        from harness.cell.runner import CellResult
        from harness.recovery.signals import deferred
        from harness.run.lifecycle import close_suite

        for spec, parent in self._parents.items():
            runs = self.cell_runs(spec)
            results = [CellResult(c, runs[c.run_name].info.status, run_record(runs[c.run_name])["metrics"],
                                  run_id=runs[c.run_name].info.run_id)
                       for c in self.cells(spec) if c.run_name in runs]
            with deferred():
                close_suite(self.tracker, self.suites[spec], parent, results,
                            "KILLED" if interrupted else "FINISHED")


def run_record(run: Any) -> dict[str, Any]:
    """A recorded cell as :func:`harness.suite.claims.check_claims` reads it (same as ``CellResult.record``)."""
    tags = run.data.tags
    key = {"method": tags.get("harness.method"), "quantizer": tags.get("harness.quantizer"),
           "codebook_size": int(tags.get("harness.codebook_size", 0)),
           "dim": int(tags.get("harness.dim", 0)), "seed": int(tags.get("harness.seed", 0))}
    metrics = {k[len("eval/"):]: v for k, v in run.data.metrics.items() if k.startswith("eval/")}
    return {"key": key, "metrics": metrics, "status": run.info.status}


# -- collection: one item per cell, one per claim --------------------------------------------

class SuiteCollector(pytest.Collector):
    """A suite: its cells in the suite's stable order, then its claims."""

    def __init__(self, *, spec: str, **kwargs: Any) -> None:
        super().__init__(nodeid=kwargs["name"], **kwargs)
        self.spec = spec

    def collect(self) -> list[pytest.Item]:
        from harness.suite.claims import matches

        state = _state(self.config)
        assert state is not None
        suite, cells = state.suites[self.spec], state.cells(self.spec)
        items: list[pytest.Item] = [
            CellItem.from_parent(self, name=cell.run_name, spec=self.spec, suite=suite, cell=cell)
            for cell in cells
        ]
        for claim in suite.claims:
            # a paired (``compare``) claim also needs the cells it compares against
            wheres = [claim.where]
            if getattr(claim, "compare", None):
                wheres.append({**claim.where, **claim.compare})
            matching = [c.run_name for c in cells if any(matches(c.key, w) for w in wheres)]
            items.append(ClaimItem.from_parent(self, name=f"claim:{claim.id}", spec=self.spec,
                                               suite=suite, claim=claim, matching=matching))
        return items


class _SuiteItem(pytest.Item):
    def __init__(self, *, spec: str, suite: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec, self.suite = spec, suite

    @property
    def state(self) -> HarnessSession:
        state = _state(self.config)
        assert state is not None
        return state

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return Path(self.suite.path), None, f"{self.suite.name}: {self.name}"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, SuiteFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)


class SuiteFailure(AssertionError):
    """A failed cell or a claim that does not hold: reported as its message, no traceback."""


class CellItem(_SuiteItem):
    """Trains and evaluates one cell into the shared store, under the suite's parent run."""

    def __init__(self, *, cell: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cell = cell

    def runtest(self) -> None:
        state = self.state
        outcomes: list[Any] = []
        state.executor.run([state.cell_specs(self.spec)[self.cell.config_hash]], outcomes.append)
        [result] = outcomes
        if result.status == "FINISHED" and result.run_id:  # drawn here, beside the other workers'
            # cells, not all at the end in the controller (harness.run.figures says why)
            from harness.cell.plots import draw_recorded
            from harness.tracking import guarded

            guarded(f"drawing the figures of {self.cell.run_name}", lambda: draw_recorded(state.tracker, result.run_id))
        self.user_properties += [("run_id", result.run_id), ("seconds", round(result.seconds, 2))]
        self.user_properties += [(f"eval/{k}", v) for k, v in sorted(result.metrics.items())]
        if result.status != "FINISHED":
            raise SuiteFailure(f"cell {self.cell.run_name} {result.status}: {result.error}\n"
                               f"(traceback.txt in MLflow run {result.run_id}, {state.uri})")


class ClaimItem(_SuiteItem):
    """Checks one claim over the finished cells it names, once they are all done."""

    def __init__(self, *, claim: Any, matching: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.claim, self.matching = claim, matching
        self.expected: list[str] = list(matching)  # narrowed to the selected cells (-k, -m)

    def runtest(self) -> None:
        from harness.suite.claims import check_claim

        if not self.expected:
            pytest.skip(f"claim {self.claim.id}: none of its cells were selected")
        runs = self._wait_for_cells()
        records = [run_record(runs[n]) for n in self.expected if runs[n].info.status == "FINISHED"]
        result = check_claim(self.claim, records)
        self.user_properties += [("claim", self.claim.id), ("status", result.status),
                                 ("observed", result.observed), ("n", result.n)]
        if result.n == 0:
            pytest.skip(f"claim {self.claim.id}: no finished cell has {self.claim.metric!r}")
        if result.passed is False:
            raise SuiteFailure(f"claim {self.claim.id} does not hold: {result.summary()}\n"
                               f"{self.claim.text}\nvalues: {', '.join(f'{v:.4g}' for v in result.values)}")

    def _wait_for_cells(self) -> dict[str, Any]:
        """The claim's cells once none is pending; a cell may still run on another worker."""
        state = self.state
        deadline = time.monotonic() + state.claim_timeout
        while True:
            runs = state.cell_runs(self.spec)
            pending = [n for n in self.expected
                       if n not in runs or runs[n].info.status in ("RUNNING", "SCHEDULED")]
            if not pending:
                return runs
            if time.monotonic() > deadline:
                raise SuiteFailure(f"claim {self.claim.id}: cells {', '.join(pending)} did not finish "
                                   f"within --harness-claim-timeout={state.claim_timeout:g}s")
            time.sleep(CLAIM_POLL_SECONDS)
