"""Executor plugins: where a suite's cells run. The built-ins register here, like any plugin's.

Each entry is lazy: ``name: "module:Class"``, imported the first time a cell, a check or
a kit uses it, so ``harness list`` imports no torch (docs/hooks.md). Adding one is one line
here, beside its module.
"""

from harness import hookimpl

#: registry name -> the class, as a lazy ``"module:Class"`` target
EXECUTORS = {
    "local":     "harness.plugins.executors.local:LocalExecutor",
    "processes": "harness.plugins.executors.processes:ProcessesExecutor",
    "slurm":     "harness.plugins.executors.slurm:SlurmExecutor",
    "ray":       "harness.plugins.executors.ray:RayExecutor",
}


@hookimpl
def harness_register_executors(register):
    for name, target in EXECUTORS.items():
        register(target, name=name)
