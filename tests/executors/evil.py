"""A quantizer plugin that misbehaves on purpose, installed for real (a dist-info on PYTHONPATH),
so that worker processes discover it through the entry-point group like any plugin.

``mode`` picks the fault, at the ``at_step``-th training forward: ``exit`` (``sys.exit(3)``),
``os_exit`` (``os._exit(1)``), ``segv`` (SIGSEGV), ``hang`` (sleeps for ever), ``slow``
(sleeps ``delay`` seconds every step), ``keyboard_interrupt`` (raises it), ``child`` (starts
``sleep 300`` as a child and another, orphaned, through ``sh``; their pids go to ``pid_file``),
``exit_probe`` (when the worker process exits, writes whether its objects were frozen out of the
final garbage collection to ``pid_file``), ``none``.
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import time
from pathlib import Path

from harness import hookimpl
from harness.plugins.quantizers.vq import VectorQuantizer

ENTRY_POINTS = "[harness]\nevil = evil_plugin\n"


class EvilVQ(VectorQuantizer):
    """VQ that crashes, exits or hangs at a chosen training step (isolation tests)."""

    name = "evil-vq"

    def __init__(self, dim: int, codebook_size: int, mode: str = "none", at_step: int = 3,
                 delay: float = 0.0, pid_file: str = "") -> None:
        super().__init__(dim, codebook_size)
        self.mode, self.at_step, self.delay, self.calls = mode, at_step, delay, 0
        self.pid_file = pid_file

    def forward(self, z):
        if self.training:
            self.calls += 1
            if self.mode == "slow":
                time.sleep(self.delay)
            elif self.calls == self.at_step and self.mode == "child":
                start_children(self.pid_file)
            elif self.calls == self.at_step and self.mode == "exit_probe":
                atexit.register(lambda: Path(self.pid_file).write_text(f"frozen={gc.get_freeze_count() > 0}"))
            elif self.calls == self.at_step:
                misbehave(self.mode)
        return super().forward(z)


def misbehave(mode: str) -> None:
    if mode == "exit":
        sys.exit(3)
    if mode == "os_exit":
        os._exit(1)
    if mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "hang":
        while True:
            time.sleep(1000)
    if mode == "keyboard_interrupt":  # the plugin's own code, not a signal
        raise KeyboardInterrupt


def start_children(pid_file: str) -> None:
    """A child ``sleep 300`` and a grandchild the shell leaves orphaned; the cell goes on."""
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    orphan = subprocess.run(["sh", "-c", "sleep 301 >/dev/null 2>&1 & echo $!"], capture_output=True,
                            text=True, check=True).stdout.strip()
    Path(pid_file).write_text(f"{child.pid} {orphan}\n")


@hookimpl
def harness_register_quantizers(register):
    register(EvilVQ)


def install(folder: Path) -> Path:
    """Make this module an installed plugin under ``folder`` (put it on PYTHONPATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evil_plugin.py").write_text(Path(__file__).read_text())
    info = folder / "evil_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return folder
