import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrain.cli import main as pretrain_main
from pretrain.config import load_config
from pretrain.contrastive.estimators import ESTIMATOR_REGISTRY, estimator_names
from pretrain.contrastive.estimators.base import Estimator, infonce
from pretrain.contrastive.objectives import OBJECTIVE_REGISTRY, build_objective
from pretrain.contrastive.samplers import SAMPLER_REGISTRY, Candidates, Sampler, uniform_draws
from pretrain.contrastive.samplers.ring import RingSampler
from pretrain.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import opts_with

OBJECTIVES = OBJECTIVE_REGISTRY.names()
ESTIMATORS = ["nce", "ring", "ball"]  # the paper's three: every objective by default
# every registered estimator under every objective: the paper's three and MoCo by default, the rest under -m slow
COMBOS = [pytest.param(o, e, marks=[] if e in ESTIMATORS or o == "moco" else [pytest.mark.slow])
          for o in OBJECTIVES for e in estimator_names()]


def _cfg(name, est, **kv):
    opts = ["OBJECTIVE.NAME", name, "OBJECTIVE.ESTIMATOR", est, "MODEL.OUT_DIM", "16", "MODEL.SMALL_STEM", "False",
            "MOCO.QUEUE_SIZE", "64", "BANK.NUM_NEGATIVES", "31", "CMC.WIDTH", "16", "RING.OUTER", "0.5",
            "MOCHI.NUM_HARDEST", "8", "MOCHI.NUM_MIX", "8", "MOCHI.NUM_QUERY_MIX", "4"]
    for k, v in kv.items():
        opts += [k, str(v)]
    return load_config(None, opts)


@pytest.mark.parametrize("name,est", COMBOS)
def test_each_objective_trains_with_finite_decreasing_loss(name, est):
    torch.manual_seed(0)
    obj = build_objective(_cfg(name, est), dataset_size=64, global_batch=8)
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(8, 3, 16, 16, generator=g), torch.randn(8, 3, 16, 16, generator=g)
    with torch.no_grad():  # fill the queue/banks with real keys first: a random pool is trivially easy
        for _ in range(8):
            obj(x1, x2, torch.arange(8))
    losses = []
    for step in range(12):
        loss, stats = obj(x1, x2, torch.arange(8))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert min(losses[-3:]) < max(losses[:3]), losses
    assert ("outer" in stats) == (est in ("ring", "ball", "ring_hcl", "ring_mochi"))


def test_chunked_ring_equals_unchunked_draw_for_draw():
    """One sampler, two kinds of pool: a bank scored in blocks of anchors gives the draws of the full matrix."""
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(37, 16, generator=g), dim=1)
    bank = F.normalize(torch.randn(5000, 16, generator=g), dim=1)
    ring = RingSampler(0.1)
    full = ring.select(Candidates.from_scores(z @ bank.t()), 0.1, 300, torch.Generator().manual_seed(5))
    blocks = Candidates.from_bank(z, bank, score_block=3 * 5000)
    assert len(list(blocks.blocks())) == 13  # 37 anchors, 3 at a time
    chunked = ring.select(blocks, 0.1, 300, torch.Generator().manual_seed(5))
    assert torch.equal(full, chunked)
    all_ring = ring.select(Candidates.from_bank(z, bank, score_block=5000), 0.1)
    assert all_ring.shape == (37, 450) and torch.equal(
        all_ring.sort(1).values, ring.select(Candidates.from_scores(z @ bank.t()), 0.1).sort(1).values)
    # global-batch draws: rank 1 of 2 gets rows 37..73 of the same draw
    both = ring.select(Candidates.from_scores(torch.cat([z, z]) @ bank.t()), 0.1, 50, torch.Generator().manual_seed(9))
    second = ring.select(Candidates.from_bank(z, bank, 5000), 0.1, 50, torch.Generator().manual_seed(9), rows=(37, 74))
    assert torch.equal(both[37:], second)


def test_ir_ring_negatives_come_from_the_ring():
    torch.manual_seed(0)
    obj = build_objective(_cfg("ir", "ring", **{"RING.OUTER": 0.2, "RING.INNER": 0.25}), 200, 8).eval()
    z = obj.encoder(torch.randn(8, 3, 16, 16))
    idx = obj.draw_from_bank(z, obj.memory.bank, 500, 2 ** 20)
    assert idx.shape == (8, 500)
    ranks = (z @ obj.memory.bank.t()).argsort(dim=1, descending=True).argsort(dim=1)  # rank of each entry
    r = ranks.gather(1, idx)
    assert r.min() >= 10 and r.max() < 40  # [floor(.25 * 40), floor(.2 * 200))


