"""The plugin contract, whole: every type and host entry point a plugin may use (docs/hooks.md).

A plugin imports from here (and ``harness.ops``, ``harness.errors``, ``harness.testing``), never from
the host's own modules, so the host may move its insides without breaking a plugin:

- the plugin kinds' base classes (:mod:`harness.contracts.kinds`): ``Quantizer``, ``QuantizeOutput``,
  ``DatasetPlugin``, ``Model``, ``Schedule``, ``Loss``, ``Metric``, ``MetricContext``, ``EvalBatch``;
- training (:mod:`harness.contracts.state`): ``TrainState``, ``Callback`` (a misspelled hook is an
  error), ``HOOKS``, ``set_requires_grad``; bf16 and memory format (:mod:`harness.contracts.precision`):
  ``autocast_for``, ``channels_last``;
- executors (:mod:`harness.contracts.executor`): ``CellSpec``, ``CellOutcome``, ``CellTimeout``,
  ``Executor``, ``ALLOW_SQLITE``, ``freeze_for_exit`` (a worker process's last call); and the host's
  entry points an executor calls: ``run_cell``,
  ``record_lost``, ``lost_outcome``, ``saved_note``, ``newest_cell_run``, ``cell_checkpoint``,
  ``checkpoint_root``, ``finished_metrics``, ``ProcessTracker``, ``deferred``, ``describe_exit``,
  ``set_heartbeat`` (a worker's watchdog clock), ``Interrupted``, ``init_ranks_from_env``, ``finish_ranks``.

Every name is imported on first use (module ``__getattr__``): importing this package imports
neither torch nor the host, so ``harness list`` stays light. The host itself imports the
submodules, never this door; the door names one host module, :mod:`harness.run.executors`, for the
entry points an executor calls, and sits above it (no import circle).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # each name's home, for type checkers and for reading a plugin's constructor
    # from source without importing it (harness.lazy); tests/test_contracts.py keeps it equal to _NAMES
    from harness.contracts.executor import (
        ALLOW_SQLITE,
        CellOutcome,
        CellSpec,
        CellTimeout,
        Executor,
        freeze_for_exit,
    )
    from harness.contracts.kinds import (
        DatasetPlugin,
        EvalBatch,
        Loss,
        Metric,
        MetricContext,
        Model,
        QuantizeOutput,
        Quantizer,
        Schedule,
    )
    from harness.contracts.precision import autocast_for, channels_last
    from harness.contracts.state import HOOKS, Callback, TrainState, set_requires_grad
    from harness.run.executors import (
        Interrupted,
        ProcessTracker,
        cell_checkpoint,
        checkpoint_root,
        deferred,
        describe_exit,
        finish_ranks,
        finished_metrics,
        init_ranks_from_env,
        lost_outcome,
        newest_cell_run,
        record_lost,
        run_cell,
        saved_note,
        set_heartbeat,
    )

#: name -> its home: the home's module is imported when the name is first used
_NAMES: dict[str, str] = {
    **dict.fromkeys(("QuantizeOutput", "Quantizer", "DatasetPlugin", "Model", "Schedule", "Loss", "EvalBatch",
                     "MetricContext", "Metric"), "kinds"),
    **dict.fromkeys(("TrainState", "Callback", "HOOKS", "set_requires_grad"), "state"),
    **dict.fromkeys(("autocast_for", "channels_last"), "precision"),
    **dict.fromkeys(("CellSpec", "CellOutcome", "CellTimeout", "Executor", "ALLOW_SQLITE", "freeze_for_exit"),
                    "executor"),
    **dict.fromkeys(("run_cell", "record_lost", "lost_outcome", "saved_note", "newest_cell_run", "cell_checkpoint",
                     "checkpoint_root", "finished_metrics", "ProcessTracker", "deferred", "describe_exit",
                     "set_heartbeat", "Interrupted", "init_ranks_from_env", "finish_ranks"), "running"),
}

__all__ = sorted(_NAMES)


def _home(home: str) -> ModuleType:
    """The module a name lives in (written out, so the import picture sees each edge)."""
    if home == "kinds":
        from harness.contracts import kinds as module
    elif home == "state":
        from harness.contracts import state as module
    elif home == "executor":
        from harness.contracts import executor as module
    elif home == "precision":
        from harness.contracts import precision as module
    else:  # the host's executor seam: the one host module this door names
        from harness.run import executors as module
    return module


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'harness.contracts' has no attribute {name!r}")
    value = getattr(_home(_NAMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
