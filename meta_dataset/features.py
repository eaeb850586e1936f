"""Frozen features, computed once per (source, backbone weights, image size) and cached on disk."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from tqdm import tqdm

from torchvision import transforms as T

from meta_dataset.sources import Source
from pretrain.data.transforms import to_normalized_tensor
from pretrain.io import atomic_torch_save

DECODER = "resize"  # part of the cache key: features of another decoder are never reused


def decoder_transform(image_size: int) -> T.Compose:
    """Meta-Dataset's decoder: the whole image resized to image_size x image_size (bilinear, antialiased;
    no crop, the aspect ratio not kept), then normalised as the backbone was trained (ImageNet mean/std, where
    the official pipeline scales to [-1, 1] for its own backbones)."""
    return T.Compose([T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                      *to_normalized_tensor()])


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
    key = f"{source.name}-{split}-{weights_digest(backbone)}-{image_size}px-{DECODER}"
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    tf = decoder_transform(image_size)
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
