"""nsvq (NSVQ 2026, reconstructed): the reservoir, replacement of exactly the unused codes, NS-VQ's loss."""

from __future__ import annotations

import torch

from harness.plugins.quantizers.ns_vq import NonStationaryVQ
from harness.plugins.quantizers.nsvq import NSVQ, Reservoir
from harness.testing import QuantizerConformance

START = torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0], [-50.0, 50.0]])
NEAR = torch.tensor([[0.1, 0.0], [0.9, 1.0], [0.0, 0.2], [1.1, 0.9]])  # uses codes 0 and 1


def quantizer(**params) -> NSVQ:
    q = NSVQ(dim=2, codebook_size=4, **params)
    with torch.no_grad():
        q.embedding.copy_(START)
    return q


def test_docstring_says_it_is_a_reconstruction():
    doc = NSVQ.__doc__ or ""
    assert "reconstruction" in doc.splitlines()[0] and "ONLY ITS ABSTRACT IS PUBLIC" in doc
    assert NSVQ(dim=2, codebook_size=4).reservoir.size == 16384


def test_reservoir_is_a_fifo_ring():
    r = Reservoir(size=4, dim=1)
    r.add(torch.tensor([[1.0], [2.0], [3.0]]))
    assert int(r.filled) == 3 and int(r.ptr) == 3
    r.add(torch.tensor([[4.0], [5.0], [6.0]]))
    # slots 3, 0, 1 take 4, 5, 6: the ring holds the 4 most recent rows
    assert r.data.flatten().tolist() == [5.0, 6.0, 3.0, 4.0]
    assert int(r.filled) == 4 and int(r.ptr) == 2
    assert set(r.sample(20).flatten().tolist()) <= {3.0, 4.0, 5.0, 6.0}
    r.add(torch.arange(10.0)[:, None])  # more rows than slots: 4 of them, all new
    assert set(r.data.flatten().tolist()) <= set(range(10)) and int(r.filled) == 4


def test_epoch_end_replaces_exactly_the_unused_codes_from_the_reservoir():
    q = quantizer()
    q(NEAR)
    q(NEAR + 0.01)
    assert q.window_counts.tolist() == [4.0, 4.0, 0.0, 0.0]
    q.on_epoch_end(0)
    codes = q.embedding.detach()
    torch.testing.assert_close(codes[:2], START[:2])
    seen = torch.cat([NEAR, NEAR + 0.01])
    for k in (2, 3):
        assert (codes[k] == seen).all(1).any(), f"code {k} was not taken from the reservoir"
    assert q.window_counts.sum() == 0 and q.tau == 0.5


def test_eval_neither_fills_the_reservoir_nor_counts():
    q = quantizer()
    q.eval()
    q(NEAR)
    assert int(q.reservoir.filled) == 0 and q.window_counts.sum() == 0
    q.on_epoch_end(0)  # nothing seen: nothing to replace with, nothing replaced
    torch.testing.assert_close(q.embedding.detach(), START)


def test_step_window_replaces_at_the_start_of_the_next_step():
    q = quantizer(replace_every=2)
    q(NEAR)
    out = q(NEAR)
    assert "codes_replaced" not in out.logs
    out = q(NEAR + 5.0)  # window of 2 steps closed: replace before quantizing
    assert float(out.logs["codes_replaced"]) == 2
    torch.testing.assert_close(q.embedding.detach()[:2], START[:2])
    # from the reservoir (the earlier steps), not from the current batch
    for k in (2, 3):
        assert (q.embedding.detach()[k] == NEAR).all(1).any()
    q.on_epoch_end(0)  # with a step window, epochs only advance the kernel
    assert q.tau == 0.5


def test_replacement_can_be_switched_off():
    q = quantizer(replace_enabled=False)
    q(NEAR)
    q.on_epoch_end(0)
    torch.testing.assert_close(q.embedding.detach(), START)


def test_loss_is_ns_vqs():
    z = NEAR * 3.0
    a = quantizer()
    b = NonStationaryVQ(dim=2, codebook_size=4)
    with torch.no_grad():
        b.embedding.copy_(START)
    oa, ob = a(z), b(z)
    torch.testing.assert_close(oa.loss, ob.loss)
    torch.testing.assert_close(oa.z_q, ob.z_q)


class TestNSVQStepWindow(QuantizerConformance):
    """The conformance kit on nsvq replacing every step (the default replaces at epoch ends)."""

    quantizer = NSVQ
    params = {"reservoir_size": 64, "replace_every": 1}
