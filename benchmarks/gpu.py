"""GPU readiness (issue 22): the figures a CUDA machine should produce, in one JSON line (not a test).

    python benchmarks/gpu.py [--steps 400] [--repeats 3] [--batch 128] [--method vq]
    python benchmarks/gpu.py --quick     # every part at tiny sizes; also runs on a CPU

On a CUDA machine the full run takes a few minutes (well under 10). The last
line printed is JSON with one key per part; a part that cannot run says why
(``{"status": "skipped", "reason": ...}``) and a part that crashes reports its
error, so the other figures still come back:

- ``sync``: ``torch.cuda.set_sync_debug_mode("error")`` armed from the second
  training step of a real digits cell (``CellRunner``: MLflow run, callbacks,
  metric writer) and disarmed only while a log step reads the device (the
  divergence check and the log callbacks). ``pass``, or ``fail`` with the first
  synchronizing call (file:line of the innermost harness frames). The logged
  cell **needs mlflow**; without it that check is skipped with the reason and the
  same check runs over the unlogged harness loop (``sync_unlogged``).
- ``throughput``: images/s of the digits cell's training loop
  (``harness.cell.train.train``, standard callbacks, log steps) against a bare
  loop with the same model, quantizer (``--method``, K=256), batch, optimiser and memory
  format, interleaved, medians of ``--repeats``; bf16 autocast for the nets on
  CUDA (the quantizer in float32 in both), float32 on a CPU.
- ``nearest_code``: ``harness.ops.nearest_code`` at 131,072 tokens x 65,536
  codes x dim 64 (it works in row chunks of at most 256 MiB of distances):
  ``torch.cuda.max_memory_allocated`` and the extra over the inputs.
- ``bench``: ``harness bench``'s own measurement function on this device for a
  small method set (the peer library too when it is installed).

Without CUDA and without ``--quick`` nothing is measured: the script prints
``{"cuda": false, "reason": ...}`` and exits 0, so a job may run it anywhere.
Plugins register through entry points, so on a fresh machine install the tree first
(``pip install --no-deps --no-build-isolation -e .``: no network needed); the JSON's
``harness_installed`` says whether that was done. The digits data come from scikit-learn; where it is missing, random images of
the same shape go through the same code path (``data`` in the JSON says which).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("harness") is None:  # a copied tree without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

SIZES = {
    "full": {"method": "vq", "steps": 400, "repeats": 3, "tokens": 131072, "codes": 65536, "dim": 64,
             "bench_methods": ["vq", "ema", "simvq", "residual-vq", "lfq", "fsq"], "bench_tokens": [65536],
             "bench_codes": [1024, 16384], "bench_dims": [32], "sync_steps": 300},
    "quick": {"method": "vq", "steps": 6, "repeats": 1, "tokens": 2048, "codes": 512, "dim": 16,
              "bench_methods": ["vq", "fsq"], "bench_tokens": [256], "bench_codes": [256],
              "bench_dims": [8], "sync_steps": 6},
}
SYNC_ERROR = "synchroniz"  # torch's message: "called a synchronizing CUDA operation"


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the digits cell -----------------------------------------------------------------------------

def digits_cell(steps: int, batch: int, precision: str, method: str = "vq", log_every: int = 50):
    """The digits suite's cell of ``method`` (K=256 where it has one), these settings, no plots."""
    from harness.cell.build import complete_config
    from harness.host import get_host
    from harness.suite import load_suite

    host = get_host()
    suite = load_suite("digits", "full", seeds=1, overrides=[
        f"train.steps={steps}", f"train.batch_size={batch}", f"train.precision={precision}",
        f"train.log_every={log_every}", "train.snapshot_steps=[]", "eval.plots=[]"])
    cells = suite.cells([method])
    cell = next((c for c in cells if c.codebook_size == 256), cells[0])
    return host, suite, cell, complete_config(host, cell)


def train_images(host: Any, config: dict[str, Any]) -> tuple[torch.Tensor, str]:
    """The digits training images, or random images of their shape where the data cannot load."""
    from harness.cell.build import build_dataset

    try:
        return build_dataset(host, config, None).build("train").tensors[0], "digits"
    except Exception as exc:  # scikit-learn missing on a bare GPU machine
        return torch.rand(1297, 1, 8, 8), f"synthetic 1x8x8 (digits unavailable: {type(exc).__name__})"


