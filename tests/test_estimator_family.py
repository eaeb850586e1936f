"""The negative-sampling family (DCL, HCL, MoCHi) against direct, loop-based implementations of their papers'
formulas (HCL: as the authors' released code computes it), loss and gradient."""
import math

import pytest
import torch
import torch.nn.functional as F

from pretrain.common import UserError
from pretrain.config import load_config
from pretrain.contrastive import Candidates
from pretrain.contrastive.estimators import Negatives, build_estimator, contrastive_loss
from pretrain.contrastive.estimators.dcl import debiased_loss
from pretrain.contrastive.estimators.mochi import draw_mochi, mochi_logits

T = 0.2


def _sims(b=4, n=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = (torch.rand(b, generator=g) * 1.6 - 0.6).requires_grad_()
    neg = (torch.rand(b, n, generator=g) * 2 - 1).requires_grad_()
    return pos, neg


def loop_debiased(pos, neg, tau, tau_plus, beta):
    """Per anchor, in float64: P = e^(s+/t), G_j = e^(s_j/t), w_j = G_j^beta / mean_k G_k^beta,
    Ng = max((sum_j w_j G_j - tau+ N P) / (1 - tau+), N e^(-1/t)), loss_i = -log(P / (P + Ng))."""
    losses = []
    for i in range(len(pos)):
        P = torch.exp(pos[i].double() / tau)
        G = [torch.exp(neg[i, j].double() / tau) for j in range(neg.shape[1])]
        N = len(G)
        mean_w = sum(g ** beta for g in G) / N
        total = sum((g ** beta / mean_w) * g for g in G)
        ng = (total - tau_plus * N * P) / (1 - tau_plus)
        ng = torch.clamp(ng, min=N * math.exp(-1 / tau))
        losses.append(-torch.log(P / (P + ng)))
    return torch.stack(losses).mean()


def _grads(fn, pos, neg):
    pos.grad = neg.grad = None
    loss = fn(pos, neg)
    loss.backward()
    return loss.detach().double(), pos.grad.clone().double(), neg.grad.clone().double()


@pytest.mark.parametrize("tau_plus,beta", [(0.1, 0.0), (0.1, 1.0), (0.3, 2.0), (0.0, 0.5)])
def test_dcl_and_hcl_equal_the_formula_loss_and_gradient(tau_plus, beta):
    pos, neg = _sims()
    ours = _grads(lambda p, n: debiased_loss(p, n, T, tau_plus, beta), pos, neg)
    ref = _grads(lambda p, n: loop_debiased(p, n, T, tau_plus, beta), pos, neg)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_the_clamp_binds_and_stops_the_gradient_as_in_the_authors_code():
    pos = torch.tensor([0.95], requires_grad=True)  # a large tau+ N P drives Ng below N e^(-1/t)
    neg = torch.full((1, 6), -0.5, requires_grad=True)
    ours = _grads(lambda p, n: debiased_loss(p, n, T, 0.9, 0.0), pos, neg)
    ref = _grads(lambda p, n: loop_debiased(p, n, T, 0.9, 0.0), pos, neg)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert torch.all(ours[2] == 0)  # clamped: no gradient into the negatives


def test_large_logits_do_not_overflow():
    pos, neg = torch.tensor([1.0]), torch.tensor([[0.99, -1.0, 0.5]])
    assert torch.isfinite(debiased_loss(pos, neg, 0.01, 0.1, 3.0))  # e^(4 * 100) overflows fp32 unscaled


def test_tau_plus_zero_is_nce_and_beta_zero_is_dcl():
    pos, neg = _sims(seed=3)
    nce = contrastive_loss(pos, neg, T)
    torch.testing.assert_close(debiased_loss(pos, neg, T, 0.0), nce, rtol=1e-6, atol=0)
    torch.testing.assert_close(debiased_loss(pos, neg, T, 0.1, 0.0), debiased_loss(pos, neg, T, 0.1), rtol=0, atol=0)
    # and the registered estimators are built with them
    for est, keys in [("dcl", ["DCL.TAU_PLUS", "0.0"]), ("hcl", ["HCL.TAU_PLUS", "0.0", "HCL.BETA", "0.0"])]:
        e = build_estimator(load_config(None, ["OBJECTIVE.ESTIMATOR", est, *keys]))
        torch.testing.assert_close(e.loss(Negatives(None, pos, neg, None, None), T), nce, rtol=1e-6, atol=0)


def _negatives(b=3, m=10, d=8, seed=0, drawn=False):
    g = torch.Generator().manual_seed(seed)
    anchors = F.normalize(torch.randn(b, d, generator=g), dim=1).requires_grad_()
    pool = F.normalize(torch.randn(25, d, generator=g), dim=1).requires_grad_()
    indices = torch.randint(25, (b, m), generator=g) if drawn else None
    cand = pool[indices] if drawn else pool.expand(b, -1, -1)
    logits = torch.bmm(cand, anchors.unsqueeze(2)).squeeze(2)
    pos = (anchors * F.normalize(torch.randn(b, d, generator=g), dim=1)).sum(1)
    return Negatives(anchors, pos, logits, pool, indices, generator=torch.Generator().manual_seed(7))


def loop_mochi(neg: Negatives, n_hard, s, s2, tau, keep=None):
    """Per anchor: the n_hard negatives of highest similarity (in column order), s mixes a h_i + (1 - a) h_j and s2 mixes
    b q + (1 - b) h_j (b < 0.5), L2-normalised and detached, appended as negatives; InfoNCE.  The draws are
    read from a clone of the generator in the order the implementation documents (i, j, a, j', b)."""
    g = torch.Generator().manual_seed(7)  # the state _negatives gave the objective's generator
    b, m = neg.logits.shape
    k = min(n_hard, m)
    i_all, j_all = torch.randint(k, (b, s), generator=g), torch.randint(k, (b, s), generator=g)
    a_all = torch.rand(b, s, 1, generator=g)
    jq_all = torch.randint(k, (b, s2), generator=g)
    bq_all = 0.5 * torch.rand(b, s2, 1, generator=g)
    losses, count = [], []
    for r in range(b):
        order = sorted(sorted(range(m), key=lambda c: -float(neg.logits[r, c].detach()))[:k])  # column order
        rows = [order[c] if neg.indices is None else int(neg.indices[r, order[c]]) for c in range(k)]
        hard = [neg.pool[row].detach() for row in rows]
        loss, n_synth = row_mochi_loss(neg, r, neg.logits[r], hard, (i_all, j_all, a_all, jq_all, bq_all), tau,
                                       None if keep is None else (lambda t, sim, r=r: keep(r, t, sim)))
        losses.append(loss)
        count.append(n_synth)
    return torch.stack(losses).mean(), count


def row_mochi_loss(neg: Negatives, r, negatives, hard, draws, tau, keep=None):
    """Anchor r's InfoNCE term with its mixes appended: pair mixes a h_i + (1 - a) h_j and query mixes
    b q + (1 - b) h_j' of the hard embeddings, L2-normalised and detached, those that ``keep(t, q . m)``
    (default all); (loss, number of mixes kept)."""
    i_all, j_all, a_all, jq_all, bq_all = draws
    q = neg.anchors[r]
    synth = [F.normalize(a_all[r, t] * hard[i_all[r, t]] + (1 - a_all[r, t]) * hard[j_all[r, t]], dim=0)
             for t in range(i_all.shape[1])]
    synth += [F.normalize(bq_all[r, t] * q.detach() + (1 - bq_all[r, t]) * hard[jq_all[r, t]], dim=0)
              for t in range(jq_all.shape[1])]
    sims = [torch.dot(q, h) for h in synth]
    kept = [x for t, x in enumerate(sims) if keep is None or keep(t, float(x.detach()))]
    extra = torch.stack(kept) if kept else negatives.new_zeros(0)
    logits = torch.cat([neg.pos[r:r + 1], negatives, extra]) / tau
    return -(logits[0] - torch.logsumexp(logits, 0)), len(kept)


@pytest.mark.parametrize("drawn", [False, True])  # the whole pool (queue, batch) / negatives drawn from a bank
def test_mochi_equals_the_formula_loss_and_gradient(drawn):
    e = build_estimator(load_config(None, ["OBJECTIVE.ESTIMATOR", "mochi", "MOCHI.NUM_HARDEST", "4",
                                           "MOCHI.NUM_MIX", "5", "MOCHI.NUM_QUERY_MIX", "3"]))
    neg = _negatives(drawn=drawn)
    ours = e.loss(neg, T)
    ga, gp = torch.autograd.grad(ours, [neg.anchors, neg.pool])
    neg = _negatives(drawn=drawn)
    ref, count = loop_mochi(neg, 4, 5, 3, T)
    ra, rp = torch.autograd.grad(ref, [neg.anchors, neg.pool])
    assert count == [8, 8, 8]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ga, ra, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gp, rp, rtol=1e-5, atol=1e-6)  # the pool's gradient: only through the real logits


