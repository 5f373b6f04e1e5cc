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
        name = _as_label(suite, name, host)
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


def _as_label(suite, name: str, host) -> str:
    """``-q vq-harness:vq`` means the suite's ``vq`` row when that row's quantizer is the same
    plugin and no other distribution claims the name: the cells, their names and the claims
    over ``method = "vq"`` are then the row's own. Under a name clash the qualified label stays,
    so the cells say which of the two plugins trained them."""
    _, sep, bare = name.partition(":")
    if not sep or bare not in suite.methods or name not in host.quantizers:
        return name
    quantizer = suite.method(bare)["quantizer"]
    if bare in host.quantizers.conflicts or quantizer not in host.quantizers:
        return name
    return bare if host.quantizers.get(quantizer) is host.quantizers.get(name) else name
