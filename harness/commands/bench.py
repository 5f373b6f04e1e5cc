"""``harness bench``: forward+backward time and peak memory of every quantizer (a benchmark, not a test).

Shapes follow issue 7: tokens N in {4,096, 65,536}, codes K in {1,024, 65,536},
dim D in {8, 64}. Each measurement is the median of ``repeats`` timed steps after
warm-up. Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU,
where PyTorch keeps no allocator statistics, it is the peak resident set size
sampled every millisecond by a watcher thread, minus the size before the step,
with glibc told to return every allocation over 128 KiB to the system when freed
(so RSS follows live tensors; short spikes under 1 ms can be missed).

With ``--peer``, the methods that vector-quantize-pytorch also implements run on
the same shapes in the same process, and the table gives ours/peer ratios.
"""

from __future__ import annotations

import gc
import itertools
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.host import Host

TOKENS = (4096, 65536)
CODES = (1024, 65536)
DIMS = (8, 64)
#: a measurement whose dense distance matrix alone would exceed this is skipped for the peer
PEER_MEMORY_LIMIT = 6 * 2**30


@dataclass
class Measurement:
    library: str
    method: str
    tokens: int
    codes: int
    dim: int
    device: str
    ms: float | None = None
    peak_mib: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> str:
        return f"N{self.tokens}-K{self.codes}-D{self.dim}"


