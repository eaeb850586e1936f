"""What ``ring-suite --jobs N`` is worth on this machine: N pretraining stages one after another (each with
every core's threads, the default launcher) against the same N stages side by side (``--jobs N``: each with
cores/N threads), through the launcher's own functions (transfer/local_stages.py).

Each stage is a real ``ring-pretrain`` run of CONFIG at its own seed for --epochs epochs (its process start,
data set-up and final kNN included, as in a suite).  The two ways alternate in rounds (which one goes first
alternates too); the ratio is the median over rounds of (one after another) / (side by side) wall time,
printed with its spread (min-max).  Nothing else should run on the machine meanwhile.

    python benchmarks/suite_jobs.py                           # fashion_mnist_cpu, 2 stages, 1 epoch, 3 rounds
    python benchmarks/suite_jobs.py -c cpu_small --epochs 4   # built-in data (no Fashion-MNIST needed)
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pretrain.data.workers import available_cores  # noqa: E402
from transfer.local_stages import run_concurrently, run_stage  # noqa: E402
from transfer.tasks.base import Stage  # noqa: E402


def stages(config: str, epochs: int, jobs: int, folder: Path) -> list[Stage]:
    out = []
    for seed in range(jobs):
        run = folder / f"s{seed}"
        cmd = [sys.executable, "-m", "pretrain.cli", "-c", config, "-o", str(run), "SEED", str(seed),
               "SOLVER.EPOCHS", str(epochs), "KNN.PERIOD_EPOCHS", str(epochs), "DEVICE", "cpu", "LOG.PROGRESS", "False"]
        out.append(Stage(f"pretrain s{seed}", cmd, run / "summary.json", folder / f"s{seed}.log", kind="pretrain"))
    return out


def timed(config: str, epochs: int, jobs: int, side_by_side: bool) -> tuple[float, list[float]]:
    """Wall seconds of the N stages, and each run's training images/s (from its summary)."""
    folder = Path(tempfile.mkdtemp(prefix="suite_jobs_"))
    try:
        todo = stages(config, epochs, jobs, folder)
        t0 = time.perf_counter()
        if side_by_side:
            run_concurrently(todo, todo, jobs, lambda now: None, lambda s, secs: None)
        else:
            for s in todo:
                run_stage(s)
        wall = time.perf_counter() - t0
        rates = [json.loads(s.done.read_text())["metrics"].get("img_per_s", float("nan")) for s in todo]
        return wall, rates
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default="fashion_mnist_cpu")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(f"{args.jobs} x ring-pretrain -c {args.config} ({args.epochs} epoch(s) each) on {available_cores()} cores; "
          f"{args.rounds} rounds")
    ratios = []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        walls = {}
        for side_by_side in order:
            wall, rates = timed(args.config, args.epochs, args.jobs, side_by_side)
            walls[side_by_side] = wall
            how = f"side by side (--jobs {args.jobs})" if side_by_side else "one after another"
            print(f"  round {r + 1}: {how:<26} {wall:6.1f} s; training img/s per run: "
                  + ", ".join(f"{x:.0f}" for x in rates), flush=True)
        ratios.append(walls[False] / walls[True])
    med = statistics.median(ratios)
    print(f"speed-up of --jobs {args.jobs} (one after another / side by side): {med:.2f}x (median of {args.rounds} rounds; "
          f"range {min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
