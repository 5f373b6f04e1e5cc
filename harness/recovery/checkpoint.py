"""Cell checkpoints: what a cell needs to continue after an interruption, saved atomically.

A checkpoint holds the model, quantizer and optimizer state, the
:class:`~harness.cell.train.TrainState` counters and loss weights, the RNG states,
and the state of schedules, quantizer attributes and ``state.extras`` objects
(a discriminator and its optimizer). Everything is a tensor or a plain
container of numbers and strings, so it loads with ``torch.load(weights_only=True)``:
resuming never unpickles code.

Checkpoints live on local disk, not in MLflow, so a process killed mid-write
never leaves a half artifact in the store, and the next process finds them
without a round trip to a server:

- ``$HARNESS_CHECKPOINT_DIR`` when set;
- beside a SQLite store: ``<folder of mlflow.db>/.harness/checkpoints``;
- otherwise (a tracking server): ``./.harness/checkpoints`` in the working folder.

Each cell has one file, ``<suite>/<config_hash>.pt``: the same resolved config
is the same experiment, whichever process or shard ran it. A finished cell
deletes its file (its final weights are the run's ``checkpoint/final.pt``).

A checkpoint carries ``content_sha256``, a hash of every tensor's bytes, dtype
and shape and of every plain value, and ``config_hash``; :func:`load` recomputes
the hash and compares both, so bytes overwritten inside a tensor (a bad disk,
a stray write) are found before the state is trusted. A damaged file is moved
aside (``<name>.damaged``) so that the next ``--resume`` starts the cell afresh.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.errors import HarnessError

FORMAT = 2  # 2: with content_sha256
HASH_KEY = "content_sha256"
PLAIN = (bool, int, float, str)


def checkpoint_root(tracking_uri: str) -> Path:
    """Where this store's checkpoints live (see the module docstring)."""
    if os.environ.get("HARNESS_CHECKPOINT_DIR"):
        return Path(os.environ["HARNESS_CHECKPOINT_DIR"]).resolve()
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):]).resolve().parent / ".harness" / "checkpoints"
    return Path.cwd().resolve() / ".harness" / "checkpoints"


def checkpoint_path(root: Path, suite: str, config_hash: str) -> Path:
    return root / suite / f"{config_hash}.pt"


# -- what goes in --------------------------------------------------------------------

def plain_attributes(obj: Any) -> dict[str, Any]:
    """Public attributes holding a number, flag or string (a schedule's counters, a weight
    a schedule decays on the quantizer); module internals and tensors are left out."""
    return {k: v for k, v in vars(obj).items()
            if not k.startswith("_") and k != "training" and isinstance(v, PLAIN)}


