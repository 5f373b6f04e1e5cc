"""Checks on the MLflow store before it is trusted: the URI names a file, its pages are whole,
the lock that serialises its creation cannot hang a run for ever, and a store that refuses a
write for want of space is told apart from any other full disk (harness.recovery.diskfull
turns that into the suite's one-line stop).

:class:`harness.tracking.Tracker` calls :func:`check_store` before opening a
store and takes :func:`init_lock` while MLflow creates or migrates its tables.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, UsageError, env_number

#: seconds a process waits for another one creating the same SQLite store ($HARNESS_STORE_LOCK_TIMEOUT)
LOCK_TIMEOUT_S = 120.0
LOCK_TIMEOUT_ENV = "HARNESS_STORE_LOCK_TIMEOUT"
#: the store this command already checked (``quick_check`` reads every page: 1.4 s for 145 MB)
VERIFIED = "HARNESS_STORE_VERIFIED"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else ``None``."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_store(uri: str) -> None:
    """A ``sqlite:`` URI must name a database file, and an existing one must be whole."""
    path = sqlite_path(uri)
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"the tracking URI {uri} names the folder {path}, not a database file; "
                         f"use sqlite:///{path / 'mlflow.db'}")
    if path.is_file() and path.stat().st_size and os.environ.get(VERIFIED) != str(path.resolve()):
        problem = integrity_problem(path)
        if problem:
            raise HarnessError(f"the MLflow store {path} is damaged ({problem}); it was not used. Restore "
                               "it from a backup, or recover what SQLite can read (`sqlite3 mlflow.db "
                               "'.recover' | sqlite3 recovered.db`), or pass --tracking-uri to a new store")
        # once per command: its other trackers and its worker processes (which inherit it) skip the scan
        os.environ[VERIFIED] = str(path.resolve())


def integrity_problem(path: Path) -> str | None:
    """``None`` when SQLite's ``quick_check`` finds every page whole, else its first findings."""
    try:
        with _readonly(path) as db:
            rows = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as exc:
        return f"{type(exc).__name__}: {exc}"
    if rows == ["ok"]:
        return None
    return "; ".join(str(r) for r in rows)[:500]


@contextmanager
def _readonly(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        yield db
    finally:
        db.close()


def lock_file(uri: str) -> Path:
    """Beside the store (``.mlflow.db.harness-lock``): every user who can write the store shares it,
    and no user's leftover lock in a shared temporary folder blocks another's."""
    path = sqlite_path(uri)
    assert path is not None
    return path.parent / f".{path.name}.harness-lock"


def _open_lock(path: Path) -> tuple[int | None, bool]:
    """The lock file's descriptor and whether this process may write its holder line into it.

    A lock file another user created is locked read-only (``flock`` needs no write access); one
    this process creates is made writable for every user who can reach the store's folder.
    ``None``: the folder is read-only and holds no lock file (nothing can create the store there)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        try:
            return os.open(path, os.O_RDONLY), False
        except OSError:
            return None, False
    with contextlib.suppress(OSError):  # only the owner may; others then write no holder line
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o666)
    return fd, True


def _owner(path: Path) -> str:
    try:
        import pwd

        uid = path.stat().st_uid
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (OSError, KeyError, ImportError):
        return "an unknown user"


@contextmanager
def init_lock(uri: str, timeout: float | None = None) -> Iterator[None]:
    """An exclusive ``flock`` while a SQLite store is created or migrated, waited for at most
    ``timeout`` seconds (``$HARNESS_STORE_LOCK_TIMEOUT``, default 120); the holder writes who it
    is into the lock file, so a timeout names the process and the user to look at."""
    if not uri.startswith("sqlite:///") or os.name == "nt":
        yield
        return
    import fcntl

    timeout = env_number(LOCK_TIMEOUT_ENV, LOCK_TIMEOUT_S) if timeout is None else timeout
    path = lock_file(uri)
    fd, writable = _open_lock(path)
    if fd is None:  # a read-only folder: only reading is possible, and reading needs no lock
        yield
        return
    try:
        _acquire(fd, path, uri, timeout, fcntl)
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:200]}), "
                      f"since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, uri: str, timeout: float, fcntl: Any) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                raise HarnessError(f"the MLflow store {uri} is being created or migrated by another "
                                   f"process and its lock ({path}, created by {_owner(path)}) was not "
                                   f"released within {timeout:g} s; held by "
                                   f"{holder or 'a process that did not say who it is'}. If that "
                                   "process is gone or stuck, stop it and run again") from None
            time.sleep(0.1)


# -- a full store, told apart from a full disk --------------------------------------------------

#: what SQLite (directly or through a tracking server) and the OS say when a disk is full
STORE_FULL = "database or disk is full"
DISK_FULL = (STORE_FULL, "no space left on device", "disk quota exceeded")
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def is_disk_full(error: BaseException | str | None) -> bool:
    """True for an error (or its recorded text) that says a disk is full."""
    if error is None:
        return False
    if isinstance(error, str):
        return any(needle in error.lower() for needle in DISK_FULL)
    return any((isinstance(e, OSError) and e.errno in FULL_ERRNOS) or is_disk_full(str(e)) for e in _chain(error))


def is_store_full(error: BaseException | str | None) -> bool:
    """True when the store itself refused a write for want of space (SQLite's own words)."""
    if error is None:
        return False
    if isinstance(error, str):
        return STORE_FULL in error.lower()
    return any(is_store_full(str(e)) for e in _chain(error))


class _QuietFullStore(logging.Filter):
    """MLflow logs a full traceback for every SQL error; the harness reports a full store itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (is_store_full(error) or is_store_full(record.getMessage()))


def quiet_mlflow_logs() -> None:
    """Install the filter once per process (every :class:`harness.tracking.Tracker` calls this)."""
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _QuietFullStore) for f in logger.filters):
        logger.addFilter(_QuietFullStore())