def build_pair(host: Any, config: dict[str, Any], device: torch.device):
    """Model and quantizer on ``device`` in the memory format the harness would use there."""
    from harness.cell.build import build_model, build_quantizer
    from harness.cell.forward import channels_last

    torch.manual_seed(0)
    model, quantizer = build_model(host, config).to(device), build_quantizer(host, config).to(device)
    fmt = torch.channels_last if channels_last(config, device, model) else torch.contiguous_format
    return model.to(memory_format=fmt), quantizer, fmt


def bare_loop(host: Any, config: dict[str, Any], images: torch.Tensor, device: torch.device) -> float:
    """Seconds of a hand-written loop: same nets, quantizer in fp32, bf16 autocast on CUDA."""
    from harness.cell.forward import to_tokens

    model, quantizer, fmt = build_pair(host, config, device)
    opt = torch.optim.Adam([*model.parameters(), *quantizer.parameters()], lr=config["train"]["lr"])
    x_all = images.to(device).contiguous(memory_format=fmt)
    batch, steps = config["train"]["batch_size"], config["train"]["steps"]
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    sync(device)
    start = time.perf_counter()
    order, pos = torch.randperm(len(x_all), device=device), 0
    for _ in range(steps):
        if pos + batch > len(order):
            order, pos = torch.randperm(len(x_all), device=device), 0
        x = x_all[order[pos:pos + batch]]
        pos += batch
        with amp:
            z = model.encode(x)
        tokens, unflatten = to_tokens(z)
        out = quantizer(tokens.float())
        with amp:
            x_hat = model.decode(unflatten(out.z_q))
        loss = F.mse_loss(x_hat.float(), x) + out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - start


class DeviceLog:
    """A log step without MLflow: the values still leave the device in one transfer."""

    def __call__(self, values: dict[str, Any], step: int) -> None:
        from harness.tracking import as_floats

        as_floats(values)


