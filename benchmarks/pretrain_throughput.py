"""End-to-end MoCo-v2 pretraining throughput: ringnce's engine versus the same training built from lightly.

Both sides train the same ResNet-18 (32-px small-image stem, 512-512-128 head) on the same in-memory
32x32 images, with MoCo-v2 augmentation and a 4096-key queue; ringnce with its own loader settings
(DATA.NUM_WORKERS at its default), lightly with 2 data-loader workers as its recipe does, and once more
with none (lightly-0-workers, end to end only: what the worker count alone is worth there); each
measurement runs in its own process.  Reported, per batch size:
- end to end: data loading + two-view augmentation + MoCo step, images/s over the timed steps after warm-up,
  and the breakdown of a step: the time it waited for the loader and the rest (the step itself);
- model step only: the same step on a fixed, pre-made batch (no data loading);
- augmentation: two views of a batch's images on one core, in the measuring process (what the workers do);
- peak memory: the largest total proportional set size (PSS, /proc/<pid>/smaps_rollup) of the process and
  its loader workers, sampled every 50 ms, in a separate, untimed run of each measurement (reading
  smaps_rollup of a 1.5 GB process takes ~10 ms of a core: sampling while timing took 20-50 % of one of
  this machine's two cores from the very step being timed).  PSS splits pages the workers share with the
  main process instead of counting them in each (a forked worker's RSS includes the parent's pages it maps; the
  earlier figure, max RSS of the process plus the largest child's, counted them twice, at different times).
ringnce runs twice: as configured by default (MoCo's shuffle-BN emulated on one process with MOCO.BN_SPLITS
sub-batches, work lightly's recipe does not do) and with MOCO.SHUFFLE_BN False (the same computation as
lightly's).  Every measurement is repeated in interleaved rounds (the order rotated each round); a ratio is
the median over rounds of the per-round ratios, printed with its spread (min-max, and as +-% of the median).

    python benchmarks/pretrain_throughput.py                 # batch 64 and 256, 4 rounds
    python benchmarks/pretrain_throughput.py --batches 64 --rounds 5
    python benchmarks/pretrain_throughput.py --model-step 64      # as docs/benchmarks.md (2026-12-08)
    python benchmarks/pretrain_throughput.py --profile --batches 64  # the model steps by kind of operator
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUEUE, LIGHTLY_WORKERS, N_IMAGES = 4096, 2, 4096
# ringnce as configured by default (shuffle-BN emulated with MOCO.BN_SPLITS sub-batches), ringnce doing the
# same work as lightly's recipe (no shuffle-BN), and lightly: every ratio is against lightly (2 workers);
# lightly without workers (end to end only) is printed beside it.
IMPLS = ("ringnce", "ringnce-no-shuffle-bn", "lightly")
CONTEXT = ("lightly-0-workers",)


def _images() -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-like in-memory data: the built-in shapes rendered once to a uint8 array."""
    from pretrain.data import SyntheticShapes

    ds = SyntheticShapes("train", 512, 32)
    base = np.stack([np.asarray(ds[i][0]) for i in range(len(ds))])
    reps = N_IMAGES // len(base)
    return np.concatenate([base] * reps), np.array(ds.targets * reps)


