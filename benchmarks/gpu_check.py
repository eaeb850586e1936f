"""The GPU check: one script, run where a device is lent (benchmarks/gpu_check.sh installs what it needs),
meant to fit in about 8 minutes on one H100 (not yet timed on one), printing one table.  Each section runs on its own and, when it
cannot (a missing package, no CUDA, no disk), prints one line saying why and moves on.

- moco_step:  ResNet-50 MoCo, NCE vs Ring, 224 px, bf16 autocast, channels-last, batch 256, K = 65,536:
              img/s of the model step on GPU-resident tensors (interleaved rounds, median), Ring/NCE ratio;
- moco_e2e:   the same with the real loader (ImageFolder JPEGs at ImageNet-like sizes, decoded and augmented
              by CPU workers; and with DATA.DECODE_ON device: nvJPEG decode and batched augmentation on the GPU);
- ir_bank:    IR's ring over a 1,281,167 x 128 bank, batch 256, 4,095 draws, and MoCo's over the queue: ms per
              selection, with o a host float and with o on the device (the adaptive schedule's sort);
- detectron2: Mask R-CNN R50-FPN on the synthetic scenes upsampled to 800 px: s/iter;
- probe:      the cached-feature linear probe, one epoch over 1.28M x 2048 fp16 features on the device.

    python benchmarks/gpu_check.py                 # on the GPU machine (after benchmarks/gpu_check.sh set-up)
    python benchmarks/gpu_check.py --toy --device cpu   # every section at toy size (what the test runs)

Anchors: MoCo's 200 epochs on 8 V100s in 53 h is about 168 img/s per V100; the target is >= 1,500 img/s
on one H100 with Ring/NCE <= 1.03.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = dict(backbone="resnet50", size=224, batch=256, queue=65536, rounds=3, steps=6, e2e_images=4096,
            bank=1_281_167, det_size=800, det_iters=20, probe_n=1_281_167, probe_dim=2048)
TOY = dict(backbone="resnet18", size=32, batch=8, queue=64, rounds=2, steps=2, e2e_images=32,
           bank=2048, det_size=64, det_iters=2, probe_n=2048, probe_dim=64)


class Skip(Exception):
    """A section that cannot run here: its one-line reason."""


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _moco(est: str, S: dict, device, extra=()):
    import torch

    from pretrain.config import load_config
    from pretrain.contrastive.objectives import build_objective

    cfg = load_config(None, ["OBJECTIVE.ESTIMATOR", est, "MODEL.BACKBONE", S["backbone"], "MODEL.SMALL_STEM", "False",
                             "MOCO.QUEUE_SIZE", str(S["queue"]), "SOLVER.BATCH_SIZE", str(S["batch"]),
                             "DATA.IMAGE_SIZE", str(S["size"]), *extra])
    torch.manual_seed(0)
    obj = build_objective(cfg, 1_281_167, S["batch"]).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.03, momentum=0.9)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(x1, x2):
        with amp:
            loss, _ = obj(x1, x2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step, cfg


def moco_step(S, device) -> list[tuple[str, str]]:
    import torch

    x = [torch.randn(S["batch"], 3, S["size"], S["size"], device=device).contiguous(memory_format=torch.channels_last)
         for _ in range(2)]
    steps = {e: _moco(e, S, device)[0] for e in ("nce", "ring")}
    for f in steps.values():
        f(*x)  # warm-up
    rates = {"nce": [], "ring": []}
    for r in range(S["rounds"]):
        for e in (("nce", "ring") if r % 2 == 0 else ("ring", "nce")):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(S["steps"]):
                steps[e](*x)
            _sync(device)
            rates[e].append(S["batch"] * S["steps"] / (time.perf_counter() - t0))
    nce, ring = statistics.median(rates["nce"]), statistics.median(rates["ring"])
    ratios = [n / r for n, r in zip(rates["nce"], rates["ring"])]
    return [("MoCo step NCE (img/s)", f"{nce:.0f}"), ("MoCo step Ring (img/s)", f"{ring:.0f}"),
            ("Ring/NCE step time (median, min-max)", f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-"
                                                     f"{max(ratios):.3f})")]


def moco_e2e(S, device, workers: int) -> list[tuple[str, str]]:
    import torch
    from torch.utils.data import DataLoader

    from benchmarks.loader_throughput import write_jpegs
    from pretrain.data.imagefolder import ImageFolderDataset
    from pretrain.data.transforms import build_batch_augment, build_train_transform
    from pretrain.data.views import EncodedImages, TwoViewDataset, collate_encoded, decode_batch

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), S["e2e_images"], size=(500, 375) if S["size"] > 64 else (48, 40))
        base = ImageFolderDataset(tmp, "train")
        step, _ = _moco("ring", S, device)
        for where in ("loader", "device"):
            collate = None
            if where == "loader":
                ds = TwoViewDataset(base, build_train_transform("mocov2", S["size"]), seed=0)
            else:  # DATA.DECODE_ON device: the workers read files; decode_jpeg and the augmentation on the device
                ds, aug, collate = EncodedImages(base, "imagefolder"), build_batch_augment("mocov2", S["size"]), \
                    collate_encoded
            loader = DataLoader(ds, batch_size=S["batch"], shuffle=True, num_workers=workers, drop_last=True,
                                pin_memory=device.type == "cuda", persistent_workers=False, collate_fn=collate)
            n, t0 = 0, None
            for b, (v1, v2, _, _) in enumerate(loader):
                if where == "device":
                    images = decode_batch(v1, device)
                    v1, v2 = aug(images, 2 * b), aug(images, 2 * b + 1)
                v1 = v1.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                v2 = v2.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                step(v1, v2)
                if b == 0:
                    _sync(device)
                    t0 = time.perf_counter()  # after the first batch: workers started
                else:
                    n += len(v1)
            _sync(device)
            rate = n / (time.perf_counter() - t0) if n else float("nan")
            what = "decode + augment in the workers" if where == "loader" else "decode + augment on the device"
            out.append((f"MoCo-Ring end to end, {what}, {workers} workers (img/s)", f"{rate:.0f}"))
    return out


def ir_bank(S, device) -> list[tuple[str, str]]:
    """The ring's selection alone: IR's draws over the bank and MoCo's over the queue, each with o a host
    float (constant/annealed schedules: partial top-k) and a device tensor (adaptive: a sort per row)."""
    import torch
    import torch.nn.functional as F

    from pretrain.contrastive.samplers import Candidates

    from pretrain.contrastive.samplers.ring import RingSampler

    g = torch.Generator(device=device).manual_seed(0)
    bank = F.normalize(torch.randn(S["bank"], 128, device=device, generator=g), dim=1)
    z = F.normalize(torch.randn(S["batch"], 128, device=device, generator=g), dim=1)
    queue_scores = z @ F.normalize(torch.randn(S["queue"], 128, device=device, generator=g), dim=1).t()
    sampler, gen = RingSampler(0.1), torch.Generator(device=device).manual_seed(1)
    o_dev = torch.tensor(0.1, dtype=torch.float64, device=device)

    def ms(select):
        select()  # warm-up
        times = []
        for _ in range(5):
            _sync(device)
            t0 = time.perf_counter()
            select()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return f"{1e3 * statistics.median(times):.1f}"
    rows = []
    for label, o in (("", 0.1), (", o on the device", o_dev)):
        rows.append((f"IR ring over a {S['bank']:,} x 128 bank, batch {S['batch']}{label} (ms/step)",
                     ms(lambda: sampler.select(Candidates.from_bank(z, bank, 2 ** 25), o, 4095, gen))))
        rows.append((f"MoCo ring selection, K = {S['queue']:,}, batch {S['batch']}{label} (ms/step)",
                     ms(lambda: sampler.select(Candidates.from_scores(queue_scores), o))))
    return rows


def detectron2_section(S, device) -> list[tuple[str, str]]:
    try:
        from transfer.detectron2_compat import ensure

        ensure()
        import detectron2  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise Skip(f"Detectron2 is not importable here ({type(e).__name__}: {str(e)[:80]})") from None
    from transfer.detection.train_net import Trainer, load_cfg, register_builtin

    with tempfile.TemporaryDirectory() as tmp:
        register_builtin(["scenes_instances_train"], tmp)
        s = S["det_size"]
        cfg = load_cfg("cpu/scenes_mask_rcnn_R_50_C4.yaml" if S is TOY else "coco/mask_rcnn_R_50_FPN_1x.yaml",
                       ["DATASETS.TRAIN", "('scenes_instances_train',)", "DATASETS.TEST", "()",
                        "MODEL.ROI_HEADS.NUM_CLASSES", "3", "INPUT.MIN_SIZE_TRAIN", f"({s},)",
                        "INPUT.MAX_SIZE_TRAIN", str(s), "SOLVER.MAX_ITER", str(S["det_iters"] + 3),
                        "SOLVER.IMS_PER_BATCH", "2" if S is TOY else "16", "MODEL.DEVICE", device.type,
                        "MODEL.WEIGHTS", "", "OUTPUT_DIR", tmp, "TEST.EVAL_PERIOD", "0",
                        "DATALOADER.NUM_WORKERS", "2"])
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        t0 = [None]

        def mark(_):
            if trainer.iter == 2:
                _sync(device)
                t0[0] = time.perf_counter()
        from detectron2.engine import hooks

        trainer.register_hooks([hooks.CallbackHook(after_step=mark)])
        trainer.train()
        _sync(device)
        return [(f"Detectron2 Mask R-CNN R50 at {s} px (s/iter)",
                 f"{(time.perf_counter() - t0[0]) / S['det_iters']:.3f}")]


def probe(S, device) -> list[tuple[str, str]]:
    import numpy as np
    import torch

    from pretrain.evaluation.features import FeatureCache
    from pretrain.evaluation.linear import train_linear_probe

    n, d = S["probe_n"], S["probe_dim"]
    with tempfile.TemporaryDirectory() as tmp:
        feats = np.lib.format.open_memmap(Path(tmp) / "features.npy", mode="w+", dtype=np.float16, shape=(n, d))
        rng = np.random.default_rng(0)
        for i in range(0, n, 65536):
            feats[i:i + 65536] = rng.standard_normal((min(65536, n - i), d), dtype=np.float32)
        feats.flush()
        np.save(Path(tmp) / "labels.npy", rng.integers(0, 1000, n))
        del feats
        cache = FeatureCache(Path(tmp))
        t0 = time.perf_counter()
        train_linear_probe(cache, cache, 1000, 1, 256, 0.1, 0.9, 0.0, lambda i: 1.0, 0, device=device)
        _sync(device)
        return [(f"linear probe, one epoch over {n:,} x {d} fp16 features (s)", f"{time.perf_counter() - t0:.1f}")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--toy", action="store_true", help="every section at toy size (the CPU test)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=14)
    p.add_argument("--only", nargs="+", default=None)
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("| section | result |\n|---|---|\n| all | skipped: torch is not installed |")
        return 0
    S = TOY if args.toy else FULL
    device = torch.device(args.device)
    sections = {"moco_step": lambda: moco_step(S, device), "moco_e2e": lambda: moco_e2e(S, device, args.workers),
                "ir_bank": lambda: ir_bank(S, device), "detectron2": lambda: detectron2_section(S, device),
                "probe": lambda: probe(S, device)}
    rows = []
    if device.type == "cuda" and not torch.cuda.is_available():
        rows.append(("all", "skipped: CUDA is not available here (run with --device cpu --toy for the CPU form)"))
        sections = {}
    for name, fn in sections.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            for k, v in fn():
                rows.append((k, v))
        except Skip as e:
            rows.append((name, f"skipped: {e}"))
        except Exception as e:  # noqa: BLE001  (a failing section must not hide the others' figures)
            rows.append((name, f"failed: {type(e).__name__}: {str(e)[:120]}"))
            traceback.print_exc()
        print(f"[gpu-check] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" and torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__} on {name}{' (toy sizes)' if args.toy else ''}")
    print("| measurement | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
