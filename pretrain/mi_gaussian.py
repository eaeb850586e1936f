"""ring-mi-gaussian: the paper's theory, measured on correlated Gaussians.

x, y in R^d with y = rho x + sqrt(1 - rho^2) eps: the true mutual information is I = -(d/2) log(1 - rho^2).
With the optimal critic f(x, y) = log p(y|x) / p(y), the contrastive estimate from k candidates
(the positive and k - 1 negatives) is

    I_hat = mean_i [ f(x_i, y_i) - log( (1/k) sum_j exp f(x_i, y_ij) ) ]   (the positive is among the j),

and for each anchor the negatives come from a pool of N independent draws of p(y):
- NCE: k - 1 of the pool, uniformly;
- Ring (CNCE): k - 1 drawn with replacement from ranks [floor(iota * floor(o N)), floor(o N)) of the pool
  ranked by the critic (the same ring selection the training code uses);
- Ball: the ring with iota = 0;
- DCL and HCL: NCE's uniform negatives, the sum over them replaced by the debiased (and, for HCL,
  reweighted) Ng of their loss forms: I_hat = log k - loss, the loss computed by the training code's own
  ``debiased_loss`` (the critic values as similarities, temperature 1).  With tau+ > 0 they subtract a
  share of the positive that these independent negatives do not contain: their bias measures that.
MoCHi has no estimate here: its synthetic negatives are mixes of embeddings, not draws of p(y), and the
critic of a mix has no density-ratio meaning.
Each estimate averages a batch of anchors; repeating it over many independent draws gives the mean,
the bias (mean - I) and the standard deviation of the estimator.

    ring-mi-gaussian                           # the README's table
    ring-mi-gaussian --dim 4 --rho 0.8 --ks 16 64 --trials 500
"""
from __future__ import annotations

import math
import sys

import pandas as pd
import torch

from pretrain.common import cli_main, command_parser
from pretrain.contrastive.estimators.base import contrastive_loss
from pretrain.contrastive.estimators.dcl import debiased_loss
from pretrain.contrastive.samplers import Candidates
from pretrain.contrastive.samplers.ring import RingSampler
from pretrain.contrastive.samplers.uniform import UniformSampler


def true_mi(dim: int, rho: float) -> float:
    return -0.5 * dim * math.log(1.0 - rho ** 2)


def critic(x: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
    """log p(y|x) - log p(y) for the Gaussian pair (broadcasts over leading dims)."""
    s2 = 1.0 - rho ** 2
    return (-((y - rho * x) ** 2).sum(-1) / (2 * s2) + (y ** 2).sum(-1) / 2) - 0.5 * x.shape[-1] * math.log(s2)


def infonce_form(f_pos, f_neg):
    return contrastive_loss(f_pos, f_neg, 1.0)


def debiased_form(tau_plus: float, beta: float = 0.0):
    return lambda f_pos, f_neg: debiased_loss(f_pos, f_neg, 1.0, tau_plus, beta)


def estimate(dim: int, rho: float, k: int, sampler, outer: float, pool: int, batch: int,
             generator: torch.Generator, form=infonce_form) -> float:
    x = torch.randn(batch, dim, generator=generator)
    y = rho * x + math.sqrt(1 - rho ** 2) * torch.randn(batch, dim, generator=generator)
    candidates = torch.randn(batch, pool, dim, generator=generator)
    f_pos = critic(x, y, rho)
    f_pool = critic(x.unsqueeze(1), candidates, rho)
    idx = sampler.select(Candidates.from_scores(f_pool), outer, k - 1, generator)
    return math.log(k) - form(f_pos, f_pool.gather(1, idx)).item()


SETTINGS = {  # name: (sampler, outer fraction, loss form)
    "NCE": (UniformSampler(), 1.0, infonce_form),
    "Ring o=0.1 i=0.1": (RingSampler(0.1), 0.1, infonce_form),
    "Ring o=0.5 i=0.1": (RingSampler(0.1), 0.5, infonce_form),
    "Ball o=0.1": (RingSampler(0.0), 0.1, infonce_form),
    "DCL tau+=0.1": (UniformSampler(), 1.0, debiased_form(0.1)),
    "HCL beta=1 tau+=0.1": (UniformSampler(), 1.0, debiased_form(0.1, 1.0)),
    "HCL beta=1 tau+=0": (UniformSampler(), 1.0, debiased_form(0.0, 1.0)),
}
NO_ESTIMATE = {"MoCHi": "its synthetic negatives are mixes of embeddings, not draws of p(y)"}


def run(dim: int, rho: float, ks, trials: int, batch: int, pool: int, seed: int = 0,
        estimators=SETTINGS) -> pd.DataFrame:
    truth = true_mi(dim, rho)
    rows = []
    for k in ks:
        for name, (sampler, outer, form) in estimators.items():
            g = torch.Generator().manual_seed(seed)
            vals = torch.tensor([estimate(dim, rho, k, sampler, outer, pool, batch, g, form) for _ in range(trials)])
            mean, std = vals.mean().item(), vals.std().item()
            rows.append({"k": k, "estimator": name, "mean": mean, "bias": mean - truth, "std": std,
                         "se": std / math.sqrt(trials), "true_mi": truth, "log_k": math.log(k)})
    return pd.DataFrame(rows)


@cli_main("ring-mi-gaussian")
def main(argv: list[str] | None = None) -> int:
    p = command_parser("ring-mi-gaussian", __doc__, output="also write the full table (CSV) to this file")
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--rho", type=float, default=0.5)
    p.add_argument("--ks", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--trials", type=int, default=200, help="independent estimates per cell")
    p.add_argument("--batch", type=int, default=64, help="anchors averaged by one estimate")
    p.add_argument("--pool", type=int, default=4096, help="candidate negatives per anchor (N)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    df = run(args.dim, args.rho, args.ks, args.trials, args.batch, args.pool, args.seed)
    print(f"d={args.dim}, rho={args.rho}: true I = {true_mi(args.dim, args.rho):.4f} nats; "
          f"{args.trials} estimates of {args.batch} anchors each, pool N={args.pool}")
    print(df[["k", "estimator", "mean", "bias", "std"]].to_markdown(index=False, floatfmt=".4f"))
    for name, why in NO_ESTIMATE.items():
        print(f"{name}: no MI estimate ({why}).")
    if args.output:
        from pretrain.io import atomic_write_text

        atomic_write_text(args.output, df.to_csv(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
