import numpy as np
import math

import pytest
import torch
import torch.nn.functional as F

from pretrain.config import load_config
from pretrain.common import UserError
from pretrain.contrastive import SAMPLER_REGISTRY, Candidates, MemoryBank, Queue, build_estimator, build_schedule, \
    contrastive_loss, ring_bounds, ring_indices


def brute_force_ring(scores, o, iota):
    """Reference: full descending sort, ranks [floor(iota*floor(o*N)), floor(o*N)) with the documented clamps."""
    n = scores.shape[1]
    outer = min(n, max(1, math.floor(o * n + 1e-9)))
    inner = min(outer - 1, math.floor(iota * outer + 1e-9))
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return order[:, inner:outer]


@pytest.mark.parametrize("n", [1, 2, 7, 10, 64, 1000, 4097])
@pytest.mark.parametrize("b", [1, 5])
@pytest.mark.parametrize("o,iota", [(0.1, 0.1), (0.5, 0.1), (1.0, 0.0), (0.1, 0.0), (0.3, 0.5), (1e-4, 0.1),
                                     (0.99, 0.9)])
def test_ring_equals_sort_reference(n, b, o, iota):
    g = torch.Generator().manual_seed(n * 31 + b)
    scores = torch.randn(b, n, generator=g)
    got = ring_indices(scores, o, iota)
    ref = brute_force_ring(scores, o, iota)
    assert got.shape == ref.shape and got.shape[1] >= 1
    # same set of candidates per row (order inside the ring is irrelevant)
    assert torch.equal(got.sort(dim=1).values, ref.sort(dim=1).values)


@pytest.mark.parametrize("n,o,iota", [(50, 0.2, 0.25), (200, 0.1, 0.1), (33, 0.5, 0.5)])
def test_ring_with_ties_selects_the_reference_scores(n, o, iota):
    g = torch.Generator().manual_seed(n)
    scores = torch.randint(0, 4, (6, n), generator=g).float()  # heavy ties
    got = scores.gather(1, ring_indices(scores, o, iota)).sort(dim=1).values
    ref = scores.gather(1, brute_force_ring(scores, o, iota)).sort(dim=1).values
    assert torch.equal(got, ref)
    assert (ring_indices(scores, o, iota).sort(dim=1).values.diff(dim=1) > 0).all()  # no candidate twice


@pytest.mark.parametrize("n,o,iota", [(1, 1.0, 0.1), (7, 0.5, 0.1), (64, 0.1, 0.1), (1000, 0.3, 0.5),
                                     (1000, 1e-4, 0.1), (4097, 1.0, 0.0), (50, 0.2, 0.25), (300, 0.99, 0.9)])
def test_a_ring_sized_on_the_device_selects_the_hosts_ring(n, o, iota):
    """o as a 0-dim float64 tensor (the adaptive schedule): the mask marks exactly the host's ring; the
    draws from a bank scored in several blocks are all ring members and reach every member."""
    g = torch.Generator().manual_seed(n)
    anchors, bank = F.normalize(torch.randn(6, 8, generator=g), dim=1), F.normalize(torch.randn(n, 8, generator=g), dim=1)
    scores = anchors @ bank.t()
    sampler = SAMPLER_REGISTRY.get("ring")(load_config(None, ["RING.INNER", str(iota)]))
    o_dev = torch.tensor(o, dtype=torch.float64)
    host = ring_indices(scores, o, iota)
    mask = sampler.select(Candidates.from_scores(scores), o_dev)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    ring = torch.zeros_like(mask).scatter_(1, host, True)
    assert torch.equal(mask, ring)
    draws_per_member = 25
    draws = sampler.select(Candidates.from_bank(anchors, bank, score_block=2 * n), o_dev,
                           num_draws=draws_per_member * host.shape[1], generator=torch.Generator().manual_seed(1))
    assert draws.shape == (6, draws_per_member * host.shape[1])
    assert ring.gather(1, draws).all()  # only ring members
    hits = torch.zeros_like(mask).scatter_(1, draws, True)
    assert torch.equal(hits, ring)  # every member drawn (P(a miss) < 1e-8 per member)


def test_ring_bounds_degenerate_sizes():
    assert ring_bounds(65536, 0.1, 0.1) == (655, 6553)  # ~top 1% to top 10%
    assert ring_bounds(10, 0.05, 0.1) == (0, 1)  # o*N < 1: the single most similar candidate
    assert ring_bounds(10, 1.0, 0.999) == (9, 10)  # inner clamped: the ring is never empty
    assert ring_bounds(1, 0.1, 0.5) == (0, 1)
    with pytest.raises(UserError, match="empty"):
        ring_bounds(0, 0.1, 0.1)


