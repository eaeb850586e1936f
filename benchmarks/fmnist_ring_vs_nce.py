"""IR and MoCo with NCE versus Ring on real Fashion-MNIST: same budget, linear accuracy over seeds.

Every run: the fashion_mnist_cpu config (half-width ResNet-18, 32 px; by default an 8,192-image subset
for 24 epochs, ~25 minutes a run on 2 cores), one objective x estimator x seed, then ring-lincls (cached
features, 5k train / 5k test images).  The random-init baseline of the same architecture is printed
beside them.

    python benchmarks/fmnist_ring_vs_nce.py -o runs/fmnist            # 2 objectives x 2 estimators x 3 seeds
    python benchmarks/fmnist_ring_vs_nce.py -o runs/fmnist_short --subset 2048 --epochs 5   # the README's table
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pretrain.cli import main as pretrain_main  # noqa: E402
from pretrain.evaluation.linear import run_lincls  # noqa: E402

OBJECTIVE_OPTS = {"moco": [], "ir": ["OBJECTIVE.NAME", "ir", "DATA.AUGMENT", "ir", "BANK.NUM_NEGATIVES", "1023"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default="runs/fmnist_ring_vs_nce")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="override SOLVER.EPOCHS")
    p.add_argument("--subset", type=int, default=None, help="override DATA.SUBSET")
    p.add_argument("--objectives", nargs="+", default=["moco", "ir"])
    args = p.parse_args()
    out = Path(args.output)
    rows = []
    for obj in args.objectives:
        for est in ("nce", "ring"):
            for seed in range(args.seeds):
                run = out / f"{obj}_{est}_s{seed}"
                opts = [*OBJECTIVE_OPTS[obj], "OBJECTIVE.ESTIMATOR", est, "SEED", str(seed), "LOG.PROGRESS", "False",
                        "KNN.ENABLED", "False"]
                if args.epochs:
                    opts += ["SOLVER.EPOCHS", str(args.epochs)]
                if args.subset:
                    opts += ["DATA.SUBSET", str(args.subset)]
                if not (run / "lincls" / "summary.json").exists():
                    if pretrain_main(["-c", "fashion_mnist_cpu", "-o", str(run), "--auto-resume", *opts]) != 0:
                        return 1
                    run_lincls(run, progress=False)
                s = json.loads((run / "lincls" / "summary.json").read_text())
                rows.append({"objective": obj, "estimator": est, "seed": seed, "top1": s["metrics"]["top1"]})
                print(f"{obj}-{est} seed {seed}: linear top-1 {s['metrics']['top1']:.2f}%", flush=True)
    base = out / f"{args.objectives[0]}_nce_s0"
    rnd = run_lincls(base, out / "random_init", random_init=True, progress=False)["metrics"]["top1"]
    df = pd.DataFrame(rows)
    table = df.groupby(["objective", "estimator"])["top1"].agg(["mean", "std", "count"]).reset_index()
    print(table.to_markdown(index=False, floatfmt=".2f"))
    print(f"random-init backbone (same architecture): {rnd:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
