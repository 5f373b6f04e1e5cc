"""Schedule plugins: act on the training state, one module per family, registered here."""

from harness import hookimpl


@hookimpl
def harness_register_schedules(register):
    from harness.plugins.schedules.basic import Constant
    from harness.plugins.schedules.decay import Decay
    from harness.plugins.schedules.lr import WarmupCosine
    from harness.plugins.schedules.stages import NSVQStages, StagedFreeze

    register(Constant)
    register(Decay)
    register(NSVQStages)
    register(StagedFreeze)
    register(WarmupCosine)