def materialised_mixes(neg: Negatives, draws) -> torch.Tensor:
    """MoCHi's synthetic negatives (B, s + s', D) built explicitly, L2-normalised and detached: the reference
    the closed form is checked against."""
    with torch.no_grad():
        pool, q = neg.pool.detach(), neg.anchors.detach()

        def rows(pos):  # pool rows of the drawn positions among the k hardest
            cols = draws.hard.gather(1, pos)
            return pool[cols if neg.indices is None else neg.indices.gather(1, cols)]
        a, b = draws.alpha[..., None], draws.beta[..., None]
        mixes = torch.cat([a * rows(draws.i) + (1 - a) * rows(draws.j), b * q[:, None] + (1 - b) * rows(draws.jq)], 1)
        return F.normalize(mixes, dim=2)


def test_mochi_synthetic_negatives_are_counted_constant_and_near_the_query():
    neg = _negatives()
    extra = mochi_logits(neg, draw_mochi(neg, 4, 6, 2))
    assert extra.shape == (3, 8)  # 6 pair mixes + 2 query mixes per anchor
    # constants: no gradient reaches the pool through them (it requires grad here, as SimCLR's batch does)
    (g_pool,) = torch.autograd.grad(extra.sum(), neg.pool, allow_unused=True)
    assert g_pool is None or not g_pool.any()
    # each query mix lies closer to its query than a plain pair of hard negatives on average
    assert extra[:, 6:].mean() > extra[:, :6].mean()
    # num_hardest above the pool is at most the pool
    big = draw_mochi(neg, 10_000, 2, 0)
    assert big.hard.shape == (3, 25) and mochi_logits(neg, big).shape == (3, 2)  # all 25 negatives