def test_samplers_by_name():
    cfg = load_config(None, ["RING.INNER", "0.2"])
    scores = torch.randn(4, 100)
    cands = Candidates.from_scores(scores)

    def sampler(name):
        return SAMPLER_REGISTRY.get(name)(cfg)
    assert sampler("uniform").select(cands) is None  # all candidates
    assert sampler("ring").select(cands, outer=0.5).shape == (4, 40)  # [10, 50)
    ball = sampler("ball").select(cands, outer=0.5)
    assert torch.equal(ball.sort(1).values, scores.topk(50, dim=1).indices.sort(1).values)
    draws = sampler("ring").select(cands, outer=0.5, num_draws=300, generator=torch.Generator())
    ring = set(ring_indices(scores[:1], 0.5, 0.2)[0].tolist())
    assert draws.shape == (4, 300) and set(draws[0].tolist()) <= ring
    assert len(set(draws[0].tolist())) > 30  # with replacement, covering the ring
    uni = sampler("uniform").select(cands, num_draws=50, generator=torch.Generator())
    assert uni.shape == (4, 50) and uni.max() < 100
    with pytest.raises(UserError, match="choose one of: ball, ring, .*uniform"):  # a test may register a toy one
        sampler("hard")


def test_estimators_map_to_a_sampler_and_a_loss_form():
    for name, sampler in [("nce", "UniformSampler"), ("ring", "RingSampler"), ("ball", "RingSampler"),
                          ("dcl", "UniformSampler"), ("hcl", "UniformSampler"), ("ring_hcl", "RingSampler"),
                          ("mochi", "UniformSampler"), ("ring_mochi", "RingSampler")]:
        est = build_estimator(load_config(None, ["OBJECTIVE.ESTIMATOR", name, "RING.INNER", "0.2"]))
        assert type(est.sampler).__name__ == sampler and est.name == name
    assert build_estimator(load_config(None, ["OBJECTIVE.ESTIMATOR", "ball"])).sampler.inner == 0.0
    with pytest.raises(UserError, match="OBJECTIVE.ESTIMATOR 'hard' is unknown; choose one of: ball, dcl, hcl, "
                                        "mochi, nce, ring, ring_hcl, ring_mochi"):
        build_estimator(load_config(None, ["OBJECTIVE.ESTIMATOR", "hard"]))


def _ring_cfg(**kv):
    opts = []
    for k, v in kv.items():
        opts += [f"RING.{k}", str(v)]
    return load_config(None, opts).RING


def authors_schedule(kind, total, span, minimum=0.1):
    """The authors' policies (mhw32/contrastive-ring-public, src/utils/policy.py), written out with NumPy:
    the whole schedule as an array indexed by the optimizer step."""
    tail = np.ones(total - span + 1) * minimum
    if kind == "linear":
        head = np.linspace(minimum, 1.0, span)[::-1]
    elif kind == "step":
        levels = np.arange(minimum, 1.0 + 0.1, 0.1)[::-1]
        head = np.repeat(levels, int(span / len(levels)))
    else:
        head = (1.0 - minimum) * np.exp(-0.1 * np.arange(span)) + minimum
    return np.concatenate([head, tail])


@pytest.mark.parametrize("kind", ["linear", "step", "exponential"])
@pytest.mark.parametrize("iters,epochs,anneal", [(195, 200, 100), (7, 6, 3)])  # CIFAR-10 at batch 256; a small one
def test_annealing_equals_the_authors_policy_at_every_step(kind, iters, epochs, anneal):
    total, span = iters * epochs, int(anneal * iters)
    ref = authors_schedule(kind, total, span)
    ours = build_schedule(_ring_cfg(SCHEDULE=kind, OUTER=0.1, ANNEAL_EPOCHS=anneal), iters)
    got = np.array([ours(s) for s in range(total)])
    np.testing.assert_allclose(got, ref[:total], rtol=0, atol=1e-12)
    assert ours(0) == pytest.approx(1.0) and ours(span) == 0.1 and ours(total + 50) == 0.1  # start, end, after


def test_annealing_check_values_at_the_cifar_setting():
    """Hand-computed at 195 iterations/epoch, annealing over 100 epochs (A = 19,500)."""
    def sched(kind):
        return build_schedule(_ring_cfg(SCHEDULE=kind, OUTER=0.1, ANNEAL_EPOCHS=100), 195)
    assert sched("linear")(1000) == pytest.approx(1 - 0.9 * 1000 / 19499, abs=1e-12)  # 0.953844
    assert sched("linear")(19499) == pytest.approx(0.1) and sched("linear")(9749.5) == pytest.approx(0.55)
    assert (sched("step")(1949), sched("step")(1950), sched("step")(19499)) == (1.0, 0.9, 0.1)
    assert sched("step")(5 * 1950) == pytest.approx(0.5)
    assert sched("exponential")(10) == pytest.approx(0.1 + 0.9 * math.exp(-1.0), abs=1e-12)  # 0.431091
    assert sched("constant")(123) == 0.1
    assert build_schedule(_ring_cfg(SCHEDULE="linear", ANNEAL_EPOCHS=0), 195)(0) == pytest.approx(0.1)


