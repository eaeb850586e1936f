"""The MoCo v2 input pipeline at 224 px on CPU workers: JPEG decode + two augmented views per image.

    python benchmarks/loader_throughput.py                 # 1 and 2 workers, ImageNet-sized JPEGs
    python benchmarks/loader_throughput.py --images 512 --workers 1 2

ImageFolder JPEGs at ImageNet-like sizes (500 x 375, quality 90, textured content) are written to a
temporary folder; the loader is the training one (``TwoViewDataset`` over ``ImageFolderDataset`` with
``DATA.AUGMENT mocov2`` at 224 px, batch 64).  Reported: images/s (each image = 1 decode + 2 views) and
images/s per worker process, after one warm-up batch; and the workers one GPU at the target rate needs.
Then the same images through ``DATA.DECODE_ON device`` in its CPU form: the loader only reads the files,
``decode_jpeg`` and the batched MoCo v2 pipeline run in the main process on one thread (images/s per core;
on a GPU the decode is nvJPEG's and the augmentation CUDA kernels: not measured here).
One run per setting.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pretrain.data.views import TwoViewDataset

from pretrain.data.transforms import build_train_transform  # noqa: E402
from pretrain.data.imagefolder import ImageFolderDataset  # noqa: E402


def write_jpegs(root: Path, n: int, size=(500, 375)) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / "train" / f"n{i % 10:08d}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)  # smooth-ish, like photos
        img = Image.fromarray(base).resize(size, Image.BICUBIC)
        img.save(d / f"img_{i:05d}.JPEG", quality=90)


def measure(root: Path, workers: int, batch: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    ds = TwoViewDataset(ImageFolderDataset(root, "train"), build_train_transform("mocov2", 224), seed=0)
    loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers, drop_last=True,
                        persistent_workers=False, prefetch_factor=4)
    it = iter(loader)
    next(it)  # warm-up: workers started, first batch out
    t0, n = time.perf_counter(), 0
    for v1, v2, _, _ in it:
        n += len(v1)
    del it
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return n / (time.perf_counter() - t0)


def measure_device_form(root: Path, batch: int) -> float:
    """DATA.DECODE_ON device on this CPU, one thread: read bytes -> decode_jpeg -> two batched views."""
    import torch
    from torch.utils.data import DataLoader

    from pretrain.data.views import EncodedImages, collate_encoded, decode_batch

    from pretrain.data.transforms import build_batch_augment

    torch.set_num_threads(1)
    ds = EncodedImages(ImageFolderDataset(root, "train"), "imagefolder")
    loader = DataLoader(ds, batch_size=batch, num_workers=0, drop_last=True, collate_fn=collate_encoded)
    aug = build_batch_augment("mocov2", 224)
    t0, n = None, 0
    for step, (files, _, _, _) in enumerate(loader):
        images = decode_batch(files, "cpu")
        v1, v2 = aug(images, seed=2 * step), aug(images, seed=2 * step + 1)
        if t0 is None:  # the first batch is the warm-up
            t0 = time.perf_counter()
            continue
        n += len(v1)
    return n / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=704)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--target", type=float, default=1500.0, help="images/s one GPU consumes")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), args.images)
        print("| workers | images/s (decode + 2 views, 224 px) | images/s per worker |")
        print("|---|---|---|")
        per = []
        for w in args.workers:
            ips = measure(Path(tmp), w, args.batch)
            per.append(ips / w)
            print(f"| {w} | {ips:.1f} | {ips / w:.1f} |")
        dev = measure_device_form(Path(tmp), args.batch)
        print(f"| DATA.DECODE_ON device, CPU form, 1 thread | {dev:.1f} | {dev:.1f} per core |")
    best = max(per)
    print(f"\nat {best:.1f} images/s per worker, {args.target:.0f} images/s need {args.target / best:.0f} worker cores "
          "per GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
