"""Two processes under torchrun (gloo, CPU) train one tiny image cell end to end.

Checks that DDP keeps both ranks' parameters identical while each rank reads a
different half of the data, that the discriminator trains under DDP too, that
freezing the encoder mid-run (as ``nsvq-stages`` does) works under DDP, and that
only rank 0 records: exactly one MLflow cell run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

WORKER = textwrap.dedent('''
    import sys
    from pathlib import Path

    import torch
    from torch.utils.data import Dataset

    from harness import hookimpl
    from harness.contracts import DatasetPlugin
    from harness.host import build_host
    from harness.run.lifecycle import RunOptions, run_suite
    from harness.suite import load_suite

    OUT = Path(sys.argv[1])
    SEEN: list[int] = []


    class Recording(Dataset):
        def __init__(self, n: int, seed: int, record: bool) -> None:
            self.x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1
            self.record = record

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> torch.Tensor:
            if self.record:
                SEEN.append(int(i))
            return self.x[i]


    class NoiseImages(DatasetPlugin):
        """Random 32x32 images that remember which items this process read."""

        name = "noise-images"
        modality = "images"

        def build(self, split: str) -> Dataset:
            train = split == "train"
            return Recording(8 if train else 4, 0 if train else 1, record=train)


    def params(state) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v.detach().clone() for k, v in state.model.named_parameters()}
        out.update({f"quantizer.{k}": v.detach().clone() for k, v in state.quantizer.named_parameters()})
        disc = state.extras["discriminator"].discriminator
        out.update({f"disc.{k}": v.detach().clone() for k, v in disc.named_parameters()})
        return out


    class Dump:
        """Saves this rank's parameters at the start and the end, and which items it read."""

        name = "dump-state"

        def __init__(self, adv_from: int = 2) -> None:
            self.adv_from = adv_from

        def on_train_start(self, state) -> None:
            state.loss_weights["adv"] = 0.0
            self.start = params(state)
            SEEN.clear()  # only what the training loop reads

        def on_step(self, state) -> None:
            if state.step == self.adv_from:
                state.loss_weights["adv"] = 1.0
            if state.step == self.adv_from + 1:  # what nsvq-stages does: DDP must cope
                for p in state.model.encoder.parameters():
                    p.requires_grad_(False)
                self.frozen = params(state)

        def on_epoch_end(self, state) -> None:
            if state.step == state.steps_total:
                rank = torch.distributed.get_rank()
                torch.save({"start": self.start, "frozen": self.frozen, "end": params(state), "seen": SEEN,
                            "world": torch.distributed.get_world_size()}, OUT / f"rank{rank}.pt")


    class Plugin:
        @hookimpl
        def harness_register_datasets(self, register):
            register(NoiseImages)

        @hookimpl
        def harness_register_schedules(self, register):
            register(Dump)


    host = build_host({"ddp-test": Plugin()})
    suite = load_suite(sys.argv[2])
    result = run_suite(suite, options=RunOptions(device="cpu", tracking_uri=sys.argv[3], progress=False),
                       host=host)
    sys.exit(1 if result.failed else 0)
''')

SUITE = '''
[suite]
name = "ddp"
version = 1

[dataset]
name = "noise-images"

[model]
name = "conv-small"
params = { hidden = [4, 8] }

[train]
epochs = 2
batch_size = 4
lr = 1e-2
log_every = 2
discriminator = true

[eval]
metrics = ["mse", "utilization"]

[methods.vq]
quantizer = "vq"

[[schedules]]
name = "dump-state"

[matrix]
codebook_size = [8]
dim = [4]
seeds = 1
'''


@pytest.mark.slow
def test_two_ranks_train_identically_and_rank0_records(tmp_path: Path):
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "suite.toml").write_text(SUITE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "GIT_PYTHON_REFRESH": "quiet"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "worker.py"), str(tmp_path), str(tmp_path / "suite.toml"), uri],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["world"] == 2
    # each rank read its own half of the 8 training items in each epoch
    epoch0 = [set(r["seen"][:4]) for r in ranks]
    assert not epoch0[0] & epoch0[1] and epoch0[0] | epoch0[1] == set(range(8))
    end0, end1 = ranks[0]["end"], ranks[1]["end"]
    assert end0.keys() == end1.keys()
    for key in end0:
        assert torch.equal(end0[key], end1[key]), key
    # training moved the model and, once adv > 0, the discriminator
    assert any(not torch.equal(ranks[0]["start"][k], end0[k]) for k in end0 if k.startswith("model."))
    assert any(not torch.equal(ranks[0]["start"][k], end0[k]) for k in end0 if k.startswith("disc."))
    # the encoder frozen for the last step stayed put while the decoder still trained
    frozen = ranks[0]["frozen"]
    assert all(torch.equal(frozen[k], end0[k]) for k in end0 if k.startswith("model._encoder"))
    assert any(not torch.equal(frozen[k], end0[k]) for k in end0 if k.startswith("model._decoder"))

    from harness.tracking import Tracker

    runs = Tracker(uri).runs("ddp")
    cells = [r for r in runs if r.data.tags.get("harness.kind") == "cell"]
    suites = [r for r in runs if r.data.tags.get("harness.kind") == "suite"]
    assert len(cells) == 1 and len(suites) == 1
    assert cells[0].info.status == "FINISHED"
    assert "train/images_per_second" in cells[0].data.metrics
    assert "train/disc_loss" in cells[0].data.metrics
