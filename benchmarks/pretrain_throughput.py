"""End-to-end MoCo-v2 pretraining throughput: ringnce's engine versus the same training built from lightly.

Both sides train the same ResNet-18 (32-px small-image stem, 512-512-128 head) on the same in-memory
32x32 images, with MoCo-v2 augmentation, a 4096-key queue, and 2 data-loader workers; each measurement
runs in its own process (peak memory = that process's max RSS plus its workers').  Reported:
- end to end: data loading + two-view augmentation + MoCo step, images/s after warm-up;
- model step only: the same step on a fixed, pre-made batch (no data loading).
ringnce runs twice: as configured by default (MoCo's shuffle-BN emulated on one process with MOCO.BN_SPLITS
sub-batches, work lightly's recipe does not do: BatchNorm statistics per sub-batch in one pass, or on a CPU
one pass per sub-batch from 32 images up, MOCO.BN_PASSES auto) and with MOCO.SHUFFLE_BN False
(the same computation as lightly's).  Both use the engine's channels-last memory format.  Every
measurement is repeated in interleaved rounds (the order of the three rotated each round), so that a
slow spell of the machine does not land on one side only.

    python benchmarks/pretrain_throughput.py                 # batch 64 and 256
    python benchmarks/pretrain_throughput.py --batches 64 --iters 6 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUEUE, WORKERS, N_IMAGES = 4096, 2, 4096
# ringnce as configured by default (shuffle-BN emulated with MOCO.BN_SPLITS sub-batches), ringnce doing the
# same work as lightly's recipe (no shuffle-BN), and lightly: every ratio is against lightly.
IMPLS = ("ringnce", "ringnce-no-shuffle-bn", "lightly")


def _images() -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-like in-memory data: the built-in shapes rendered once to a uint8 array."""
    from pretrain.data import SyntheticShapes

    ds = SyntheticShapes("train", 512, 32)
    base = np.stack([np.asarray(ds[i][0]) for i in range(len(ds))])
    reps = N_IMAGES // len(base)
    return np.concatenate([base] * reps), np.array(ds.targets * reps)


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024.0


def run_ours(batch: int, warmup: int, iters: int, model_only: bool, shuffle_bn: bool = True) -> dict:
    from pretrain.config import load_config
    from pretrain.contrastive.objectives import build_objective
    from pretrain.data import DATASET_REGISTRY, ArrayImageDataset
    from pretrain.engine.trainer import memory_format

    images, labels = _images()
    DATASET_REGISTRY.register(name="bench_array")(lambda data_cfg, split: ArrayImageDataset(images, labels))
    opts = ["DATA.NAME", "bench_array", "DATA.NUM_WORKERS", str(WORKERS), "DATA.AUGMENT", "mocov2",
            "MODEL.SMALL_STEM", "True", "MODEL.HEAD_HIDDEN", "512", "SOLVER.BATCH_SIZE", str(batch),
            "MOCO.QUEUE_SIZE", str(QUEUE), "KNN.ENABLED", "False", "LOG.PROGRESS", "False",
            "LOG.TENSORBOARD", "False", "CHECKPOINT.PERIOD_ITERS", "100000", "SOLVER.EPOCHS", "1",
            "DEVICE", "cpu", "MOCO.SHUFFLE_BN", str(shuffle_bn)]
    if model_only:
        cfg = load_config(None, opts)
        torch.manual_seed(0)
        obj = build_objective(cfg, N_IMAGES, batch).to(memory_format=memory_format(cfg))  # as the engine does
        opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.03, momentum=0.9)
        x1, x2 = (torch.randn(batch, 3, 32, 32).contiguous(memory_format=memory_format(cfg)) for _ in range(2))

        def step():
            loss, _ = obj(x1, x2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return _time_steps(step, batch, warmup, iters)

    from pretrain.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, opts + ["SOLVER.MAX_ITERS", str(warmup + iters), "LOG.PERIOD", str(warmup)])
        Trainer(cfg, tmp).train()
        rows = [json.loads(line) for line in open(Path(tmp) / "metrics.jsonl")]
    return {"img_per_s": rows[-1]["img_per_s"], "peak_mb": _peak_mb()}


