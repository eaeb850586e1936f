"""CMC's colour space: Lab with each channel scaled to about [-1, 1], split into the L and ab streams.

One definition for the pretraining objective (``contrastive/objectives/cmc.py``) and the Detectron2 backbone
that transfers its two streams (``transfer/detection/heads.py``), so both normalise alike.
"""
from __future__ import annotations

import torch

# centre and half-range of L, a, b over the sRGB gamut
LAB_MEAN = (50.0, (-86.183 + 98.233) / 2, (-107.857 + 94.478) / 2)
LAB_STD = (50.0, (86.183 + 98.233) / 2, (107.857 + 94.478) / 2)

# the two views: stream name -> its channels of Lab.  The names are also the module names of the two
# trunks, hence the prefixes of their weights in checkpoints and exported .pkl files.
STREAMS = {"l": slice(0, 1), "ab": slice(1, 3)}


def rgb01_to_normalized_lab(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (B, 3, H, W) -> CMC-normalised Lab (B, 3, H, W), on the tensor's device (kornia)."""
    import kornia

    lab = kornia.color.rgb_to_lab(rgb)
    return (lab - lab.new_tensor(LAB_MEAN).view(1, 3, 1, 1)) / lab.new_tensor(LAB_STD).view(1, 3, 1, 1)


def split_streams(lab: torch.Tensor) -> dict[str, torch.Tensor]:
    """{'l': (B, 1, H, W), 'ab': (B, 2, H, W)}."""
    return {name: lab[:, ch] for name, ch in STREAMS.items()}


def stream_channels(name: str) -> int:
    ch = STREAMS[name]
    return ch.stop - ch.start
