"""Testing helpers for plugin authors: the conformance kit and the pytest plugin.

``from harness.testing import QuantizerConformance`` gives the base test class
(see :mod:`harness.testing.conformance`). The names load lazily, so the pytest
plugin in this package does not import torch when pytest starts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CHECKS", "QuantizerCase", "QuantizerConformance"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from harness.testing import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