def run_lightly(batch: int, warmup: int, iters: int, model_only: bool) -> dict:
    import copy

    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import MoCoV2Transform
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from pretrain.modeling.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("resnet18", small_stem=True)
    head = MoCoProjectionHead(512, 512, 128)
    backbone_k, head_k = copy.deepcopy(backbone), copy.deepcopy(head)
    deactivate_requires_grad(backbone_k)
    deactivate_requires_grad(head_k)
    criterion = NTXentLoss(temperature=0.07, memory_bank_size=(QUEUE, 128))
    opt = torch.optim.SGD(list(backbone.parameters()) + list(head.parameters()), lr=0.03, momentum=0.9)

    def step(x_q, x_k):
        update_momentum(backbone, backbone_k, 0.999)
        update_momentum(head, head_k, 0.999)
        q = head(backbone(x_q))
        with torch.no_grad():
            k = head_k(backbone_k(x_k))
        loss = criterion(q, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if model_only:
        x1, x2 = torch.randn(batch, 3, 32, 32), torch.randn(batch, 3, 32, 32)
        return _time_steps(lambda: step(x1, x2), batch, warmup, iters)

    images, labels = _images()
    transform = MoCoV2Transform(input_size=32, gaussian_blur=0.0)  # lightly's small-image setting

    class Views(Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return transform(Image.fromarray(images[i])), int(labels[i])

    loader = DataLoader(Views(), batch_size=batch, shuffle=True, drop_last=True, num_workers=WORKERS,
                        prefetch_factor=4)
    t0, n = None, 0
    for it, ((x_q, x_k), _) in enumerate(loader):
        step(x_q, x_k)
        if it + 1 == warmup:
            t0 = time.perf_counter()
        elif it + 1 > warmup:
            n += len(x_q)
        if it + 1 == warmup + iters:
            break
    return {"img_per_s": n / (time.perf_counter() - t0), "peak_mb": _peak_mb()}


def _time_steps(step, batch, warmup, iters) -> dict:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return {"img_per_s": batch * iters / (time.perf_counter() - t0), "peak_mb": _peak_mb()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every measurement")
    p.add_argument("--one", nargs=3, metavar=("IMPL", "MODE", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        impl, mode, batch = args.one
        fn = {"ringnce": run_ours, "ringnce-no-shuffle-bn": lambda *a: run_ours(*a, shuffle_bn=False),
              "lightly": run_lightly}[impl]
        print(json.dumps(fn(int(batch), args.warmup, args.iters, mode == "model_step")))
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; ResNet-18 small "
          f"stem, 32 px, queue {QUEUE}, {WORKERS} workers; {args.warmup} warm-up + {args.iters} timed iterations; "
          f"{args.rounds} interleaved rounds (order rotated each round; img/s and ratio: median over rounds)")
    for batch in args.batches:
        for mode in ("end_to_end", "model_step"):
            rounds = []
            for r in range(args.rounds):
                order = IMPLS[r % len(IMPLS):] + IMPLS[:r % len(IMPLS)]
                res = {}
                for impl in order:
                    cmd = [sys.executable, __file__, "--one", impl, mode, str(batch), "--warmup", str(args.warmup),
                           "--iters", str(args.iters)]
                    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                    if out.returncode:
                        print(out.stderr[-2000:], file=sys.stderr)
                        return 1
                    res[impl] = json.loads(out.stdout.strip().splitlines()[-1])
                rounds.append(res)
            for impl in IMPLS[:-1]:
                ips = np.median([r[impl]["img_per_s"] for r in rounds])
                base = np.median([r["lightly"]["img_per_s"] for r in rounds])
                ratios = [r[impl]["img_per_s"] / r["lightly"]["img_per_s"] for r in rounds]
                peak = max(r[impl]["peak_mb"] for r in rounds)
                base_peak = max(r["lightly"]["peak_mb"] for r in rounds)
                print(f"batch {batch:4d} {mode:11s}: {impl:22s} {ips:6.1f} img/s (peak {peak:5.0f} MB)"
                      f" | lightly {base:6.1f} img/s (peak {base_peak:5.0f} MB)"
                      f" | ratio {np.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
