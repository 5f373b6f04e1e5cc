"""State is verified before it is trusted: damaged checkpoints and stores are found, never used.

Real bytes are overwritten inside real files; the end-to-end cases drive real ``harness`` processes.
"""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from harness.cell.train import train
from harness.errors import HarnessError
from harness.recovery import checkpoint
from tests.robustness.conftest import (
    cell_runs,
    child_env,
    finish,
    interrupt,
    run,
    running_cell_with_metric,
    start,
    suite_runs,
    wait_for,
)
from tests.robustness.test_checkpoint import make_state

# -- checkpoints --------------------------------------------------------------------------

def tensor_records(path: Path) -> list[tuple[str, int, int]]:
    """``(name, offset of its first byte in the file, size)`` of every tensor record of a torch zip."""
    out = []
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if "/data/" not in info.filename or info.file_size == 0:
                continue
            assert info.compress_type == zipfile.ZIP_STORED
            raw.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", raw.read(4))
            out.append((info.filename, info.header_offset + 30 + name_len + extra_len, info.file_size))
    return out


def overwrite(path: Path, offset: int, n: int = 4) -> None:
    """Flip ``n`` bytes at ``offset`` in place (what a bad sector or a stray write does)."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        old = handle.read(n)
        handle.seek(offset)
        handle.write(bytes(b ^ 0x5A for b in old))


@pytest.fixture
def saved(tiny_suite: Path, tmp_path: Path) -> tuple[Path, str]:
    state, train_set, key = make_state(tiny_suite, steps=4)
    train(state, train_set, [], log=lambda values, step: None)  # optimizer moments: more tensor records
    path = tmp_path / "tiny" / f"{key}.pt"
    checkpoint.save(path, checkpoint.capture(state, [], key))
    return path, key


def test_checkpoint_carries_content_and_config_hash(saved):
    path, key = saved
    payload = checkpoint.load(path, config_hash=key)
    assert payload["config_hash"] == key
    assert payload[checkpoint.HASH_KEY] == checkpoint.content_hash(payload)
    with pytest.raises(HarnessError, match=f"belongs to config {key}, not other"):
        checkpoint.load(path, config_hash="other")


def test_every_tensor_record_overwritten_is_detected(saved, tmp_path: Path):
    """Each tensor record of a real checkpoint, damaged in turn: every one is found, none loads."""
    path, key = saved
    records = tensor_records(path)
    assert len(records) >= 10
    for name, offset, size in records:
        copy = tmp_path / "copy.pt"
        shutil.copy(path, copy)
        overwrite(copy, offset + size // 2, min(4, size))
        assert torch.load(copy, weights_only=True)  # torch itself loads the damaged file silently
        with pytest.raises(HarnessError, match="is damaged: its content does not match its content_sha256"):
            checkpoint.load(copy, config_hash=key)
        assert not copy.exists() and (tmp_path / "copy.pt.damaged").exists(), name  # moved aside
        (tmp_path / "copy.pt.damaged").unlink()


def test_an_unhashed_checkpoint_is_not_trusted(saved):
    path, _key = saved
    payload = torch.load(path, weights_only=True)
    del payload[checkpoint.HASH_KEY]
    torch.save(payload, path)
    with pytest.raises(HarnessError, match="is damaged"):
        checkpoint.load(path)


def test_resume_from_a_damaged_checkpoint_never_records_finished(workdir: Path, store: str, tiny):
    """SIGINT leaves a checkpoint; bytes inside one of its tensors are overwritten; ``--resume`` fails the
    cell naming the damage (no FINISHED run from damaged state); the next ``--resume`` starts afresh."""
    suite = tiny(steps=1000, log_every=5)
    args = ["run", str(suite), "-q", "vq", "--seeds", "1", "--no-progress"]
    proc = start(args, workdir)
    wait_for(lambda: running_cell_with_metric(store), "a RUNNING cell with a train metric", proc=proc)
    interrupt(proc, signal.SIGINT)
    rc, _out, err = finish(proc)
    assert rc == 130, err
    [killed] = cell_runs(store)
    ckpt = Path(killed.data.tags["harness.checkpoint"])
    name, offset, size = max(tensor_records(ckpt), key=lambda r: r[2])
    overwrite(ckpt, offset + size // 2)

    rc, _out, err = run([*args, "--resume"], workdir)
    assert rc == 1, err
    resumed = [r for r in cell_runs(store) if r.info.run_id != killed.info.run_id]
    assert [r.info.status for r in resumed] == ["FAILED"]
    assert "is damaged: its content does not match its content_sha256" in resumed[0].data.tags["harness.error"]
    assert not ckpt.exists() and ckpt.with_name(ckpt.name + ".damaged").exists()

    rc, _out, err = run([*args, "--resume"], workdir)
    assert rc == 0, err
    finished = [r for r in cell_runs(store) if r.info.status == "FINISHED"]
    assert len(finished) == 1 and "harness.resumed_from" not in finished[0].data.tags  # started afresh


# -- the store ------------------------------------------------------------------------------

def damage_pages(db: Path, page_size: int = 4096) -> None:
    data = bytearray(db.read_bytes())
    for page in range(2, len(data) // page_size, 3):  # the header of every third b-tree page
        data[page * page_size: page * page_size + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))


def test_a_store_with_damaged_pages_is_reported_not_used(workdir: Path, store: str, tiny_suite: Path):
    rc, _out, err = run(["run", str(tiny_suite), "-q", "vq", "--seeds", "1", "--set", "train.steps=2",
                         "--no-progress"], workdir)
    assert rc == 0, err
    db = workdir / "mlflow.db"
    damage_pages(db)
    before = db.read_bytes()
    rc, _out, err = run(["run", str(tiny_suite), "-q", "vq", "--seeds", "1", "--set", "train.steps=2",
                         "--no-progress"], workdir)
    assert rc == 1
    assert f"the MLflow store {db} is damaged (" in err and "it was not used" in err
    assert "Traceback" not in err
    assert db.read_bytes() == before  # not written to
    rc, _out, err = run(["runs", "repair"], workdir)
    assert rc == 1 and "is damaged" in err


def test_a_sqlite_uri_naming_a_folder_fails_at_once(workdir: Path, tiny_suite: Path):
    folder = workdir / "store"
    folder.mkdir()
    rc, _out, err = run(["run", str(tiny_suite), "--tracking-uri", f"sqlite:///{folder}", "--no-progress"], workdir)
    assert rc == 2
    assert f"names the folder {folder}, not a database file; use sqlite:///{folder / 'mlflow.db'}" in err
    assert list(folder.iterdir()) == []


HOLD = """
import sys, time
from harness.tracking.store import init_lock
with init_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_held_store_lock_times_out_naming_its_holder(workdir: Path, tiny_suite: Path):
    uri = f"sqlite:///{workdir / 'new.db'}"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, uri], env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, _out, err = run(["run", str(tiny_suite), "--tracking-uri", uri, "--no-progress"], workdir,
                            HARNESS_STORE_LOCK_TIMEOUT="2")
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert rc == 1
    assert "was not released within 2 s; held by pid " + str(holder.pid) in err
    assert "Traceback" not in err
    assert suite_runs(uri) == []
