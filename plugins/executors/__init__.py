"""Executor plugins: where a suite's cells run. The built-ins register here, like any plugin's."""

from harness import hookimpl


@hookimpl
def harness_register_executors(register):
    from harness.plugins.executors.local import LocalExecutor
    from harness.plugins.executors.processes import ProcessesExecutor

    register(LocalExecutor)
    register(ProcessesExecutor)