@pytest.mark.parametrize("drawn", [False, True])
def test_mochi_closed_form_equals_the_materialised_mixes(drawn):
    """Training never builds the mixes: its q . m (value and gradient) equals q . m with m materialised, for a
    pool without gradients (MoCo's queue, IR/CMC's banks) whose rows are not unit-norm."""
    neg = _negatives(drawn=drawn)
    neg.pool = (neg.pool.detach() * torch.linspace(0.5, 2.0, len(neg.pool))[:, None])
    cand = neg.pool[neg.indices] if drawn else neg.pool.expand(len(neg.anchors), -1, -1)
    neg.logits = torch.bmm(cand, neg.anchors.unsqueeze(2)).squeeze(2)
    draws = draw_mochi(neg, 4, 7, 3)
    closed = mochi_logits(neg, draws)
    (g_closed,) = torch.autograd.grad(closed.square().sum(), neg.anchors)
    mixes = materialised_mixes(neg, draws)
    torch.testing.assert_close(mixes.norm(dim=2), torch.ones(3, 10))
    direct = torch.bmm(mixes, neg.anchors.unsqueeze(2)).squeeze(2)
    (g_direct,) = torch.autograd.grad(direct.square().sum(), neg.anchors)
    assert closed.shape == (3, 10)
    torch.testing.assert_close(closed, direct, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_closed, g_direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opts,key", [
    (["OBJECTIVE.ESTIMATOR", "dcl", "DCL.TAU_PLUS", "1.0"], "DCL.TAU_PLUS"),
    (["OBJECTIVE.ESTIMATOR", "dcl", "DCL.TAU_PLUS", "-0.1"], "DCL.TAU_PLUS"),
    (["OBJECTIVE.ESTIMATOR", "hcl", "HCL.TAU_PLUS", "1.5"], "HCL.TAU_PLUS"),
    (["OBJECTIVE.ESTIMATOR", "hcl", "HCL.BETA", "-1.0"], "HCL.BETA"),
    (["OBJECTIVE.ESTIMATOR", "mochi", "MOCHI.NUM_HARDEST", "-1"], "MOCHI.NUM_HARDEST"),
    (["OBJECTIVE.ESTIMATOR", "mochi", "MOCHI.NUM_MIX", "-2"], "MOCHI.NUM_MIX"),
])
def test_bad_knob_values_are_one_sentence(opts, key):
    with pytest.raises(UserError, match=key) as e:
        build_estimator(load_config(None, opts))
    assert str(e.value).count(". ") <= 1 and "\n" not in str(e.value)


