"""Loss plugins: the training loss terms a suite composes in ``train.loss``, registered here.

Each entry is lazy: ``name: "module:Class"``, imported the first time a cell, a check or
a kit uses it, so ``harness list`` imports no torch (docs/hooks.md). Adding one is one line
here, beside its module.
"""

from harness import hookimpl

#: registry name -> the class, as a lazy ``"module:Class"`` target
LOSSES = {
    "mse":          "harness.plugins.losses.pixel:MSE",
    "l1":           "harness.plugins.losses.pixel:L1",
    "lpips":        "harness.plugins.losses.perceptual:LPIPSLoss",
    "patchgan":     "harness.plugins.losses.patchgan:PatchGAN",
    "gaussian-mle": "harness.plugins.losses.gaussian_mle:GaussianMLE",
}


@hookimpl
def harness_register_losses(register):
    for name, target in LOSSES.items():
        register(target, name=name)
