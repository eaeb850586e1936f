"""The cached linear probe's memory and speed at two dataset sizes: peak anonymous memory must not grow with N.

    python benchmarks/linear_probe_memory.py                       # 50k and 200k x 2048 synthetic features
    python benchmarks/linear_probe_memory.py --sizes 20000 80000 --dim 512

Each size runs in its own process: synthetic float16 features are written to a memory-mapped cache
(``pretrain/evaluation/features.py``), then one epoch of the probe (batch 256, 1000 classes) streams them.
Reported: peak RssAnon (anonymous memory, sampled every 5 ms; mapped file pages count in plain RSS, not
here) during the epoch, and seconds per epoch.  One run per size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return -1


def one_size(n: int, dim: int, classes: int) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from pretrain.evaluation.features import FeatureCache
    from pretrain.evaluation.linear import train_linear_probe

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cache"
        folder.mkdir()
        feats = np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=np.float16, shape=(n, dim))
        rng = np.random.default_rng(0)
        for s in range(0, n, 8192):
            feats[s:s + 8192] = rng.standard_normal((min(8192, n - s), dim), dtype=np.float32).astype(np.float16)
        feats.flush()
        del feats
        np.save(folder / "labels.npy", rng.integers(0, classes, n).astype(np.int64))
        cache = FeatureCache(folder)
        base, peak, running = rss_anon_kb(), [0], [True]

        def sample():
            while running[0]:
                peak[0] = max(peak[0], rss_anon_kb())
                time.sleep(0.005)
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        t0 = time.perf_counter()
        train_linear_probe(cache, FeatureCache(folder), classes, epochs=1, batch_size=256, lr=0.1, momentum=0.9,
                           weight_decay=0.0, lr_lambda=lambda i: 1.0, seed=0, device=torch.device("cpu"))
        seconds = time.perf_counter() - t0
        running[0] = False
        t.join()
        return {"n": n, "dim": dim, "file_mb": n * dim * 2 / 2 ** 20, "rss_anon_before_mb": base / 1024,
                "peak_rss_anon_mb": peak[0] / 1024, "s_per_epoch": seconds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.dim, args.classes)))
        return 0
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--dim", str(args.dim), "--classes",
                              str(args.classes)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| N x D | cache on disk (MB) | RssAnon before (MB) | peak RssAnon during the epoch (MB) | s/epoch |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} x {r['dim']} | {r['file_mb']:,.0f} | {r['rss_anon_before_mb']:.0f} | "
              f"{r['peak_rss_anon_mb']:.0f} | {r['s_per_epoch']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
