"""``mochi``: hard negative mixing (Kalantidis et al. 2020) over uniform negatives: the draws, the mixes'
logits in closed form (``ring_mochi`` draws and mixes with them)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pretrain import distributed as D
from pretrain.common import UserError
from pretrain.contrastive.estimators.base import ESTIMATOR_REGISTRY, Estimator, Negatives, contrastive_loss
from pretrain.contrastive.samplers import SAMPLER_REGISTRY


@dataclass
class MochiDraws:
    """Which hard negatives MoCHi mixes, per anchor: ``hard`` (B, k) the columns of the k most similar
    negatives, in column order (an unsorted top-k: the order within the k does not change the draws'
    distribution; with ``Negatives.valid``, most similar first); pair mixes ``alpha * h[i] + (1 - alpha) * h[j]`` (B, s); query mixes
    ``beta * q + (1 - beta) * h[jq]`` (B, s'), beta < 0.5.  Positions i, j, jq index ``hard``."""

    hard: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    alpha: torch.Tensor
    jq: torch.Tensor
    beta: torch.Tensor


def draw_mochi(negatives: Negatives, num_hardest: int, num_mix: int, num_query_mix: int,
               hardest_per_row: torch.Tensor | None = None) -> MochiDraws:
    """MoCHi's draws, in the order i, j, alpha, jq, beta, for the global batch from the objective's generator
    (this rank's rows taken): the same on every rank and after a resume.  With ``negatives.valid`` (a ring
    sized on the device) the hard negatives come from the valid ones, most similar first, and a row whose
    ring holds fewer than k draws among the ones it has (float64 uniforms instead of integers), or among its
    ``hardest_per_row`` (B,) first when given (that many, at most k, per row)."""
    with torch.no_grad():
        b, m = negatives.logits.shape
        k = min(num_hardest, m)
        g = negatives.generator
        dev = g.device if g is not None else negatives.logits.device
        off, total = D.get_rank() * b, D.get_world_size() * b
        if negatives.valid is None:
            hard = negatives.logits.detach().topk(k, dim=1, sorted=False).indices.sort(dim=1).values
            available = None
        else:
            hard = negatives.masked_logits().detach().topk(k, dim=1).indices  # the valid ones first
            available = negatives.count().clamp_max(k).unsqueeze(1)
            if hardest_per_row is not None:
                available = torch.minimum(available, hardest_per_row.unsqueeze(1)).clamp_min(1)

        def picks(count):  # (B, count) positions among the k hardest
            if available is None:
                return torch.randint(k, (total, count), generator=g, device=dev)[off:off + b].to(hard.device)
            u = torch.rand((total, count), generator=g, device=dev, dtype=torch.float64)[off:off + b]
            return (u.to(hard.device) * available).long().clamp_max(available - 1)

        def weights(count, high):  # (B, count) uniform in [0, high)
            return high * torch.rand((total, count), generator=g, device=dev)[off:off + b].to(hard.device)

        i, j = picks(num_mix), picks(num_mix)
        alpha = weights(num_mix, 1.0)
        jq = picks(num_query_mix)
        return MochiDraws(hard, i, j, alpha, jq, weights(num_query_mix, 0.5))


def _pool_rows(negatives: Negatives, columns: torch.Tensor) -> torch.Tensor:
    """Rows of the pool behind the given logit columns (B, n)."""
    return columns if negatives.indices is None else negatives.indices.gather(1, columns)


def gathered_dots(pool: torch.Tensor, rows_a: torch.Tensor, rows_b: torch.Tensor | None = None,
                  block: int = 8) -> tuple[torch.Tensor, ...]:
    """(|p_a|^2, |p_b|^2, p_a . p_b) for the pool rows ``rows_a``, ``rows_b`` (B, n), each (B, n); without
    ``rows_b``, (|p_a|^2,) alone.  On the CPU, ``block`` anchors at a time into reused buffers that stay in
    cache (14 ms against ~100 ms for two (64, 1024, 128) gathers and their products, one thread, measured
    once); on a GPU in one go."""
    b, n = rows_a.shape
    block = b if pool.device.type == "cuda" else block
    count = 1 if rows_b is None else 3
    out = torch.empty(count, b, n, device=pool.device, dtype=pool.dtype)
    xa = pool.new_empty(min(block, b) * n, pool.shape[1])
    xb = torch.empty_like(xa) if rows_b is not None else None
    for s in range(0, b, block):
        rows = min(block, b - s)
        ya = torch.index_select(pool, 0, rows_a[s:s + rows].reshape(-1), out=xa[:rows * n])
        pairs = [(ya, ya)]
        if rows_b is not None:
            yb = torch.index_select(pool, 0, rows_b[s:s + rows].reshape(-1), out=xb[:rows * n])
            pairs += [(yb, yb), (ya, yb)]
        for k, (x, y) in enumerate(pairs):
            out[k, s:s + rows] = torch.einsum("nd,nd->n", x, y).view(rows, n)
    return tuple(out)


def mochi_logits(negatives: Negatives, draws: MochiDraws) -> torch.Tensor:
    """(B, s + s') similarities q . m of each anchor to its synthetic negatives m, with the gradient of
    q . stopgrad(m), in closed form from the similarities already computed:
    q . (a h_i + (1 - a) h_j) / |a h_i + (1 - a) h_j| = (a s_i + (1 - a) s_j) / |...|, where
    |...|^2 = a^2 |h_i|^2 + (1 - a)^2 |h_j|^2 + 2 a (1 - a) h_i . h_j; the query mixes likewise with q for
    h_i.  Only h_i . h_j and the norms read embeddings: no (B, s, D) mix, normalisation or product with q
    is built (MoCo at K = 65,536: README, "Step time of every estimator"); tests/test_estimator_family.py
    checks it against the mixes materialised."""
    q = negatives.anchors.float()
    s = negatives.logits.float()
    if negatives.pool.requires_grad:  # SimCLR's in-batch pool: the mixes' gradient must reach q only
        sims = q @ negatives.pool.detach().float().t()
        s = sims if negatives.indices is None else sims.gather(1, negatives.indices)
    ci, cj, cq = (draws.hard.gather(1, p) for p in (draws.i, draws.j, draws.jq))
    with torch.no_grad():
        pool = negatives.pool.detach().float()
        a, b = draws.alpha, draws.beta
        ii, jj, ij = gathered_dots(pool, _pool_rows(negatives, ci), _pool_rows(negatives, cj))
        pair_norm = (a * a * ii + (1 - a) ** 2 * jj + 2 * a * (1 - a) * ij).clamp_min(0).sqrt().clamp_min(1e-12)
        (hh,) = gathered_dots(pool, _pool_rows(negatives, cq))
        qq, sq = (q.detach() ** 2).sum(1, keepdim=True), s.detach().gather(1, cq)
        q_norm = (b * b * qq + (1 - b) ** 2 * hh + 2 * b * (1 - b) * sq).clamp_min(0).sqrt().clamp_min(1e-12)
    q_self = (q * q.detach()).sum(1, keepdim=True)  # q . stopgrad(q): |q|^2, gradient stopgrad(q)
    pair = (a * s.gather(1, ci) + (1 - a) * s.gather(1, cj)) / pair_norm
    query = (b * q_self + (1 - b) * s.gather(1, cq)) / q_norm
    return torch.cat([pair, query], dim=1)


# N: the hardest negatives mixed from (at most the negatives there are); s: mixes of two of them; s': mixes of
# the query with one of them (query weight < 0.5).  The MoCHi paper's (1024, 1024, 256), with a queue of 16,384.
MOCHI_CONFIG = {"MOCHI": {"NUM_HARDEST": 1024, "NUM_MIX": 1024, "NUM_QUERY_MIX": 256}}


@ESTIMATOR_REGISTRY.register(name="mochi", config=MOCHI_CONFIG)
def build_mochi(cfg) -> Estimator:
    """Hard negative mixing over uniform negatives (MOCHI.*)."""
    M = cfg.MOCHI
    if M.NUM_HARDEST < 1 or M.NUM_MIX < 0 or M.NUM_QUERY_MIX < 0:
        raise UserError(f"MOCHI.NUM_HARDEST must be >= 1 and MOCHI.NUM_MIX, MOCHI.NUM_QUERY_MIX >= 0, got "
                        f"{M.NUM_HARDEST}, {M.NUM_MIX}, {M.NUM_QUERY_MIX}.")
    n, s, s2 = int(M.NUM_HARDEST), int(M.NUM_MIX), int(M.NUM_QUERY_MIX)

    def loss(neg: Negatives, t: float) -> torch.Tensor:
        extra = mochi_logits(neg, draw_mochi(neg, n, s, s2))  # gradient into the anchor only
        return contrastive_loss(neg.pos, torch.cat([neg.logits.float(), extra], dim=1), t)
    return Estimator("mochi", SAMPLER_REGISTRY.get("uniform")(cfg), loss)
