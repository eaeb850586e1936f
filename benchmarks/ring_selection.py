"""Cost of conditional negative sampling, each comparison measured side by side in one run.

(a) MoCo step time with Ring negatives / with NCE negatives, same queue (65,536), ResNet-18, 32 px,
    batch 64 (model step only, interleaved repetitions, median);
(b) ring selection over a 65,536-entry queue at batch 256: our partial selection versus the authors'
    full sort, and versus a plain sorted top-k;
(c) the ring over an ImageNet-sized bank (1,281,167 x 128) at batch 256, 4,095 draws per anchor:
    our anchor-blocked selection versus scoring the whole bank at once and taking top-k; each method runs
    in its own process and reports its time and its peak memory above the bank itself.

    python benchmarks/ring_selection.py            # all three
    python benchmarks/ring_selection.py --only b
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pretrain.contrastive.samplers import Candidates, ring_bounds, ring_indices
from pretrain.contrastive.samplers.ring import RingSampler  # noqa: E402

IMAGENET = 1_281_167


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_a(reps: int) -> None:
    from pretrain.config import load_config
    from pretrain.contrastive.objectives import build_objective

    steps = {}
    x1, x2 = torch.randn(64, 3, 32, 32), torch.randn(64, 3, 32, 32)
    for est in ("nce", "ring"):
        cfg = load_config(None, ["OBJECTIVE.ESTIMATOR", est, "MOCO.QUEUE_SIZE", "65536", "MODEL.SMALL_STEM", "True",
                                 "SOLVER.BATCH_SIZE", "64"])
        torch.manual_seed(0)
        obj = build_objective(cfg, 50000, 64)
        opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.03, momentum=0.9)

        def step(obj=obj, opt=opt):
            loss, _ = obj(x1, x2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        step()
        steps[est] = step
    times = {"nce": [], "ring": []}
    for _ in range(reps):  # interleaved, so drift in machine load hits both alike
        for est in ("nce", "ring"):
            t = time.perf_counter()
            steps[est]()
            times[est].append(time.perf_counter() - t)
    nce, ring = statistics.median(times["nce"]), statistics.median(times["ring"])
    print(f"(a) MoCo step, ResNet-18 32px, batch 64, queue 65536: NCE {nce:.3f} s, Ring {ring:.3f} s, "
          f"Ring/NCE = {ring / nce:.3f}  (target <= 1.03)")


def bench_b(reps: int) -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(256, 65536, generator=g)
    inner, outer = ring_bounds(65536, 0.1, 0.1)
    ours = _median_time(lambda: ring_indices(scores, 0.1, 0.1), reps)
    full = _median_time(lambda: torch.sort(scores, dim=1, descending=True).indices[:, inner:outer], reps)
    topk = _median_time(lambda: scores.topk(outer, dim=1, sorted=True).indices[:, inner:], reps)
    print(f"(b) ring over a 65536 queue, batch 256 (ranks [{inner}, {outer})): ours {ours * 1e3:.1f} ms, "
          f"full sort {full * 1e3:.1f} ms ({full / ours:.1f}x faster), sorted top-k {topk * 1e3:.1f} ms "
          f"({topk / ours:.1f}x)  (target >= 5x vs the sort)")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def bench_c_one(method: str) -> dict:
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(IMAGENET, 128, generator=g), dim=1)
    z = F.normalize(torch.randn(256, 128, generator=g), dim=1)
    base = _rss_mb()
    t = time.perf_counter()
    # ours: the bank scored block by block of anchors (BANK.SCORE_BLOCK's default); whole: scored at once
    cands = (Candidates.from_bank(z, bank, 2 ** 25) if method == "ours"
             else Candidates.from_scores(z @ bank.t()))
    idx = RingSampler(0.1).select(cands, 0.1, 4095, torch.Generator().manual_seed(1))
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": secs, "extra_mb": peak - base, "checksum": int(idx.sum())}


def bench_c() -> None:
    res = {}
    for method in ("whole", "ours"):
        out = subprocess.run([sys.executable, __file__, "--c-one", method], capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            raise SystemExit(out.stderr[-2000:])
        res[method] = json.loads(out.stdout.strip().splitlines()[-1])
    w, o = res["whole"], res["ours"]
    same = "identical draws" if w["checksum"] == o["checksum"] else "DIFFERENT draws"
    print(f"(c) ring over a {IMAGENET:,} x 128 bank, batch 256, 4095 draws: whole-bank scoring {w['seconds']:.2f} s "
          f"(+{w['extra_mb'] / 1024:.2f} GiB), ours {o['seconds']:.2f} s (+{o['extra_mb'] / 1024:.2f} GiB): "
          f"time {o['seconds'] / w['seconds']:.2f}x, extra memory {o['extra_mb'] / w['extra_mb']:.2f}x; {same}  "
          "(target: time <= 1x, memory <= 0.33x)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["a", "b", "c"], nargs="+", default=["a", "b", "c"])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--c-one", choices=["whole", "ours"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.c_one:
        print(json.dumps(bench_c_one(args.c_one)))
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if "b" in args.only:
        bench_b(args.reps)
    if "c" in args.only:
        bench_c()
    if "a" in args.only:
        bench_a(args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
