"""What a ``harness run`` was asked to do, shared by the suite lifecycle and each cell."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunOptions:
    device: str = "auto"
    data_root: Path | None = None
    tracking_uri: str | None = None
    shard: tuple[int, int] | None = None
    progress: bool = True
    resume: bool = False  # skip finished cells, continue interrupted ones (harness.resume)
    jobs: int = 1  # cells in parallel processes (harness.parallel)
