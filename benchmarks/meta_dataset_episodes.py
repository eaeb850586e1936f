"""Meta-Dataset episodes per second: on cached features versus encoding the images for every episode.

Same source, backbone, episodes and classifier on both sides, measured in one run:
- cached: every image of the source encoded once (time reported separately), episodes run on features;
- per-episode encoding: each episode decodes and encodes its own support and query images.

    python benchmarks/meta_dataset_episodes.py --records data/md --source synthetic runs/demo
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meta_dataset.classifiers import CLASSIFIER_REGISTRY  # noqa: E402
from meta_dataset.cli import load_model, run_episodes  # noqa: E402
from meta_dataset.episodes import EpisodeSampler  # noqa: E402
from meta_dataset.features import source_features  # noqa: E402
from meta_dataset.sources import Source  # noqa: E402
from pretrain.data.transforms import eval_transform  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", required=True)
    p.add_argument("--source", default="synthetic")
    p.add_argument("checkpoint", nargs="?", default=None, help="a ring-pretrain run (default: --backbone, untrained)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--episodes", type=int, default=600, help="episodes on cached features")
    p.add_argument("--encode-episodes", type=int, default=10, help="episodes with per-episode encoding")
    args = p.parse_args()
    model, desc, size = load_model(args.checkpoint, None if args.checkpoint else args.backbone)
    model.eval()
    source = Source(args.records, args.source)
    sampler = EpisodeSampler(source.spec, "test", "variable", seed=0)
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        feats = source_features(source, "test", model, size, torch.device("cpu"), cache, progress=False)
        t_encode_all = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_episodes(feats, sampler, args.episodes, "ncc-cosine")
    cached_eps = args.episodes / (time.perf_counter() - t0)

    tf, predict = eval_transform(size), CLASSIFIER_REGISTRY.get("ncc-cosine")
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(args.encode_episodes):
            ep = sampler.episode(i)
            images = {int(c): source.class_images(int(c)) for c in ep.classes}  # decode this episode's classes

            def encode(rows):
                return model(torch.stack([tf(images[int(c)][int(j)]) for c, j in rows]))
            pred = predict(encode(ep.support), torch.as_tensor(ep.support_labels), encode(ep.query), len(ep.classes))
            _ = (pred == torch.as_tensor(ep.query_labels)).float().mean()
    encode_eps = args.encode_episodes / (time.perf_counter() - t0)
    n_images = sum(source.spec.images_per_class[c] for c in source.spec.classes("test"))
    print(f"{args.source}: {n_images} images, {desc['backbone']} at {size} px, torch {torch.get_num_threads()} threads")
    print(f"encode every image once: {t_encode_all:.1f} s")
    print(f"cached features: {cached_eps:.1f} episodes/s ({args.episodes} episodes); per-episode encoding: "
          f"{encode_eps:.2f} episodes/s ({args.encode_episodes} episodes); ratio {cached_eps / encode_eps:.0f}x "
          "(target >= 20x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
