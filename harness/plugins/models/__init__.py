"""Model plugins: encoder/decoder pairs, one module per family, registered here.

Each entry is lazy: ``name: "module:Class"``, imported the first time a cell, a check or
a kit uses it, so ``harness list`` imports no torch (docs/hooks.md). Adding one is one line
here, beside its module.
"""

from harness import hookimpl

#: registry name -> the class, as a lazy ``"module:Class"`` target
MODELS = {
    "linear2d":      "harness.plugins.models.linear2d:Linear2d",
    "vqvae-celeba":  "harness.plugins.models.conv_vqvae:ConvVQVAE",
    "taming-3stage": "harness.plugins.models.taming:Taming3Stage",
    "conv-small":    "harness.plugins.models.conv_small:ConvSmall",
    "drift2d":       "harness.plugins.models.drift2d:Drift2d",
}


@hookimpl
def harness_register_models(register):
    for name, target in MODELS.items():
        register(target, name=name)
