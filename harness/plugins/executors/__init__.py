"""Executor plugins: where a suite's cells run. The built-ins register here, like any plugin's."""

from harness import hookimpl


@hookimpl
def harness_register_executors(register):
    from harness.plugins.executors.local import LocalExecutor
    from harness.plugins.executors.processes import ProcessesExecutor
    from harness.plugins.executors.ray import RayExecutor
    from harness.plugins.executors.slurm import SlurmExecutor

    register(LocalExecutor)
    register(ProcessesExecutor)
    register(SlurmExecutor)
    register(RayExecutor)
