"""What made a number: the plugin's code digest, the rate of a cell, the suite's ranking rules.

Recorded as run tags so a leaderboard built anywhere, later, with other files
and plugins installed, still knows (docs/suites.md, "Rate and provenance"):

- ``harness.plugin_digest`` on each cell: sha256 over the quantizer's module,
  every source file of its package and the harness version (the git commit is
  its own tag, ``harness.git_commit``, shown in the page header). The
  leaderboard never averages cells of different digests into one row.
- ``harness.bits_per_token``, ``harness.tokens_per_item``, ``harness.pixels_per_item``
  on each cell: the rate, so rows compare at equal bits per token and the
  rate-distortion figure has its x axis.
- ``harness.primary_metric`` and ``harness.metric_directions`` on the parent run:
  the page sorts and marks "best" as the run's own suite said.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the rate's forward pass imports torch itself: the leaderboard reads these tags without it
    import torch

#: Whether the repository's HEAD commit enters the digest. Off: a commit that changes
#: nothing in the plugin would split every row into "newest" and "older code" (measured:
#: a commit landing during a 10-second suite run left one of eight cells out of its row).
#: The plugin's own files are hashed by content, so editing them changes the digest anyway.
DIGEST_INCLUDES_COMMIT = False
#: the tags this module writes (the leaderboard reads them by these names)
DIGEST_TAG = "harness.plugin_digest"
RATE_TAGS = ("harness.bits_per_token", "harness.tokens_per_item", "harness.pixels_per_item")
PRIMARY_TAG = "harness.primary_metric"
DIRECTIONS_TAG = "harness.metric_directions"


def source_files(module_name: str) -> list[Path]:
    """The module's file and every ``.py`` file of its package (recursively), sorted.

    A plugin's behaviour lives in its package's helpers too (``codebook_tools.py``
    beside ``vq.py``), so the digest covers all of them; a top-level module is alone.
    """
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if not file:
        return []
    own = Path(file).resolve()
    package = getattr(module, "__package__", "") or ""
    if not package:
        return [own]
    root = Path(getattr(sys.modules.get(package), "__file__", None) or own).resolve().parent
    files = {p.resolve() for p in root.rglob("*.py") if "__pycache__" not in p.parts}
    return sorted(files | {own})


@cache
def _digest(module_name: str, version: str, commit: str) -> str:
    """Cached per process: the code a process runs is the code it imported first."""
    h = hashlib.sha256()
    files = source_files(module_name)
    root = Path(os.path.commonpath([f.parent for f in files])) if files else Path()
    for path in files:  # names relative to the package: the digest does not depend on where it is installed
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(f"vq-harness {version}\0git {commit}".encode())
    return h.hexdigest()


def plugin_digest(entry: Any) -> str:
    """sha256 of a registry entry's plugin sources and the harness version (and the git
    commit when :data:`DIGEST_INCLUDES_COMMIT`)."""
    from harness import __version__
    from harness.tracking import git_commit

    commit = git_commit() if DIGEST_INCLUDES_COMMIT else ""
    return _digest(getattr(entry.obj, "__module__", ""), __version__, commit)


def provenance_tags(entry: Any) -> dict[str, str]:
    """The cell's ``harness.plugin_digest`` tag (:func:`harness.cell.record.cell_tags` adds it)."""
    return {DIGEST_TAG: plugin_digest(entry)}


def short(digest: str) -> str:
    """How a page names a digest: its first 12 hex digits (``?`` when none was recorded)."""
    return digest[:12] if digest else "?"


# -- rate ------------------------------------------------------------------------------

def tokens_and_pixels(model: torch.nn.Module, item: Any, device: torch.device) -> tuple[int, int | None]:
    """Tokens one item is encoded into, and its pixels (``None`` for points), from one forward pass."""
    import torch

    from harness.cell.forward import to_tokens

    x = item[0] if isinstance(item, (tuple, list)) else item
    x = torch.as_tensor(x).float().unsqueeze(0).to(device)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            tokens, _ = to_tokens(model.encode(x))
    finally:
        model.train(was)
    pixels = int(x.shape[-2] * x.shape[-1]) if x.dim() == 4 else None
    return int(tokens.shape[0]), pixels


def bits_per_token(quantizer: Any) -> float:
    """The quantizer's ``bits_per_token``; a duck-typed plugin without one: ``log2`` of its stage sizes."""
    bits = getattr(quantizer, "bits_per_token", None)
    if bits is not None:
        return float(bits)
    sizes = getattr(quantizer, "stage_sizes", None) or (quantizer.codebook_size,)
    return float(sum(math.log2(k) for k in sizes))


def rate_tags(model: torch.nn.Module, quantizer: torch.nn.Module, dataset: Any,
              device: torch.device) -> dict[str, str]:
    """``harness.bits_per_token`` (the quantizer's own ``bits_per_token``), tokens and pixels per item.

    A model whose single-item forward fails still gets its cell run: the tokens are
    then left unrecorded with the reason (``harness.rate_error``), never guessed.
    """
    tags = {RATE_TAGS[0]: f"{bits_per_token(quantizer):.6g}"}
    try:
        tokens, pixels = tokens_and_pixels(model, dataset[0], device)
    except Exception as exc:  # the cell's own forward pass will report a real model error
        return {**tags, "harness.rate_error": f"{type(exc).__name__}: {exc}"[:500]}
    tags[RATE_TAGS[1]] = str(tokens)
    if pixels:
        tags[RATE_TAGS[2]] = str(pixels)
    return tags


# -- the suite's ranking rules -----------------------------------------------------------

def suite_tags(host: Any, suite: Any) -> dict[str, str]:
    """The primary metric and each metric's direction, for the parent run of ``harness run``."""
    directions = {}
    for spec in suite.data.get("eval", {}).get("metrics", []):
        name = spec if isinstance(spec, str) else spec.get("name", "") if isinstance(spec, dict) else ""
        if (higher := host.higher_is_better(name)) is not None:
            directions[name] = higher
    return {PRIMARY_TAG: suite.primary_metric, DIRECTIONS_TAG: json.dumps(directions, sort_keys=True)}
