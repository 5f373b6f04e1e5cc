"""Model plugins: encoder/decoder pairs, one module per family, registered here."""

from harness import hookimpl


@hookimpl
def harness_register_models(register):
    from harness.plugins.models.linear2d import Linear2d

    register(Linear2d)
