"""Real unwritable and full folders for the write-failure tests.

``chmod`` does not stop root, so as root these are tmpfs mounts (read-only, or
tiny and filled); as another user a read-only folder is ``chmod 555`` and a
full disk, which needs a mount, is skipped.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}): needs root with CAP_SYS_ADMIN")


@contextmanager
def tmpfs(folder: Path, size: str = "4m") -> Iterator[Path]:
    """A small writable tmpfs at ``folder`` (root only), unmounted afterwards."""
    if not ROOT:
        pytest.skip("a tmpfs mount needs root")
    folder.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=755", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` unwritable for the harness: a read-only tmpfs (root) or mode 555."""
    folder.mkdir(parents=True, exist_ok=True)
    if ROOT:
        _mount("-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder))
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)
    else:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)


def make_read_only(folder: Path) -> None:
    """Turn a :func:`tmpfs` read-only now (retrying while a write holds it busy), or chmod it."""
    if not ROOT:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
        return
    for _ in range(100):
        done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True,
                              timeout=30)
        if done.returncode == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"could not remount {folder} read-only: {done.stderr}")


def fill(folder: Path) -> int:
    """Write into ``folder`` until its disk is full; returns the bytes written."""
    written = 0
    with open(folder / "filler", "wb", buffering=0) as handle:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    written += handle.write(b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written
