"""Which of a suite's methods a ``-q`` option names (shared by ``harness run``, ``harness tune``
and the pytest plugin, so a name means the same thing in each)."""

from __future__ import annotations

from collections.abc import Sequence


def select_methods(suite, names: Sequence[str], host) -> list[str] | None:
    """``-q`` names: suite method labels, quantizers the suite uses, or any registered quantizer."""
    if not names:
        return None
    selected: list[str] = []
    labels = list(suite.data["matrix"].get("method") or suite.methods)
    for name in names:
        if name in suite.methods:
            chosen = [name]
        else:
            chosen = [lbl for lbl in labels if suite.method(lbl)["quantizer"] == name]
            if not chosen and name in host.quantizers:
                chosen = [name]
        if not chosen:
            raise host.quantizers.unknown(name, {*labels, *host.quantizers.names()},
                                          f" for suite {suite.name!r}")
        selected += [c for c in chosen if c not in selected]
    return selected
