"""vq-harness: a benchmark harness for vector quantizers.

Plugins implement the hooks in :mod:`harness.hookspecs` with the :data:`hookimpl`
marker and are found through the ``harness`` entry-point group.
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("vq-harness")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

hookimpl = pluggy.HookimplMarker("harness")

__all__ = ["__version__", "hookimpl"]