def test_simclr_pool_excludes_anchor_and_positive():
    obj = build_objective(_cfg("simclr", "nce", **{"OBJECTIVE.TEMPERATURE": 1.0}), 16, 2)  # O(1) losses
    z = F.normalize(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0.9, 0.1, 0], [0.1, 0.9, 0]]), dim=1)
    class Fixed(torch.nn.Module):  # anchors: a0, a1 (view 1), their positives p0, p1 (view 2)
        def forward(self, x):
            return z

    obj.encoder = Fixed()
    loss, stats = obj(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    assert stats["negatives"] == 2  # 2N - 2
    sim = z @ z.t() / 1.0
    expected = 0.0
    for i, (p, negs) in enumerate([(2, [1, 3]), (3, [0, 2]), (0, [1, 3]), (1, [0, 2])]):
        logits = torch.stack([sim[i, p], *[sim[i, j] for j in negs]])
        expected += -(logits[0] - torch.logsumexp(logits, 0)) / 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_lab_conversion_matches_scikit_image():
    from skimage.color import rgb2lab

    from pretrain.contrastive.objectives.cmc import normalized_rgb_to_lab
    from pretrain.data.color import LAB_MEAN, LAB_STD

    rgb = np.random.default_rng(0).random((2, 8, 8, 3))
    x = (torch.from_numpy(rgb).permute(0, 3, 1, 2).float() - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ours = normalized_rgb_to_lab(x) * torch.tensor(LAB_STD).view(1, 3, 1, 1) + torch.tensor(LAB_MEAN).view(1, 3, 1, 1)
    ref = torch.from_numpy(rgb2lab(rgb)).permute(0, 3, 1, 2).float()
    assert torch.allclose(ours, ref, atol=0.05)


def test_cmc_backbone_concatenates_both_streams():
    obj = build_objective(_cfg("cmc", "nce"), 16, 2).eval()
    feats = obj.backbone(torch.randn(2, 3, 16, 16))
    assert feats.shape == (2, 2 * 16 * 8) and obj.backbone.feature_dim == 256
    assert obj.encoder_l.backbone.conv1.in_channels == 1 and obj.encoder_ab.backbone.conv1.in_channels == 2


@pytest.mark.parametrize("est", ESTIMATORS)
@pytest.mark.parametrize("config", ["cpu_small", "cpu_small_ir", "cpu_small_cmc", "cpu_small_simclr"])
def test_ring_pretrain_runs_every_cpu_config(tmp_path, tiny_opts, config, est):
    opts = opts_with(tiny_opts, **{"OBJECTIVE.ESTIMATOR": est, "SOLVER.MAX_ITERS": 3, "KNN.ENABLED": False,
                                   "BANK.NUM_NEGATIVES": 31, "RING.ANNEAL_EPOCHS": 1, "RING.SCHEDULE": "linear"})
    assert pretrain_main(["-c", config, "-o", str(tmp_path / "run"), *opts]) == 0
    assert (tmp_path / "run" / "summary.json").exists()


class TopThree(Sampler):
    """A toy sampler: the three most similar candidates (all of them, or draws among them)."""

    calls = []

    def select(self, candidates, outer=1.0, num_draws=None, generator=None, rows=None):
        top = torch.cat([scores.topk(3, dim=1).indices for _, scores in candidates.blocks()])
        TopThree.calls.append((candidates.num_rows, candidates.size, num_draws))
        if num_draws is None:
            return top
        return top.gather(1, uniform_draws(3, candidates.num_rows, num_draws, candidates.device, generator, rows))


@pytest.fixture
def toy_estimator():
    if "top3" not in SAMPLER_REGISTRY:  # registered once for the whole session
        SAMPLER_REGISTRY.register(lambda cfg: TopThree(), name="top3")
        ESTIMATOR_REGISTRY.register(lambda cfg: Estimator("toy", SAMPLER_REGISTRY.get("top3")(cfg), infonce),
                                    name="toy")
    TopThree.calls.clear()
    return "toy"


@pytest.mark.parametrize("name", OBJECTIVES)
def test_a_sampler_registered_once_trains_every_objective(name, toy_estimator):
    torch.manual_seed(0)
    obj = build_objective(_cfg(name, toy_estimator), dataset_size=64, global_batch=8)
    before = {k: v.clone() for k, v in obj.backbone.state_dict().items()}
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.1)
    loss, stats = obj(torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16), torch.arange(8))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item())
    assert any(not torch.equal(before[k], v) for k, v in obj.backbone.state_dict().items())
    pool = {"ir": (8, 64, 31), "cmc": (8, 64, 31), "moco": (8, 64, None), "simclr": (16, 14, None)}[name]
    assert TopThree.calls[0] == pool  # banks: k - 1 draws over 64 entries; queue/batch: every selected one
    assert stats["negatives"] == (31 if name in ("ir", "cmc") else 3)


def test_moco_key_encoder_moves_by_m_times_key_plus_one_minus_m_times_query():
    """MoCo's update k <- m k + (1 - m) q, checked against the formula (m and 1 - m swapped would fail)."""
    torch.manual_seed(0)
    obj = build_objective(_cfg("moco", "nce", **{"MOCO.MOMENTUM": 0.9, "MOCO.SHUFFLE_BN": False}),
                          dataset_size=16, global_batch=4)
    with torch.no_grad():
        for p in obj.encoder_q.parameters():
            p.add_(torch.randn_like(p))  # query and key encoders now differ
    q0 = [p.detach().clone() for p in obj.encoder_q.parameters()]
    k0 = [p.detach().clone() for p in obj.encoder_k.parameters()]
    x = torch.randn(4, 3, 16, 16)
    obj(x, x, torch.arange(4))
    for pk, a, b in zip(obj.encoder_k.parameters(), k0, q0):
        torch.testing.assert_close(pk.detach(), 0.9 * a + 0.1 * b)
