"""Testing helpers for plugin authors: the test kits, the sandbox and the pytest plugin.

``from harness.testing import QuantizerConformance`` gives the quantizer kit's base
test class (see :mod:`harness.testing.conformance`); ``DatasetConformance``,
``ModelConformance``, ``MetricConformance``, ``ScheduleConformance``,
``LossConformance`` and ``ExecutorConformance`` do the same for the other plugin
kinds, and ``Sandbox`` (the ``harness_sandbox`` fixture) runs a tiny suite into a
temporary store. The names load lazily, so the pytest plugin in this package does
not import torch when pytest starts.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: public name -> the module that defines it
_HOMES = {
    **dict.fromkeys(("CHECKS", "QuantizerCase", "QuantizerConformance"), "conformance"),
    **dict.fromkeys(("DATASET_CHECKS", "DatasetCase", "DatasetConformance"), "dataset_kit"),
    **dict.fromkeys(("MODEL_CHECKS", "ModelCase", "ModelConformance"), "model_kit"),
    **dict.fromkeys(("METRIC_CHECKS", "MetricCase", "MetricConformance"), "metric_kit"),
    **dict.fromkeys(("SCHEDULE_CHECKS", "ScheduleCase", "ScheduleConformance"), "schedule_kit"),
    **dict.fromkeys(("LOSS_CHECKS", "LossCase", "LossConformance"), "loss_kit"),
    **dict.fromkeys(("EXECUTOR_CHECKS", "ExecutorCase", "ExecutorConformance"), "executor_kit"),
    **dict.fromkeys(("Sandbox", "TINY_SUITE"), "sandbox"),
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"harness.testing.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
