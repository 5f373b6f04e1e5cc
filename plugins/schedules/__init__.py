"""Schedule plugins: act on the training state, one module per family, registered here."""

from harness import hookimpl


@hookimpl
def harness_register_schedules(register):
    from harness.plugins.schedules.basic import Constant

    register(Constant)