def _ring_both_ways(est, o=0.3, b=4, n=40, d=8, seed=0, **knobs):
    """The same ring over an in-memory pool twice: gathered (o a float, the host path) and masked (o a
    device tensor, the adaptive schedule's path); fresh leaves for each."""
    opts = ["OBJECTIVE.ESTIMATOR", est, "RING.INNER", "0.1"] + [str(x) for kv in knobs.items() for x in kv]
    e = build_estimator(load_config(None, opts))
    out = []
    for o_arg in (o, torch.tensor(o, dtype=torch.float64)):
        g = torch.Generator().manual_seed(seed)
        anchors = F.normalize(torch.randn(b, d, generator=g), dim=1).requires_grad_()
        pool = F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_()
        pos = (anchors * F.normalize(torch.randn(b, d, generator=g), dim=1)).sum(1)
        scores = anchors @ pool.t()
        sel = e.sampler.select(Candidates.from_scores(scores.detach()), o_arg)
        neg = (Negatives(anchors, pos, scores, pool, None, valid=sel) if sel.dtype == torch.bool
               else Negatives(anchors, pos, scores.gather(1, sel), pool, sel))
        neg.generator = torch.Generator().manual_seed(7)
        out.append((e, neg))
    return out


@pytest.mark.parametrize("est", ["ring", "ball", "ring_hcl"])
def test_a_masked_ring_gives_the_gathered_rings_loss_and_gradient(est):
    (e, gathered), (_, masked) = _ring_both_ways(est)
    assert masked.valid is not None and masked.valid.sum(1).tolist() == [gathered.logits.shape[1]] * 4
    results = []
    for neg in (gathered, masked):
        loss = e.loss(neg, T)
        results.append((loss, *torch.autograd.grad(loss, [neg.anchors, neg.pool])))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


RING_MOCHI_KNOBS = {"RING_MOCHI.HARDEST": 0.4, "RING_MOCHI.MIX": 0.5, "RING_MOCHI.QUERY_MIX": 0.3}


@pytest.mark.parametrize("hardest", [0.4, 1.0])  # fewer hard negatives than the ring holds (11) / all of them
@pytest.mark.parametrize("in_ring", [True, False])
def test_ring_mochi_on_a_masked_ring_equals_the_formula(hardest, in_ring):
    """The masked path's MoCHi against the loop formula on the ring's members: counts ceil(fraction * 11) of
    the ring's 11 members (drawn in the static width's shapes, ceil(fraction * 40), the rest left out); hard
    negatives the most similar ring members, most similar first; with IN_RING only mixes inside the band."""
    knobs = {**RING_MOCHI_KNOBS, "RING_MOCHI.HARDEST": hardest, "RING_MOCHI.IN_RING": in_ring}
    (e, _), (_, neg) = _ring_both_ways("ring_mochi", **knobs)
    ours = e.loss(neg, T)
    grads = torch.autograd.grad(ours, [neg.anchors, neg.pool])
    kept = neg.stats["synthetic"]
    (_, _), (_, neg) = _ring_both_ways("ring_mochi", **knobs)
    ref, count = loop_mochi_masked(neg, (math.ceil(hardest * 40), 20, 12), (math.ceil(hardest * 11), 6, 4),
                                   in_ring, T)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, torch.autograd.grad(ref, [neg.anchors, neg.pool])):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert float(kept) == sum(count) / len(count) and (max(count) < 10) == in_ring