def test_adaptive_schedules_follow_the_authors_rule():
    s = build_schedule(_ring_cfg(SCHEDULE="adaptive", OUTER=0.1, ADAPTIVE_DELTA=0.01, ADAPTIVE_WINDOW=3), 10)
    assert s.observes == "loss" and s(0) == 1.0
    s.observe(5.0)  # the first step: nothing to compare with
    assert s(1) == 1.0
    s.observe(4.0)  # below the mean (5): harder
    assert s(2) == pytest.approx(0.99)
    s.observe(4.5)  # equal to the mean of (5, 4): unchanged
    assert s(3) == pytest.approx(0.99)
    s.observe(9.0)  # above: easier
    assert s(4) == pytest.approx(1.0)
    s.observe(100.0)  # clamped at 1
    assert s(5) == 1.0
    state = s.state_dict()
    for i in range(200):
        s.observe(-float(i))  # a falling loss keeps making it harder, down to RING.OUTER
    assert s(0) == pytest.approx(0.1)
    s.load_state_dict(state)
    assert s(0) == 1.0 and s.state_dict()["history"] == [4.5, 9.0, 100.0]
    acc = build_schedule(_ring_cfg(SCHEDULE="adaptive_acc", OUTER=0.1), 10)  # delta 0.05, window 5
    assert acc.observes == "knn" and acc.lower_is_better is False
    for top1 in (10.0, 20.0, 30.0):  # a rising accuracy: harder
        acc.observe(top1)
    assert acc(0) == pytest.approx(0.9)
    acc.observe(1.0)  # a drop below the mean: easier
    assert acc(0) == pytest.approx(0.95)

def authors_adaptive(losses, final, delta, window):
    """The authors' rule as a plain host loop over Python floats: o before each step."""
    value, history, out = 1.0, [], []
    for x in losses:
        out.append(value)
        if history:
            mean = sum(history[-window:]) / len(history[-window:])
            value += delta if x > mean else -delta if x < mean else 0.0
        value = min(1.0, max(final, value))
        history = (history + [x])[-window:]
    return out


def test_the_adaptive_schedule_on_the_device_gives_the_host_loops_sequence():
    """Fed loss tensors (float32, as the engine does), never read on the host: the same o at every step as
    the host loop over the same losses, through a checkpoint round trip halfway."""
    gen = torch.Generator().manual_seed(0)
    losses = (5.0 + torch.randn(300, generator=gen).cumsum(0) * 0.05 - torch.linspace(0, 4, 300)).float()
    s = build_schedule(_ring_cfg(SCHEDULE="adaptive", OUTER=0.1, ADAPTIVE_DELTA=0.01, ADAPTIVE_WINDOW=10), 10)
    assert s.device_resident and isinstance(s(0), torch.Tensor) and s(0).dtype == torch.float64
    seen = []
    for step, x in enumerate(losses):
        if step == 150:  # resume from the state a checkpoint would hold
            state = s.state_dict()
            s = build_schedule(_ring_cfg(SCHEDULE="adaptive", OUTER=0.1, ADAPTIVE_DELTA=0.01, ADAPTIVE_WINDOW=10), 10)
            s.load_state_dict(state)
        seen.append(float(s(step)))
        s.observe(x)  # a 0-dim float32 tensor, as the loss
    expected = authors_adaptive([float(x) for x in losses], 0.1, 0.01, 10)
    assert seen == expected
    assert min(expected) < 0.5 and len(set(expected)) > 20  # it really moved


def test_loss_equals_hand_computed_cross_entropy():
    pos = torch.tensor([0.5, -0.2])
    neg = torch.tensor([[0.1, 0.3, -0.4], [0.9, 0.0, 0.2]])
    t = 0.07
    expected = 0.0
    for i in range(2):
        logits = [pos[i] / t] + [x / t for x in neg[i]]
        expected += -(logits[0] - torch.logsumexp(torch.stack(logits), 0))
    assert contrastive_loss(pos, neg, t).item() == pytest.approx(expected.item() / 2, rel=1e-6)


def test_memory_bank_update_formula():
    torch.manual_seed(0)
    bank = MemoryBank(10, 4, momentum=0.5)
    before = bank.bank.clone()
    z = F.normalize(torch.randn(2, 4), dim=1)
    idx = torch.tensor([3, 7])
    bank.update(idx, z)
    expected = F.normalize(0.5 * before[idx] + 0.5 * z, dim=1)
    assert torch.allclose(bank.bank[idx], expected)
    assert torch.equal(bank.bank[[0, 1, 2, 4, 5, 6, 8, 9]], before[[0, 1, 2, 4, 5, 6, 8, 9]])
    replace = MemoryBank(10, 4, momentum=0.0)
    replace.update(idx, z)
    assert torch.allclose(replace.bank[idx], z)


def test_queue_fifo_and_size_check():
    q = Queue(dim=3, size=6, keys_per_step=3)
    a, b = torch.ones(3, 3), 2 * torch.ones(3, 3)
    q.enqueue(a)
    q.enqueue(b)
    assert torch.equal(q.keys[:3], a) and torch.equal(q.keys[3:], b) and int(q.ptr) == 0
    q.enqueue(3 * torch.ones(3, 3))
    assert torch.equal(q.keys[:3], 3 * torch.ones(3, 3))
    with pytest.raises(UserError, match="MOCO.QUEUE_SIZE 6 is not a multiple of SOLVER.BATCH_SIZE 4"):
        Queue(dim=3, size=6, keys_per_step=4)