def exact_cpu_memory() -> None:
    """Make resident memory follow live tensors: allocations over 128 KiB go through mmap
    (glibc's dynamic threshold disabled), so freed tensors leave RSS at once."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the numbers become upper bounds
        pass


class RssPeak:
    """Peak resident memory above the starting point while the block runs (CPU)."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self) -> RssPeak:
        self.base = self.rss()
        self.peak = self.base
        self._stop = threading.Event()

        def watch() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.rss())
                time.sleep(self.interval)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def extra_bytes(self) -> int:
        return self.peak - self.base


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step: Callable[[], None], device: torch.device, repeats: int, warmup: int = 1
              ) -> tuple[float, float]:
    """Median milliseconds of ``step`` and its peak extra memory in MiB."""
    for _ in range(warmup):
        step()
    _sync(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    watcher = RssPeak() if device.type == "cpu" else None
    if watcher:
        exact_cpu_memory()
        watcher.__enter__()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            _sync(device)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        if watcher:
            watcher.__exit__(None, None, None)
    peak = (torch.cuda.max_memory_allocated(device) - base if device.type == "cuda"
            else watcher.extra_bytes)
    return statistics.median(times), peak / 2**20


def quantizer_step(module: torch.nn.Module, z: torch.Tensor, forward: Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                   ) -> Callable[[], None]:
    """One training step's worth of work: forward, a loss on the output, backward."""

    def step() -> None:
        module.zero_grad(set_to_none=True)
        z.grad = None
        z_q, aux = forward(module, z)
        (z_q.float().pow(2).mean() + aux).backward()

    return step


def ours_forward(module: torch.nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = module(z)
    return out.z_q, out.loss


# -- running ------------------------------------------------------------------------------

def peer_library() -> tuple[dict[str, Callable[[int, int], torch.nn.Module]], Callable[..., Any]]:
    """The peer library's modules by our method names, and its forward (``harness.plugins.peers``)."""
    from harness.plugins.peers import peer_builders, peer_forward

    return peer_builders(), peer_forward


def bench_quantizers(
    host: Host,
    names: Iterable[str],
    device: torch.device,
    *,
    tokens: Iterable[int] = TOKENS,
    codes: Iterable[int] = CODES,
    dims: Iterable[int] = DIMS,
    repeats: int = 3,
    peer: bool = False,
    progress: Callable[[Measurement], None] | None = None,
) -> list[Measurement]:
    """Time every quantizer (and its peer) at every shape; failures become notes, not crashes."""
    builders, peer_forward = peer_library() if peer else ({}, None)
    results = []
    for name, n, k, d in itertools.product(list(names), tokens, codes, dims):
        ours_cls = host.quantizers.get(name).obj
        runs = [("vq-harness", lambda c=ours_cls, d=d, k=k: c(dim=d, codebook_size=k), ours_forward)]
        if name in builders:
            runs.append(("vector-quantize-pytorch", lambda b=builders[name], d=d, k=k: b(d, k), peer_forward))
        for library, build, forward in runs:
            m = Measurement(library, name, n, k, d, device.type)
            limit = getattr(ours_cls, "max_bench_codes", None)
            if library == "vq-harness" and limit is not None and k > limit:
                m.note = f"skipped: the method's cost is quadratic in K (declares max_bench_codes = {limit})"
            elif library != "vq-harness" and name != "fsq" and n * k * 4 > PEER_MEMORY_LIMIT:
                m.note = f"skipped: a dense {n}x{k} distance matrix needs {n * k * 4 / 2**30:.0f} GiB"
            else:
                try:
                    torch.manual_seed(0)
                    module = build().to(device).train()
                    z = torch.randn(n, d, device=device, requires_grad=True)
                    m.ms, m.peak_mib = time_step(quantizer_step(module, z, forward), device, repeats)
                except Exception as exc:  # a method that cannot take this shape is a finding
                    m.note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                finally:
                    module = z = None
                    gc.collect()
            results.append(m)
            if progress:
                progress(m)
    return results


def bench_search(device: torch.device, tokens: int = 131072, codes: int = 65536, dim: int = 64,
                 repeats: int = 3) -> dict[str, float]:
    """``harness.ops.nearest_code`` against one matrix product of the same shapes plus an argmin.

    The baseline computes the same product in the same row chunks (the full
    matrix would not fit) and takes the argmin of each: the unavoidable work.
    """
    from harness.ops import DEFAULT_BLOCK_BYTES, nearest_code

    torch.manual_seed(0)
    z = torch.randn(tokens, dim, device=device)
    c = torch.randn(codes, dim, device=device)
    chunk = max(1, DEFAULT_BLOCK_BYTES // (4 * codes))

    def baseline() -> None:
        for start in range(0, tokens, chunk):
            (z[start:start + chunk] @ c.t()).argmin(1)

    base_ms, base_mib = time_step(baseline, device, repeats)
    ours_ms, ours_mib = time_step(lambda: nearest_code(z, c), device, repeats)
    return {"tokens": tokens, "codes": codes, "dim": dim, "search_ms": ours_ms,
            "matmul_argmin_ms": base_ms, "ratio": ours_ms / base_ms, "search_extra_mib": ours_mib,
            "baseline_extra_mib": base_mib}


def ratios(results: list[Measurement]) -> dict[tuple[str, str, str], float]:
    """ours/peer time ratio per (method, shape, device) where both ran."""
    ours = {(m.method, m.shape, m.device): m for m in results if m.library == "vq-harness" and m.ms}
    out = {}
    for m in results:
        key = (m.method, m.shape, m.device)
        if m.library != "vq-harness" and m.ms and key in ours:
            out[key] = ours[key].ms / m.ms
    return out


def table_rows(results: list[Measurement]) -> list[list[Any]]:
    by_key: dict[tuple[str, str, str], dict[str, Measurement]] = {}
    for m in results:
        by_key.setdefault((m.method, m.shape, m.device), {})[m.library] = m
    rows = []
    for (method, shape, device), libs in by_key.items():
        ours, peer = libs.get("vq-harness"), libs.get("vector-quantize-pytorch")

        def fmt(m: Measurement | None, attr: str) -> str:
            if m is None:
                return ""
            value = getattr(m, attr)
            return f"{value:.1f}" if value is not None else (m.note or "–")

        time_ratio = (f"{ours.ms / peer.ms:.2f}x" if ours and peer and ours.ms and peer.ms else "")
        mem_ratio = (f"{ours.peak_mib / peer.peak_mib:.2f}x" if ours and peer and ours.peak_mib and peer.peak_mib
                     and peer.peak_mib > 0 else "")
        rows.append([method, shape, device, fmt(ours, "ms"), fmt(ours, "peak_mib"), fmt(peer, "ms"),
                     fmt(peer, "peak_mib"), time_ratio, mem_ratio])
    return rows


HEADERS = ["method", "shape", "device", "ours ms", "ours MiB", "peer ms", "peer MiB", "time ours/peer",
           "memory ours/peer"]


def run(args: Any, host: Host) -> int:
    """The ``harness bench`` command: measure, print the table, record it in MLflow."""
    from harness.cell.runner import resolve_device
    from harness.report.table import markdown

    device = resolve_device(args.device)
    names = args.quantizer or host.quantizers.names()
    for name in names:
        host.quantizers.get(name)  # unknown names fail before any work, with close matches

    def show(m: Measurement) -> None:
        value = f"{m.ms:.1f} ms, {m.peak_mib:.0f} MiB" if m.ms is not None else m.note
        print(f"  {m.library:24s} {m.method:14s} {m.shape:22s} {value}", flush=True)

    results = bench_quantizers(host, names, device, tokens=args.tokens, codes=args.codes, dims=args.dims,
                               repeats=args.repeats, peer=args.peer, progress=show)
    table = markdown(HEADERS, table_rows(results))
    print()
    print(table)
    search = None
    if args.search:
        search = bench_search(device, repeats=args.repeats)
        print()
        print(markdown(["tokens", "codes", "dim", "nearest_code ms", "matmul+argmin ms", "ratio",
                        "search extra MiB"],
                       [[search["tokens"], search["codes"], search["dim"], f"{search['search_ms']:.0f}",
                         f"{search['matmul_argmin_ms']:.0f}", f"{search['ratio']:.2f}x",
                         f"{search['search_extra_mib']:.0f}"]]))
    if not args.no_track:
        record(results, search, table, device, args.tracking_uri)
    return 0


def record(results: list[Measurement], search: dict[str, float] | None, table: str, device: torch.device,
           uri: str | None) -> None:
    """One run in the ``bench`` experiment: a metric per measurement, the table as an artifact."""
    from harness import __version__
    from harness.tracking import Tracker, git_commit, tags_for

    tracker = Tracker(uri)
    run_id = tracker.start_run("bench", f"bench-{device.type}", tags_for([
        ("kind", "bench"), ("device", str(device)), ("version", __version__), ("git_commit", git_commit()),
        ("torch", torch.__version__)]))
    values: dict[str, float] = {}
    for m in results:
        if m.ms is not None:
            prefix = f"{m.library}/{m.method}/{m.shape}"
            values[f"{prefix}/ms"] = m.ms
            values[f"{prefix}/peak_mib"] = m.peak_mib or 0.0
    for (method, shape, _device), ratio in ratios(results).items():
        values[f"ratio/{method}/{shape}"] = ratio
    if search:
        values.update({f"search/{k}": float(v) for k, v in search.items()})
    tracker.log_metrics(run_id, values)
    tracker.log_text(run_id, table, "bench.md")
    tracker.end_run(run_id)
