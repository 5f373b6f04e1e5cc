"""Quantizer plugins: one module per method, registered here."""

from harness import hookimpl


@hookimpl
def harness_register_quantizers(register):
    from harness.plugins.quantizers.drifting import DriftingVQ
    from harness.plugins.quantizers.vq import VectorQuantizer

    register(VectorQuantizer)
    register(DriftingVQ)