class PeakMemory:
    """The peak of the summed PSS of this process and its descendants (the loader workers), sampled by a
    thread every ``period`` seconds; falls back to max RSS where /proc/*/smaps_rollup does not exist."""

    def __init__(self, period: float = 0.05):
        self.period, self.peak_mb, self._stop = period, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _tree(pid: int) -> list[int]:
        pids = [pid]
        try:
            for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                pids += PeakMemory._tree(int(child))
        except OSError:
            pass
        return pids

    @staticmethod
    def _pss_mb(pid: int) -> float:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, sum(self._pss_mb(p) for p in self._tree(os.getpid())))
            time.sleep(self.period)

    def stop(self) -> float:
        self._stop.set()
        self.thread.join()
        if self.peak_mb == 0.0:  # no /proc: max RSS of this process and of its largest child
            own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return (own + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024.0
        return self.peak_mb


def run_ours(batch: int, warmup: int, iters: int, model_only: bool, shuffle_bn: bool = True) -> dict:
    from pretrain.config import load_config
    from pretrain.contrastive.objectives import build_objective
    from pretrain.data import DATASET_REGISTRY, ArrayImageDataset
    from pretrain.engine.trainer import memory_format

    images, labels = _images()
    DATASET_REGISTRY.register(name="bench_array")(lambda data_cfg, split: ArrayImageDataset(images, labels))
    opts = ["DATA.NAME", "bench_array", "DATA.AUGMENT", "mocov2",
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

    with tempfile.TemporaryDirectory() as tmp:  # a metrics line per step: the timed steps are exactly those after warm-up
        cfg = load_config(None, opts + ["SOLVER.MAX_ITERS", str(warmup + iters), "LOG.PERIOD", "1"])
        Trainer(cfg, tmp).train()
        rows = [json.loads(line) for line in open(Path(tmp) / "metrics.jsonl")][warmup:]
    steps = [r.get("step_s", batch / r["img_per_s"]) for r in rows]
    waits = [r["data_wait_s"] for r in rows if "data_wait_s" in r]  # logged since 2026-12-05
    return {"img_per_s": batch * len(steps) / sum(steps), "step_s": sum(steps) / len(steps),
            "wait_s": sum(waits) / len(waits) if waits else None}


def run_lightly(batch: int, warmup: int, iters: int, model_only: bool, workers: int = LIGHTLY_WORKERS) -> dict:
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

    loader = DataLoader(Views(), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        prefetch_factor=4 if workers else None)
    t0, n, wait, t_wait = None, 0, 0.0, time.perf_counter()
    for it, ((x_q, x_k), _) in enumerate(loader):
        if it + 1 > warmup:
            wait += time.perf_counter() - t_wait
        step(x_q, x_k)
        if it + 1 == warmup:
            t0 = time.perf_counter()
        elif it + 1 > warmup:
            n += len(x_q)
        if it + 1 == warmup + iters:
            break
        t_wait = time.perf_counter()
    elapsed = time.perf_counter() - t0
    return {"img_per_s": n / elapsed, "step_s": elapsed / iters, "wait_s": wait / iters}


PROFILE = False  # --profile: the model step's time by kind of operator (torch.profiler), instead of its speed
OP_KINDS = {"convolutions": ("aten::mkldnn_convolution", "aten::convolution_backward"),
            "batch norm": ("aten::native_batch_norm", "aten::native_batch_norm_backward"),
            "concatenation": ("aten::cat",)}


def _time_steps(step, batch, warmup, iters) -> dict:
    for _ in range(warmup):
        step()
    if PROFILE:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iters):
                step()
        self_ms = {e.key: e.self_cpu_time_total / 1000 / iters for e in prof.key_averages()}
        kinds = {kind: sum(self_ms.get(op, 0.0) for op in ops) for kind, ops in OP_KINDS.items()}
        return {**kinds, "the rest": sum(self_ms.values()) - sum(kinds.values())}
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    elapsed = time.perf_counter() - t0
    return {"img_per_s": batch * iters / elapsed, "step_s": elapsed / iters}


def augment_seconds(impl: str, batch: int, repeats: int = 3) -> float:
    """Seconds to make two augmented views of ``batch`` images on one core, as a loader worker does (ringnce:
    its seeded two-view dataset over the array dataset; lightly: MoCoV2Transform on PIL images)."""
    images, labels = _images()
    if impl == "lightly":
        from lightly.transforms import MoCoV2Transform
        from PIL import Image

        transform = MoCoV2Transform(input_size=32, gaussian_blur=0.0)
        item = lambda i: transform(Image.fromarray(images[i]))  # noqa: E731
    else:
        from pretrain.data import ArrayImageDataset
        from pretrain.data.transforms import build_train_transform
        from pretrain.data.views import TwoViewDataset

        views = TwoViewDataset(ArrayImageDataset(images, labels), build_train_transform("mocov2", 32), seed=0)
        item = views.__getitem__
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = float("inf")
        for r in range(repeats):
            t0 = time.perf_counter()
            for i in range(batch):
                item((r * batch + i) % len(images))
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return best


def timed_iters(batch: int, images: int) -> int:
    return max(3, images // batch)


def _spread(values: list[float]) -> str:
    med = float(np.median(values))
    half = max(med - min(values), max(values) - med) / med * 100 if med else 0.0
    return f"rounds {min(values):.2f}-{max(values):.2f}, +-{half:.0f} %"


def _ms(x) -> str:
    return "   n/a" if x is None else f"{1000 * x:6.0f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--images", type=int, default=768,
                   help="images timed per measurement (iterations: this / batch, at least 3)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved repetitions of every timed measurement")
    p.add_argument("--model-step", type=int, nargs="*", default=None, metavar="BATCH",
                   help="the batches whose model step alone is measured too (default: every batch)")
    p.add_argument("--one", nargs=3, metavar=("IMPL", "MODE", "BATCH"), help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)  # with --one: sample peak PSS
    p.add_argument("--profile", action="store_true",
                   help="instead of speeds: each side's model step by kind of operator, ms per step (torch.profiler)")
    args = p.parse_args()
    if args.one:
        global PROFILE
        impl, mode, batch = args.one
        batch, PROFILE = int(batch), mode == "profile"
        if mode == "augment":
            print(json.dumps({"aug_s": augment_seconds(impl, batch)}))
            return 0
        fn = {"ringnce": run_ours, "ringnce-no-shuffle-bn": lambda *a: run_ours(*a, shuffle_bn=False),
              "lightly": run_lightly, "lightly-0-workers": lambda *a: run_lightly(*a, workers=0)}[impl]
        memory = PeakMemory() if args.memory else None
        res = fn(batch, args.warmup, timed_iters(batch, args.images), mode in ("model_step", "profile"))
        print(json.dumps({**res, "peak_mb": memory.stop() if memory else None}))
        return 0
    if args.profile:
        return print_profiles(args)
    from pretrain.config import load_config

    ours_workers = load_config(None, []).DATA.NUM_WORKERS
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; ResNet-18 small "
          f"stem, 32 px, queue {QUEUE}; loader workers: ringnce DATA.NUM_WORKERS {ours_workers} (its default), "
          f"lightly {LIGHTLY_WORKERS}; {args.warmup} warm-up iterations + {args.images} timed images; "
          f"{args.rounds} interleaved timed rounds (order rotated each round; img/s, ms and ratios: medians over "
          f"rounds); peak: PSS of the process and its workers, from one more, untimed run", flush=True)

    for batch in args.batches:
        aug = {impl: run_one(args, impl, "augment", batch)["aug_s"] for impl in ("ringnce", "lightly")}
        print(f"batch {batch:4d} augmentation, two views of the batch on one core: ringnce {1000 * aug['ringnce']:.0f} ms"
              f" | lightly {1000 * aug['lightly']:.0f} ms | ratio (lightly / ringnce) {aug['lightly'] / aug['ringnce']:.2f}x",
              flush=True)
        model_step = args.model_step is None or batch in args.model_step
        for mode in ("end_to_end", "model_step") if model_step else ("end_to_end",):
            impls = IMPLS + CONTEXT if mode == "end_to_end" else IMPLS
            rounds = []
            for r in range(args.rounds):
                order = impls[r % len(impls):] + impls[:r % len(impls)]
                rounds.append({impl: run_one(args, impl, mode, batch) for impl in order})
            peak = {impl: run_one(args, impl, mode, batch, memory=True)["peak_mb"] for impl in impls}
            med = lambda impl, k: (None if rounds[0][impl].get(k) is None  # noqa: E731
                                   else float(np.median([r[impl][k] for r in rounds])))
            base = med("lightly", "img_per_s")
            for impl in impls:
                if impl == "lightly":
                    continue
                ratios = [r[impl]["img_per_s"] / r["lightly"]["img_per_s"] for r in rounds]
                line = (f"batch {batch:4d} {mode:11s}: {impl:22s} {med(impl, 'img_per_s'):6.1f} img/s (peak "
                        f"{peak[impl]:5.0f} MB) | lightly {base:6.1f} img/s (peak {peak['lightly']:5.0f} MB)"
                        f" | ratio {np.median(ratios):.2f}x ({_spread(ratios)})")
                if mode == "end_to_end":
                    wait = med(impl, "wait_s")
                    line += (f"\n{'':22s}per step, ms: loader wait {_ms(wait)}, the rest "
                             f"{_ms(None if wait is None else med(impl, 'step_s') - wait)}"
                             f" | lightly: loader wait {_ms(med('lightly', 'wait_s'))}, the rest "
                             f"{_ms(med('lightly', 'step_s') - med('lightly', 'wait_s'))}")
                print(line, flush=True)
    return 0


def run_one(args, impl: str, mode: str, batch: int, memory: bool = False) -> dict:
    """One measurement in its own process (``--one``): its JSON result; its error output and exit 1 if it fails."""
    cmd = [sys.executable, __file__, "--one", impl, mode, str(batch), "--warmup", str(args.warmup),
           "--images", str(args.images)] + (["--memory"] if memory else [])
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        print(out.stderr[-2000:], file=sys.stderr)
        raise SystemExit(1)
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_profiles(args) -> int:
    """Each side's model step split by kind of operator: what the two sides share (the convolutions are the
    same oneDNN kernels on both) and what differs."""
    for batch in args.batches:
        for impl in IMPLS:
            ms = run_one(args, impl, "profile", batch)
            ms.pop("peak_mb", None)
            total = sum(ms.values())
            parts = ", ".join(f"{k} {v:.0f} ({100 * v / total:.0f} %)" for k, v in ms.items())
            print(f"batch {batch:4d} model step, ms per step (profiled, CPU time): {impl:22s} {total:.0f} = {parts}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