def loop_mochi_masked(neg: Negatives, static, per_ring, in_ring, tau):
    """``loop_mochi`` for a masked ring: per anchor only the valid columns are negatives; ``static`` (k, s, s')
    the draws' shapes, ``per_ring`` (k, s, s') what counts of them: the hard ones the min(k) most similar ring
    members, most similar first, positions floor(u * available) with float64 uniforms in the order i, j, a,
    j', b; the first s pair mixes and s' query mixes; with ``in_ring`` only mixes whose similarity lies within
    the ring members'.  (loss, mixes kept per anchor)."""
    g = torch.Generator().manual_seed(7)
    b = neg.logits.shape[0]
    (_, s, s2), (k_ring, s_ring, s2_ring) = static, per_ring
    avail = neg.valid.sum(1).clamp_max(k_ring)
    def pos(count):
        return (torch.rand(b, count, generator=g, dtype=torch.float64) * avail[:, None]).long()
    i_all, j_all = pos(s), pos(s)
    a_all = torch.rand(b, s, 1, generator=g)
    jq_all = pos(s2)
    bq_all = 0.5 * torch.rand(b, s2, 1, generator=g)
    losses, kept = [], []
    for r in range(b):
        cols = [c for c in range(neg.logits.shape[1]) if neg.valid[r, c]]
        order = sorted(cols, key=lambda c: -float(neg.logits[r, c].detach()))[:int(avail[r])]
        hard = [neg.pool[c].detach() for c in order]
        ring = neg.logits[r, cols].detach()

        def keep(t, sim):
            counted = t < s_ring if t < s else t - s < s2_ring
            return counted and (not in_ring or ring.min() <= sim <= ring.max())
        loss, n = row_mochi_loss(neg, r, neg.logits[r, cols], hard, (i_all, j_all, a_all, jq_all, bq_all), tau, keep)
        losses.append(loss)
        kept.append(n)
    return torch.stack(losses).mean(), kept


def test_ring_mochi_counts_follow_the_ring_and_keep_query_mixes_out_of_the_excluded_band():
    """On the gathered ring (11 members): ceil(fraction * 11) hard negatives and mixes; the synthetic
    negatives kept all lie within the ring's band, the query mixes that fall inside the band the ring drops
    are gone, and the loss equals the loop formula with those counts."""
    (e, neg), _ = _ring_both_ways("ring_mochi", **RING_MOCHI_KNOBS)
    ours = e.loss(neg, T)
    assert neg.stats["synthetic"] < 10  # 6 pair + 4 query mixes drawn, some left out of the band
    neg2 = _ring_both_ways("ring_mochi", **RING_MOCHI_KNOBS)[0][1]
    draws = draw_mochi(neg2, 5, 6, 4)
    extra = mochi_logits(neg2, draws).detach()
    hi, lo = neg2.logits.detach().max(1, keepdim=True).values, neg2.logits.detach().min(1, keepdim=True).values
    inside = (extra <= hi) & (extra >= lo)
    assert not inside[:, 6:].all() and float(neg.stats["synthetic"]) == inside.sum(1).float().mean()
    assert draws.hard.shape == (4, 5)  # ceil(0.4 * 11)
    neg3 = _ring_both_ways("ring_mochi", **RING_MOCHI_KNOBS)[0][1]
    ref, _ = loop_mochi(neg3, 5, 6, 4, T, keep=lambda r, t, sim: bool(inside[r, t]))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_ring_hcl_and_ring_mochi_read_the_ring():
    for est in ("ring_hcl", "ring_mochi"):
        e = build_estimator(load_config(None, ["OBJECTIVE.ESTIMATOR", est]))
        assert e.sampler.conditional and e.name == est

# Each estimator trains every objective: tests/test_objectives.py (MoCo by default, the matrix under -m slow).


def _clustered(n=4096, b=16, seed=0):
    """Anchors close to their positive (0.95) and far from N negatives (similarity ~N(0, 0.05))."""
    g = torch.Generator().manual_seed(seed)
    return torch.full((b,), 0.95), (0.05 * torch.randn(b, n, generator=g)).clamp(-1, 1)


