"""Hand-computed losses on fixed embeddings: each objective's loss equals the formula written out here.

The encoders are replaced by a lookup that maps an input image to a fixed embedding (the image's first
pixel holds its row in the table), so shuffle-BN permutations and sub-batches see the same embeddings.
Pools are set to orthonormal vectors, so every similarity is a chosen number.  For the ring, the
candidates inside the ring share one similarity: the loss does not depend on which of them are drawn.
"""
import math

import pytest
import torch

from pretrain.config import load_config
from pretrain.contrastive.objectives import build_objective

D = 16
TAU = 0.5


class Lookup(torch.nn.Module):
    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].round().long()]


class InOrder(Lookup):
    def forward(self, x):
        return self.table[:len(x)]


def images(rows):
    x = torch.zeros(len(rows), 3, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(rows, dtype=torch.float)
    return x


def unit(coeffs):
    v = torch.tensor(coeffs, dtype=torch.float)
    return v / v.norm()


def cfg(name, est, **kv):
    opts = ["OBJECTIVE.NAME", name, "OBJECTIVE.ESTIMATOR", est, "OBJECTIVE.TEMPERATURE", TAU, "MODEL.OUT_DIM", D,
            "MODEL.SMALL_STEM", False, "MOCO.QUEUE_SIZE", D, "BANK.NUM_NEGATIVES", 5, "CMC.WIDTH", 8,
            "RING.OUTER", 0.5, "RING.INNER", 0.25, "SEED", 3]
    for k, v in kv.items():
        opts += [k, v]
    return load_config(None, [str(o) for o in opts])


def nce(pos, negs):
    logits = torch.tensor([pos, *negs]) / TAU
    return -(logits[0] - torch.logsumexp(logits, 0)).item()


def designed_anchor(pos_index, ring, others_top):
    """An anchor over the 16 basis vectors: 3 at the positive, 2.5 at `others_top` (ranks 0-1 with the positive),
    1 at the six `ring` entries (ranks 2-7: the ring [floor(0.25 * 8), floor(0.5 * 16)) = [2, 8)), 0 elsewhere."""
    c = [0.0] * D
    c[pos_index], c[others_top] = 3.0, 2.5
    for j in ring:
        c[j] = 1.0
    return unit(c)


RING_A = [2, 3, 4, 5, 6, 7]
RING_B = [9, 10, 11, 12, 13, 14]


@pytest.mark.parametrize("est", ["nce", "ring"])
def test_ir_loss_by_hand(est):
    obj = build_objective(cfg("ir", est), dataset_size=D, global_batch=2)
    za, zb = designed_anchor(0, RING_A, 1), designed_anchor(8, RING_B, 15)
    obj.encoder = Lookup(torch.stack([za, zb]))
    obj.memory.bank.copy_(torch.eye(D))
    index = torch.tensor([0, 8])
    loss, stats = obj(images([0, 1]), None, index)
    if est == "ring":  # every drawn negative lies in the ring: similarity 1 / |c|
        expected = [nce(za[0].item(), [za[2].item()] * 5), nce(zb[8].item(), [zb[9].item()] * 5)]
    else:  # k - 1 = 5 uniform draws with replacement over the whole bank from the objective's generator
        draws = torch.randint(D, (2, 5), generator=torch.Generator().manual_seed(3 + 17))
        expected = [nce(z[i].item(), [z[j].item() for j in draws[r]]) for r, (z, i) in enumerate([(za, 0), (zb, 8)])]
    assert stats["negatives"] == 5
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    assert torch.allclose(obj.memory.bank[0], za) and torch.allclose(obj.memory.bank[8], zb)  # m = 0: replaced


@pytest.mark.parametrize("est", ["nce", "ring"])
def test_cmc_loss_by_hand(est):
    obj = build_objective(cfg("cmc", est), dataset_size=D, global_batch=2)
    zl = torch.stack([designed_anchor(0, RING_A, 1), designed_anchor(8, RING_B, 15)])
    zab = torch.stack([designed_anchor(0, RING_B, 1), designed_anchor(8, RING_A, 15)])  # another design per view
    # CMC converts RGB to Lab before its encoders, so the rows are taken in batch order instead of looked up
    obj.encoder_l, obj.encoder_ab = InOrder(zl), InOrder(zab)
    obj.bank_l.bank.copy_(torch.eye(D))
    obj.bank_ab.bank.copy_(torch.eye(D))
    loss, stats = obj(images([0, 1]), None, torch.tensor([0, 8]))
    g = torch.Generator().manual_seed(3 + 17)
    expected = 0.0
    for z, ring in ((zl, (RING_A, RING_B)), (zab, (RING_B, RING_A))):  # L anchors vs ab bank, then ab vs L
        if est == "ring":
            per = [nce(z[0, 0].item(), [z[0, ring[0][0]].item()] * 5), nce(z[1, 8].item(), [z[1, ring[1][0]].item()] * 5)]
        else:
            draws = torch.randint(D, (2, 5), generator=g)
            per = [nce(z[r, i].item(), [z[r, j].item() for j in draws[r]]) for r, i in enumerate([0, 8])]
        expected += sum(per) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats["loss_l"] + stats["loss_ab"] == pytest.approx(loss.item(), rel=1e-5)


@pytest.mark.parametrize("est", ["nce", "ring"])
def test_moco_loss_by_hand(est):
    obj = build_objective(cfg("moco", est, **{"MOCO.SHUFFLE_BN": True, "MOCO.BN_SPLITS": 2}), D, global_batch=4)
    q = torch.stack([designed_anchor(0, RING_A, 1), designed_anchor(8, RING_B, 15),
                     designed_anchor(4, RING_B, 3), designed_anchor(12, RING_A, 11)])
    k = torch.roll(torch.eye(D), 5, dims=1)[:4]  # keys: unit vectors, positive similarity q . k
    obj.encoder_q, obj.encoder_k = Lookup(q), Lookup(k)
    obj.queue.keys.copy_(torch.eye(D))
    loss, stats = obj(images([0, 1, 2, 3]), images([0, 1, 2, 3]))
    expected = []
    for i in range(4):
        pos = (q[i] * k[i]).sum().item()
        if est == "ring":  # MoCo uses every ring member: the 6 entries of similarity 1 / |c|
            ranked = sorted(range(D), key=lambda j: -q[i, j].item())
            negs = [q[i, j].item() for j in ranked[2:8]]
        else:
            negs = q[i].tolist()
        expected.append(nce(pos, negs))
    assert stats["negatives"] == (6 if est == "ring" else D)
    assert loss.item() == pytest.approx(sum(expected) / 4, rel=1e-5)
    assert torch.equal(obj.queue.keys[:4], k) and int(obj.queue.ptr) == 4  # enqueued after the step


class Spy:
    """Wraps a sampler and keeps what it selected."""

    def __init__(self, sampler):
        self.sampler, self.conditional, self.selected = sampler, sampler.conditional, []

    def select(self, *args, **kwargs):
        idx = self.sampler.select(*args, **kwargs)
        self.selected.append(idx)
        return idx


@pytest.mark.parametrize("name", ["moco", "ir"])
def test_autocast_leaves_the_ring_and_the_loss_in_fp32(name):
    """bf16 autocast (CPU here, CUDA alike) must not move the ring: scores, ranking and logits stay fp32."""
    import copy

    torch.manual_seed(0)
    k_pool, dim, b = 4096, 128, 8
    obj = build_objective(cfg(name, "ring", **{"MODEL.OUT_DIM": dim, "MOCO.QUEUE_SIZE": k_pool, "MOCO.BN_SPLITS": 1,
                                                "BANK.NUM_NEGATIVES": 255, "RING.OUTER": 0.1, "RING.INNER": 0.1}),
                          dataset_size=k_pool, global_batch=b)
    q = torch.nn.functional.normalize(torch.randn(b, dim), dim=1)
    k = torch.nn.functional.normalize(q + 0.3 * torch.randn(b, dim), dim=1)
    if name == "moco":
        obj.encoder_q, obj.encoder_k = Lookup(q), Lookup(k)
        pool = obj.queue.keys
    else:
        obj.encoder = Lookup(q)
        pool = obj.memory.bank
    runs = {}
    for mode in ("fp32", "bf16"):
        o = copy.deepcopy(obj)
        o.estimator.sampler = Spy(o.sampler)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            loss, _ = o(images(range(b)), images(range(b)), torch.arange(b))
        runs[mode] = (loss.item(), o.sampler.selected[0])
    assert runs["bf16"][0] == pytest.approx(runs["fp32"][0], abs=1e-4)
    assert torch.equal(runs["bf16"][1].sort(1).values, runs["fp32"][1].sort(1).values)  # the same negatives
    # the test can fail: scoring the pool in bf16 would have moved the ring
    from pretrain.contrastive.samplers import ring_indices
    exact = ring_indices(q @ pool.t(), 0.1, 0.1).sort(1).values
    rounded = ring_indices((q.bfloat16() @ pool.bfloat16().t()).float(), 0.1, 0.1).sort(1).values
    assert not torch.equal(exact, rounded)
