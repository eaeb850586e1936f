"""Frozen features, computed once per (source, backbone weights, image size) and cached on disk."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from tqdm import tqdm

from meta_dataset.sources import Source
from pretrain.data.transforms import eval_transform
from pretrain.io import atomic_torch_save


def weights_digest(backbone: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for k, v in sorted(backbone.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def source_features(source: Source, split: str, backbone: torch.nn.Module, image_size: int, device,
                    cache_dir: str | Path, batch_size: int = 256, progress: bool = True) -> dict[int, torch.Tensor]:
    """{class id: (n_images, D) float32} for every class of the split, images in record order."""
    key = f"{source.name}-{split}-{weights_digest(backbone)}-{image_size}px"
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    tf = eval_transform(image_size)
    backbone.eval().to(device)
    feats = {}
    for c in tqdm(source.spec.classes(split), desc=f"encode {source.name}/{split}", disable=not progress,
                  leave=False):
        imgs = source.class_images(c)
        chunks = [backbone(torch.stack([tf(im) for im in imgs[i:i + batch_size]]).to(device)).float().cpu()
                  for i in range(0, len(imgs), batch_size)]
        feats[int(c)] = torch.cat(chunks)
    atomic_torch_save(feats, path)
    return feats