def _object_state(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return {"state_dict": obj.state_dict()}
    return {"attributes": plain_attributes(obj)}


def _load_object_state(obj: Any, saved: dict[str, Any]) -> None:
    if "state_dict" in saved and hasattr(obj, "load_state_dict"):
        obj.load_state_dict(saved["state_dict"])
    for key, value in saved.get("attributes", {}).items():
        setattr(obj, key, value)


def rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def capture(state: Any, schedules: list[Any], config_hash: str) -> dict[str, Any]:
    """A checkpoint of ``state`` (a :class:`~harness.cell.train.TrainState`) between two steps."""
    extras: dict[str, Any] = {}
    for key, value in state.extras.items():
        if isinstance(value, PLAIN):
            extras[key] = {"value": value}
        elif hasattr(value, "state_dict"):
            extras[key] = {"state_dict": value.state_dict()}
    return {
        "format": FORMAT,
        "config_hash": config_hash,
        "step": int(state.step),
        "epoch": int(state.epoch),
        "loss_weights": {k: float(v) for k, v in state.loss_weights.items()},
        "model": _unwrap(state.model).state_dict(),
        "quantizer": state.quantizer.state_dict(),
        "quantizer_attributes": plain_attributes(state.quantizer),
        "optimizer": state.optimizer.state_dict(),
        "schedules": [_object_state(s) for s in schedules],
        "extras": extras,
        "rng": rng_states(),
    }


def restore(state: Any, schedules: list[Any], payload: dict[str, Any]) -> None:
    """Put a checkpoint back into a freshly built ``state`` (same config)."""
    _unwrap(state.model).load_state_dict(payload["model"])
    state.quantizer.load_state_dict(payload["quantizer"])
    for key, value in payload["quantizer_attributes"].items():
        setattr(state.quantizer, key, value)
    state.optimizer.load_state_dict(payload["optimizer"])
    state.step, state.epoch = payload["step"], payload["epoch"]
    state.loss_weights.update(payload["loss_weights"])
    if len(payload["schedules"]) != len(schedules):
        raise HarnessError(f"checkpoint has {len(payload['schedules'])} schedules, the cell has {len(schedules)}")
    for schedule, saved in zip(schedules, payload["schedules"], strict=True):
        _load_object_state(schedule, saved)
    for key, saved in payload["extras"].items():
        if "value" in saved:
            state.extras[key] = saved["value"]
        elif key in state.extras:
            _load_object_state(state.extras[key], saved)
    set_rng_states(payload["rng"])


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (its state dict has no ``module.``)."""
    return getattr(model, "module", model)


# -- content hash -----------------------------------------------------------------------

def content_hash(payload: Any) -> str:
    """SHA-256 over the payload's structure, plain values and tensor bytes (not the hash itself)."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != HASH_KEY} if isinstance(payload, dict) else payload)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}:".encode())  # a tuple may load back as a list
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{type(value).__name__}:{value!r};".encode())


# -- on disk ---------------------------------------------------------------------------

def save(path: Path, payload: dict[str, Any]) -> Path:
    """Write atomically: a temp file in the same folder, fsync, then ``os.replace``.

    A process killed at any moment leaves either the previous checkpoint or the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, HASH_KEY: content_hash(payload)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: Path, config_hash: str | None = None) -> dict[str, Any]:
    """Load with ``weights_only=True`` and verify the content hash (and ``config_hash`` if given).

    A file that cannot be read or whose content does not match its hash is moved
    aside and reported: the error says so, and the next ``--resume`` starts afresh.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HarnessError(f"checkpoint {path} not found") from None
    except Exception as exc:
        raise damaged(path, f"cannot be read ({type(exc).__name__}: {str(exc)[:300]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise HarnessError(f"checkpoint {path} is not a harness checkpoint of format {FORMAT} (found "
                           f"{found!r}; format 1 had no content hash); delete it to start the cell again")
    if content_hash(payload) != payload.get(HASH_KEY):
        raise damaged(path, "is damaged: its content does not match its content_sha256")
    if config_hash is not None and payload.get("config_hash") != config_hash:
        raise HarnessError(f"checkpoint {path} belongs to config {payload.get('config_hash')}, not {config_hash}")
    return payload


def damaged(path: Path, what: str) -> HarnessError:
    """Move a damaged checkpoint aside (never trusted, never deleted unseen) and say where it went."""
    aside = path.with_name(path.name + ".damaged")
    try:
        os.replace(path, aside)
        moved = f"moved to {aside}; the next --resume starts the cell afresh"
    except OSError as exc:
        moved = f"could not be moved aside ({exc.strerror}); delete it to start the cell again"
    return HarnessError(f"checkpoint {path} {what}; {moved}")


class Checkpointer:
    """Saves one cell's checkpoints: every ``train.checkpoint_every`` steps and on demand.

    Handed to the training loop as a schedule, so its ``on_step`` runs between
    steps, when ``state`` is consistent (``state.step`` steps done).
    """

    name = "checkpoint"

    def __init__(self, path: Path, config_hash: str, schedules: list[Any], every: int | None) -> None:
        self.path, self.config_hash, self.schedules = path, config_hash, schedules
        self.every = every if every and every > 0 else None
        self.saved_step: int | None = None

    def save(self, state: Any) -> Path:
        save(self.path, capture(state, self.schedules, self.config_hash))
        self.saved_step = int(state.step)
        return self.path

    def on_train_start(self, state: Any) -> None:
        """Nothing before the first step."""

    def on_step(self, state: Any) -> None:
        if self.every and state.step > 0 and state.step % self.every == 0 and state.step != self.saved_step:
            self.save(state)

    def on_epoch_end(self, state: Any) -> None:
        """Periodic saves follow steps, not epochs."""

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
