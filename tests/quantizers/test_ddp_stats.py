"""Two CPU ranks (gloo) with different data end with identical code statistics and reset decisions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.plugins.quantizers.ema import EMAQuantizer
from harness.plugins.quantizers.nsvq import NSVQ
from harness.plugins.quantizers.vq import VectorQuantizer

WORLD = 2
STEPS = 6


def shared_state(q: torch.nn.Module, local: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in q.state_dict().items() if not k.startswith(local)}


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # two ranks share the machine's cores
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        torch.manual_seed(0)  # same initial modules on both ranks, as DDP's first broadcast makes them
        ema = EMAQuantizer(dim=2, codebook_size=8, kmeans_init=True, dead_code_reset=2)
        vq = VectorQuantizer(dim=2, codebook_size=8, dead_code_reset=2)
        nsvq = NSVQ(dim=2, codebook_size=8, reservoir_size=32, replace_every=2)
        torch.manual_seed(100 + rank)  # different data and different local random draws per rank
        resets = {"ema": 0.0, "vq": 0.0, "nsvq": 0.0}
        batches = []
        for _ in range(STEPS):
            z = torch.randn(16, 2) * 0.5 + (3.0 if rank else -3.0)
            batches.append(z)
            for name, q in (("ema", ema), ("vq", vq), ("nsvq", nsvq)):
                logs = q(z).logs
                resets[name] += float(logs.get("codes_reset", logs.get("codes_replaced", 0.0)))
        torch.save({
            "data": torch.cat(batches),
            "resets": resets,
            "ema": shared_state(ema),
            "vq": shared_state(vq),
            # the reservoir is local by design: replacements come from rank 0's copy
            "nsvq": shared_state(nsvq, local=("reservoir.",)),
        }, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_code_statistics_and_reset_decisions_agree_across_ranks(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    assert not torch.allclose(r0["data"], r1["data"]), "the ranks must see different data"
    for name in ("ema", "vq", "nsvq"):
        assert r0["resets"][name] > 0, f"{name}: the run should exercise code replacement"
        assert r0["resets"][name] == r1["resets"][name]
        assert r0[name].keys() == r1[name].keys()
        for key in r0[name]:
            assert torch.equal(r0[name][key], r1[name][key]), f"{name}.{key} differs between ranks"
    # the statistics are global: rank 0 saw only tokens near -3, yet its codes also cover +3
    codes = r0["ema"]["embedding"][:, 0]
    assert (codes < -2).any() and (codes > 2).any()
