"""Schedule plugins: act on the training state, one module per family, registered here.

Each entry is lazy: ``name: "module:Class"``, imported the first time a cell, a check or
a kit uses it, so ``harness list`` imports no torch (docs/hooks.md). Adding one is one line
here, beside its module.
"""

from harness import hookimpl

#: registry name -> the class, as a lazy ``"module:Class"`` target
SCHEDULES = {
    "codebook-init-scale": "harness.plugins.schedules.codebook:CodebookInitScale",
    "constant":      "harness.plugins.schedules.basic:Constant",
    "decay":         "harness.plugins.schedules.decay:Decay",
    "nsvq-stages":   "harness.plugins.schedules.stages:NSVQStages",
    "staged-freeze": "harness.plugins.schedules.stages:StagedFreeze",
    "warmup-cosine": "harness.plugins.schedules.lr:WarmupCosine",
}


@hookimpl
def harness_register_schedules(register):
    for name, target in SCHEDULES.items():
        register(target, name=name)
