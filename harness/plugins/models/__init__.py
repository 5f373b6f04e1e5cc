"""Model plugins: encoder/decoder pairs, one module per family, registered here."""

from harness import hookimpl


@hookimpl
def harness_register_models(register):
    from harness.plugins.models.conv_small import ConvSmall
    from harness.plugins.models.conv_vqvae import ConvVQVAE
    from harness.plugins.models.drift2d import Drift2d
    from harness.plugins.models.linear2d import Linear2d
    from harness.plugins.models.taming import Taming3Stage

    register(Linear2d)
    register(ConvVQVAE)
    register(Taming3Stage)
    register(ConvSmall)
    register(Drift2d)
