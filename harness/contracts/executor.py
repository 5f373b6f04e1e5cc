"""The executor contract: a cell as plain data (:class:`CellSpec`), what comes back
(:class:`CellOutcome`), the plugin kind's base (:class:`Executor`) and the last call of a
worker process (:func:`freeze_for_exit`).

Plain dataclasses and no host import: a spec goes through multiprocessing, submitit (SLURM) and
Ray as it is. It carries the resolved suite (parsed and validated once, in the submitting
process) and the cell's config hash; the worker rebuilds the cell from that data, never from the
suite file, and refuses a spec whose data no longer gives that hash.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class CellSpec:
    """All a cell needs, anywhere: plain, picklable data."""

    suite: str  # resolved path of the suite file: where the data came from (names, logs; never re-read)
    profile: str
    #: the resolved suite (``harness.suite.Suite.plain()``: name, data, key lines, --set origins)
    suite_data: dict = field(hash=False, repr=False)
    cell_key: tuple  # (method label, codebook size, dim, seed): the cell within the suite
    cell_hash: str  # Cell.config_hash of that cell: checked when the cell is rebuilt
    run_name: str
    parent_run_id: str
    tracking_uri: str  # absolute URI
    options: dict = field(hash=False)  # device, data_root, threads (intra-op), timeout, progress
    resume: dict | None = field(default=None, hash=False)  # {"action", "previous_run_id", "checkpoint"}

    @property
    def suite_name(self) -> str:
        """The suite's name (its MLflow experiment), without rebuilding anything."""
        return str(self.suite_data["name"])


@dataclass
class CellOutcome:
    """What came back from one cell (the run in the store is the record)."""

    cell_hash: str
    status: str  # FINISHED, FAILED or KILLED
    run_id: str | None = None
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    #: metrics that could not be computed here, with the reason (missing weights): never numbers
    unavailable: dict = field(default_factory=dict)


class CellTimeout(Exception):
    """The cell ran longer than ``train.timeout`` seconds (raised inside the cell: recorded FAILED)."""


class Executor:
    """Runs a list of cell specs somewhere; a plugin kind (``harness_register_executors``).

    ``run`` calls ``on_outcome`` in the submitting process as each cell ends and
    returns when all ended. A worker that dies: ``record_lost`` and a FAILED
    or KILLED outcome with the engine's reason. ``KeyboardInterrupt``: cancel
    everything submitted, record it KILLED, re-raise.
    """

    name: ClassVar[str] = ""
    #: sends cells to other machines: refuses ``sqlite:///`` or relative URIs unless forced
    remote: ClassVar[bool] = False
    #: accepted ``--executor-option`` keys and their types
    option_types: ClassVar[dict[str, type]] = {}

    def __init__(self, **options: Any) -> None:
        self.options = options
        #: the suite's own plugin host, for an executor that runs cells in this process (``local``);
        #: one that starts other processes rebuilds the host from the entry points there
        self.host: Any = None

    def run(self, specs: list[CellSpec], on_outcome: Callable[[CellOutcome], None]) -> None:
        raise NotImplementedError


#: accepted by every remote executor: write a sqlite:/// store that all machines share
ALLOW_SQLITE = "allow_sqlite"


def freeze_for_exit() -> None:
    """Skip the final garbage collection of a process that exits next (a worker told to stop).

    With torch and MLflow loaded, the interpreter's last collections walk every object those
    libraries made, 1 to 2 s, only to free memory the system takes back anyway. :func:`gc.freeze`
    moves every object to the permanent generation, which they skip; ``atexit`` handlers, module
    teardown and the flush of stdout and stderr still run. Call it last: in a process that goes
    on, nothing allocated before the call would ever be collected.
    """
    gc.freeze()
