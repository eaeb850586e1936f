"""Step time of every estimator relative to NCE, measured side by side in one run.

MoCo, queue K = 65,536, ResNet-18 (small-image stem), 32 px, batch 64, one optimizer step (forward,
backward, update) on fixed GPU-free tensors.  Timing is interleaved: each round times ``--reps`` steps of
every estimator in a rotated order, so that drift in the machine's load hits all alike; the ratio to NCE
is taken per round, and the table shows its median and min-max over ``--rounds`` rounds.

    python benchmarks/estimator_overhead.py                      # every estimator, 3 rounds x 5 steps
    python benchmarks/estimator_overhead.py --estimators nce ring dcl --rounds 5
    python benchmarks/estimator_overhead.py --estimators nce ring ring+adaptive   # ESTIMATOR+RING.SCHEDULE

``ring+adaptive`` runs the loss-adaptive schedule (the ring sized on the device: a sort per row and a
mask) fed each step's loss, started at RING.OUTER so that its ring is the constant schedule's size.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pretrain.config import load_config  # noqa: E402
from pretrain.contrastive.estimators import ESTIMATOR_REGISTRY  # noqa: E402
from pretrain.contrastive.objectives import build_objective  # noqa: E402


def make_step(name: str, queue: int, batch: int, size: int):
    est, _, schedule = name.partition("+")
    cfg = load_config(None, ["OBJECTIVE.ESTIMATOR", est, "MOCO.QUEUE_SIZE", str(queue), "MODEL.SMALL_STEM", "True",
                             "SOLVER.BATCH_SIZE", str(batch), "RING.SCHEDULE", schedule or "constant"])
    torch.manual_seed(0)
    obj = build_objective(cfg, 50000, batch)
    adaptive = obj.schedule.observes == "loss"
    if adaptive:
        obj.schedule.load_state_dict({"value": cfg.RING.OUTER, "history": []})
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.03, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(batch, 3, size, size, generator=g), torch.randn(batch, 3, size, size, generator=g)

    def step():
        obj.set_progress(0)
        loss, _ = obj(x1, x2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if adaptive:
            obj.observe(loss.detach())
    step()  # warm-up: allocations, the first queue write
    return step


def measure(estimators, rounds: int, reps: int, queue: int, batch: int, size: int) -> pd.DataFrame:
    steps = {e: make_step(e, queue, batch, size) for e in estimators}
    per_round = []
    for r in range(rounds):
        order = estimators[r % len(estimators):] + estimators[:r % len(estimators)]
        t = {}
        for e in order:
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                steps[e]()
                times.append(time.perf_counter() - t0)
            t[e] = statistics.median(times)
        per_round.append(t)
    rows = []
    for e in estimators:
        ratios = [t[e] / t["nce"] for t in per_round]
        rows.append({"estimator": e, "step_s (median)": statistics.median(t[e] for t in per_round),
                     "ratio to NCE (median)": statistics.median(ratios), "min": min(ratios), "max": max(ratios)})
    return pd.DataFrame(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--estimators", nargs="+", default=None, help="default: every registered one")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--queue", type=int, default=65536)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args()
    names = args.estimators or ESTIMATOR_REGISTRY.names()
    names = ["nce"] + [n for n in names if n != "nce"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MoCo K={args.queue}, ResNet-18 "
          f"{args.size} px, batch {args.batch}; {args.rounds} interleaved rounds x {args.reps} steps")
    df = measure(names, args.rounds, args.reps, args.queue, args.batch, args.size)
    print(df.to_markdown(index=False, floatfmt=".3f"))
    print("target: ratio <= 1.05 for every estimator")
    return 0


if __name__ == "__main__":
    sys.exit(main())