@pytest.mark.parametrize("est,section", [("dcl", "DCL"), ("hcl", "HCL"), ("ring_hcl", "RING_HCL")])
def test_the_debiased_family_runs_at_its_own_temperature(est, section):
    """The paper configs (OBJECTIVE.TEMPERATURE 0.07) compose DCL/HCL/ring_hcl at the released code's 0.5;
    TEMPERATURE 0 hands the objective's back; the objective trains at the estimator's."""
    from pretrain.contrastive.objectives import build_objective

    cfg = load_config(["cifar10/moco_" + est], None)
    assert cfg.OBJECTIVE.TEMPERATURE == 0.07 and build_estimator(cfg).temperature == 0.5
    small = ["OBJECTIVE.ESTIMATOR", est, "MODEL.OUT_DIM", "16", "MODEL.SMALL_STEM", "False", "MOCO.QUEUE_SIZE", "64"]
    assert build_objective(load_config(None, small), 64, 8).temperature == 0.5
    assert build_objective(load_config(None, small + [f"{section}.TEMPERATURE", "0"]), 64, 8).temperature == 0.07
    with pytest.raises(UserError, match=f"{section}.TEMPERATURE"):
        build_estimator(load_config(None, small + [f"{section}.TEMPERATURE", "-0.5"]))


@pytest.mark.parametrize("est", ["dcl", "hcl"])
def test_the_clamped_fraction_is_reported_and_warns_above_a_half(est):
    """Clustered embeddings, N = 4096, tau+ 0.1: at tau 0.07 every anchor's InfoNCE loss is far below
    log(1 + tau+ N) = 6.0, so every row clamps (and its negatives get no gradient); at the authors' 0.5 none."""
    e = build_estimator(load_config(None, ["OBJECTIVE.ESTIMATOR", est]))
    pos, neg = _clustered()
    stats = {}
    for tau, expected in [(0.07, 1.0), (0.5, 0.0)]:
        n = Negatives(None, pos, neg.clone().requires_grad_(), None, None)
        loss = e.loss(n, tau)
        assert float(n.stats["clamped"]) == expected, tau
        (g,) = torch.autograd.grad(loss, n.logits)
        assert (g.abs().sum() == 0) == (expected == 1.0)
        stats[tau] = {"clamped": float(n.stats["clamped"])}
    assert "TEMPERATURE" in e.warn(stats[0.07]) and e.warn(stats[0.5]) is None


def test_ring_hcl_defaults_to_tau_plus_zero_where_the_clamp_cannot_bind(capsys):
    cfg = load_config(None, ["OBJECTIVE.ESTIMATOR", "ring_hcl"])
    assert cfg.RING_HCL.TAU_PLUS == 0.0 and cfg.HCL.TAU_PLUS == 0.1
    e = build_estimator(cfg)
    pos, neg = _clustered()
    n = Negatives(None, pos, neg, None, None)
    e.loss(n, 0.07)
    assert float(n.stats["clamped"]) == 0.0  # every G_j >= e^(-1/tau): the sum never falls below the floor
    assert "warning" not in capsys.readouterr().err
    build_estimator(load_config(None, ["OBJECTIVE.ESTIMATOR", "ring_hcl", "RING_HCL.TAU_PLUS", "0.1"]))
    err = capsys.readouterr().err
    assert err.count("warning: ring_hcl: RING_HCL.TAU_PLUS 0.1") == 1 and "set 0" in err


def test_a_clamping_run_logs_the_fraction_and_warns_once(tmp_path, tiny_opts, capsys):
    from pretrain.cli import main as pretrain_main
    from tests.conftest import opts_with

    opts = opts_with(tiny_opts, **{"OBJECTIVE.ESTIMATOR": "dcl", "DCL.TEMPERATURE": 0.05, "DCL.TAU_PLUS": 0.9,
                                   "SOLVER.MAX_ITERS": 6, "KNN.ENABLED": False})
    assert pretrain_main(["-c", "cpu_small", "-o", str(tmp_path / "run"), *opts]) == 0
    import json

    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    clamped = [r["clamped"] for r in rows if "clamped" in r]
    assert len(clamped) == 3 and all(c > 0.5 for c in clamped)
    out = capsys.readouterr()
    assert out.err.count("warning: dcl:") == 1 and "DCL.TEMPERATURE" in out.err
    assert "dcl: temperature 0.05" in out.out