def harness_loop(host: Any, config: dict[str, Any], images: torch.Tensor, device: torch.device,
                 log: Any) -> float:
    """Seconds of ``harness.cell.train.train`` (standard callbacks, a log every ``log_every``)."""
    from harness.cell.train import TrainState, total_steps, train

    model, quantizer, _ = build_pair(host, config, device)
    opt = torch.optim.Adam([*model.parameters(), *quantizer.parameters()], lr=config["train"]["lr"])
    steps, per_epoch = total_steps(config, len(images))
    state = TrainState(model, quantizer, opt, config, device, steps, per_epoch)
    sync(device)
    start = time.perf_counter()
    train(state, TensorDataset(images), [], log=log)
    sync(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def loop_log(logged: bool):
    """A ``TrackerLog`` into a temporary MLflow store when ``logged``, else :class:`DeviceLog`."""
    if not logged:
        yield DeviceLog()
        return
    from harness.cell.record import TrackerLog
    from harness.tracking import Tracker

    with tempfile.TemporaryDirectory() as folder:
        tracker = Tracker(f"sqlite:///{Path(folder) / 'mlflow.db'}")
        run_id = tracker.start_run("gpu-benchmark", "loop", {})
        try:
            yield TrackerLog(tracker, run_id, {})
        finally:
            tracker.flush(run_id)
            tracker.end_run(run_id)


def throughput(device: torch.device, size: dict[str, Any], batch: int) -> dict[str, Any]:
    """Images/s of the harness loop and the bare loop, interleaved, medians and their ratio."""
    precision = "bf16" if device.type == "cuda" else "fp32"
    host, _, _, config = digits_cell(size["steps"], batch, precision, size["method"])
    images, data = train_images(host, config)
    logged = has_module("mlflow")
    times: dict[str, list[float]] = {"bare": [], "harness": []}
    with loop_log(logged) as log:
        bare_loop(host, config, images, device), harness_loop(host, config, images, device, log)  # warm-up
        for _ in range(size["repeats"]):
            times["bare"].append(bare_loop(host, config, images, device))
            times["harness"].append(harness_loop(host, config, images, device, log))
    per_s = {k: size["steps"] * config["train"]["batch_size"] / statistics.median(v) for k, v in times.items()}
    return {"status": "ok", "method": size["method"], "precision": precision, "data": data, "steps": size["steps"],
            "batch": config["train"]["batch_size"], "repeats": size["repeats"],
            "log": "mlflow" if logged else "device read only (mlflow missing)",
            "bare_images_per_s": round(per_s["bare"], 1), "harness_images_per_s": round(per_s["harness"], 1),
            "harness_over_bare_time": round(per_s["bare"] / per_s["harness"] - 1, 4),
            "spread_s": {k: [round(t, 4) for t in v] for k, v in times.items()}}


# -- the sync check ------------------------------------------------------------------------------

class SyncWatch:
    """Arms sync-debug "error" at each step after the first; a log step's device read disarms it."""

    def __init__(self) -> None:
        self.armed_steps, self.offence, self.step = 0, None, None

    def on_step(self, state: Any) -> None:
        self.step = state.step
        if state.step >= 1:  # step 0 checks the quantizer's contract and copies data: reads on purpose
            torch.cuda.set_sync_debug_mode("error")
            self.armed_steps += 1


def first_offence(exc: BaseException, step: int | None) -> dict[str, Any]:
    """The synchronizing call: the error's first line and the innermost frames of the project."""
    def ours(path: Path) -> bool:
        return ROOT in path.parents or "harness" in path.parts

    def name(path: Path) -> str:
        return str(path.relative_to(ROOT)) if ROOT in path.parents else str(path)

    frames = [(f, Path(f.filename)) for f in traceback.extract_tb(exc.__traceback__)]
    where = [f"{name(p)}:{f.lineno} in {f.name}: {f.line}" for f, p in frames if ours(p)][-3:]
    return {"step": step, "error": str(exc).splitlines()[0][:300], "where": where}


@contextlib.contextmanager
def sync_watch(watch: SyncWatch):
    """Patch the loop so ``watch`` runs first and the divergence check (a log step) disarms it."""
    import harness.cell.stages as stages
    import harness.cell.train as train_module

    original = train_module.run

    class Disarming(train_module.Divergence):
        def check(self) -> None:
            torch.cuda.set_sync_debug_mode("default")
            super().check()

    def watched(state: Any, batches: Any, losses: Any, callbacks: list[Any]) -> Any:
        try:
            return original(state, batches, losses, [watch, *callbacks])
        except RuntimeError as exc:
            if SYNC_ERROR in str(exc) and watch.offence is None:
                watch.offence = first_offence(exc, watch.step)
            raise
        finally:
            torch.cuda.set_sync_debug_mode("default")

    with mock.patch.object(train_module, "Divergence", Disarming), \
            mock.patch.object(train_module, "run", watched), mock.patch.object(stages, "run", watched):
        yield


def sync_verdict(watch: SyncWatch, error: str | None, what: str) -> dict[str, Any]:
    if watch.offence is not None:
        return {"status": "fail", "over": what, "armed_steps": watch.armed_steps, "first": watch.offence}
    if error is not None:
        return {"status": "error", "over": what, "error": error[:500]}
    return {"status": "pass", "over": what, "armed_steps": watch.armed_steps}


def sync_logged_cell(device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """The check over a whole ``CellRunner`` cell (MLflow run, every callback, evaluation after)."""
    from harness.cell.runner import CellRunner
    from harness.run.options import RunOptions
    from harness.tracking import Tracker

    host, suite, cell, _ = digits_cell(size["sync_steps"], 128, "auto", size["method"], log_every=25)
    watch = SyncWatch()
    with tempfile.TemporaryDirectory() as folder, sync_watch(watch):
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        runner = CellRunner(host, suite, Tracker(uri), RunOptions(tracking_uri=uri, progress=False,
                                                                  device=device.type))
        result = runner.run(cell)
    return sync_verdict(watch, result.error if result.status != "FINISHED" else None, "logged digits cell")


def sync_unlogged_loop(device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """The check over ``harness.cell.train.train`` with a device-reading log (no MLflow)."""
    host, _, _, config = digits_cell(size["sync_steps"], 128, "auto", size["method"], log_every=25)
    images, _ = train_images(host, config)
    watch, error = SyncWatch(), None
    with sync_watch(watch):
        try:
            harness_loop(host, config, images, device, DeviceLog())
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    return sync_verdict(watch, error, "harness training loop, no MLflow")


# -- nearest_code and harness bench -------------------------------------------------------------

def nearest_code_memory(device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """Time and memory of one ``nearest_code`` call at the issue's shape."""
    from harness.commands.bench import time_step
    from harness.ops import DEFAULT_BLOCK_BYTES, nearest_code

    n, k, d = size["tokens"], size["codes"], size["dim"]
    torch.manual_seed(0)
    z, codes = torch.randn(n, d, device=device), torch.randn(k, d, device=device)
    ms, extra_mib = time_step(lambda: nearest_code(z, codes), device, size["repeats"])
    out = {"status": "ok", "tokens": n, "codes": k, "dim": d, "ms": round(ms, 3),
           "extra_mib": round(extra_mib, 1), "block_mib": DEFAULT_BLOCK_BYTES / 2**20,
           "full_matrix_mib": n * k * 4 / 2**20}
    if device.type == "cuda":
        out["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        out["note"] = "CPU: extra_mib is the process's peak RSS growth, not torch.cuda.max_memory_allocated"
    return out


def bench(device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """``harness bench``'s measurement (:func:`harness.commands.bench.bench_quantizers`) here."""
    from harness.commands.bench import bench_quantizers
    from harness.host import get_host

    host = get_host()
    known = set(host.quantizers.names())
    methods = [m for m in size["bench_methods"] if m in known]
    peer = has_module("vector_quantize_pytorch")
    results = bench_quantizers(host, methods, device, tokens=size["bench_tokens"], codes=size["bench_codes"],
                               dims=size["bench_dims"], repeats=size["repeats"], peer=peer)
    rows = [{k: v for k, v in dataclasses.asdict(m).items() if v is not None} for m in results]
    return {"status": "ok", "peer": peer, "methods": methods, "rows": rows}


# -- main ----------------------------------------------------------------------------------------

def harness_installed() -> bool:
    """Plugins register through entry points: a copied tree needs ``pip install -e .`` first."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("vq-harness")
    except PackageNotFoundError:
        return False
    return True


def guarded(part: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One part's figures, its seconds, or its error: a crash in one part keeps the others."""
    start = time.perf_counter()
    try:
        out = part()
    except Exception as exc:
        out = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def skipped(reason: str) -> Callable[[], dict[str, Any]]:
    return lambda: {"status": "skipped", "reason": reason}


def measure(device: torch.device, size: dict[str, Any], batch: int) -> dict[str, Any]:
    cuda = device.type == "cuda"
    logged = has_module("mlflow")
    parts = {
        "sync": (lambda: sync_logged_cell(device, size)) if cuda and logged else skipped(
            "needs CUDA" if not cuda else "needs mlflow (the logged cell); see sync_unlogged"),
        "sync_unlogged": (lambda: sync_unlogged_loop(device, size)) if cuda else skipped("needs CUDA"),
        "throughput": lambda: throughput(device, size, batch),
        "nearest_code": lambda: nearest_code_memory(device, size),
        "bench": lambda: bench(device, size),
    }
    return {name: guarded(part) for name, part in parts.items()}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The options; an unknown ``--method`` is a usage error (exit 2) before anything runs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes; runs on a CPU (float32) too")
    parser.add_argument("--steps", type=int, help="training steps per timed loop (default 400, quick 6)")
    parser.add_argument("--repeats", type=int, help="timed repeats per loop (default 3, quick 1)")
    parser.add_argument("--batch", type=int, default=128, help="images per step (digits' own 128)")
    parser.add_argument("--method", default="vq", help="the digits method of the sync and throughput cells")
    args = parser.parse_args(argv)
    from harness.errors import UsageError
    from harness.host import get_host

    try:
        get_host().quantizers.get(args.method)
    except UsageError as exc:
        parser.error(f"--method: {exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print(json.dumps({"cuda": False, "reason": "no CUDA device here: nothing measured; "
                          "`python benchmarks/gpu.py --quick` checks the script on a CPU"}))
        return 0
    size = {**SIZES["quick" if args.quick else "full"], "method": args.method}
    size.update({k: v for k, v in (("steps", args.steps), ("repeats", args.repeats)) if v is not None})
    device = torch.device("cuda" if cuda else "cpu")
    start = time.perf_counter()
    out: dict[str, Any] = {"cuda": cuda, "quick": args.quick, "torch": torch.__version__,
                           "device": torch.cuda.get_device_name(device) if cuda else "cpu",
                           "mlflow": has_module("mlflow"), "harness_installed": harness_installed()}
    if not out["harness_installed"]:
        out["warning"] = ("vq-harness is not installed, so no plugin is registered: run "
                          "`pip install --no-deps --no-build-isolation -e .` first")
    out.update(measure(device, size, args.batch))
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
