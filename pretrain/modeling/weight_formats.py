"""A ResNet's weights recognised in the layouts the field ships them in, without flags.

Read (``read_weights_file``): ``.safetensors``; PyTorch files (``torch.load(weights_only=True)``: torchvision
and timm state dicts, MoCo ``.pth.tar``, Lightning ``.ckpt``, DINO, VISSL, Detectron2 ``model_final.pth``);
pickles of NumPy arrays (Detectron2 / ``ring-export`` ``.pkl``; only NumPy's array classes are unpickled).

Found (``find_backbone``): every nested dict is flattened to dotted keys, and every prefix ``P`` under which
a ResNet sits is a candidate: ``P + conv1.weight`` beside ``P + layer1.0.conv1.weight`` (torchvision/timm
names), or ``P + stem.conv1.weight`` beside ``P + res2.0.conv1.weight`` (Detectron2 names, mapped back).
Of several candidates, the ones that are the *other* network of a two-network method are dropped
(``SECONDARY``: MoCo's key encoder, momentum/target/EMA copies, DINO's student) and the one left is taken;
two left (CMC's two streams, say) is one sentence asking for ``--prefix``.  The classifier / projection
head (``fc.*``) is not part of the backbone.

Checked (``check_against``): every backbone tensor of the model built for the weights must be matched by
name and shape, and nothing else may be left over; otherwise one sentence naming the keys and the format
that was assumed.
"""
from __future__ import annotations

import hashlib
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pretrain.common import NumpyOnlyUnpickler, UserError
from pretrain.modeling.backbones import RESNET_DEPTHS

# A prefix containing one of these names the second network of a two-network method, not the one evaluated.
SECONDARY = ("encoder_k", "key_encoder", "momentum", "target", "ema", "student")
OPTIONAL = ("num_batches_tracked",)  # buffers some writers drop (Detectron2 .pkl) and some keep


class WeightsError(UserError):
    """A weights file that is not (or not exactly) a ResNet this project can build (one sentence)."""


@dataclass
class FoundBackbone:
    """The backbone inside a weights file: torchvision-named tensors, what the file was taken to be."""
    path: Path
    format: str  # in words, e.g. "MoCo checkpoint (query encoder, prefix 'module.encoder_q.')"
    prefix: str
    state_dict: dict[str, torch.Tensor]
    sha256: str


# -- reading -------------------------------------------------------------------------------------------
def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_weights_file(path: str | Path):
    """The object a weights file holds (dicts of tensors/arrays), whatever wrote it."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist; pass a weights file (.pth, .pt, .pth.tar, .ckpt, .safetensors, "
                           ".pkl) or a ring-pretrain run directory.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001
            raise WeightsError(f"{path} is not a readable .safetensors file ({str(e)[:150]}).") from None
    errors = []
    zipped = zipfile.is_zipfile(path)  # torch.save's format: memory-mapped, tensors read only when used
    if not zipped:
        try:
            with open(path, "rb") as f:
                return NumpyOnlyUnpickler(f).load()
        except Exception as e:  # noqa: BLE001 - then maybe a legacy torch.save file
            errors.append(f"as a pickle: {str(e)[:100]}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on pickle protocols: the file is refused either way
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as e:  # noqa: BLE001
        errors.append(f"with torch.load: {str(e).splitlines()[0][:160]}")
    raise WeightsError(f"{path} could not be read ({'; '.join(errors)}); if it holds Python objects besides "
                       "tensors (a full Lightning or pickled module), re-save its state_dict() with torch.save.")


def flatten(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts -> {dotted key: tensor}; NumPy arrays become tensors, anything else is skipped."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj
    elif isinstance(obj, np.ndarray) and obj.dtype.kind in "fiub":
        out[prefix[:-1]] = torch.from_numpy(np.ascontiguousarray(obj))
    return out


# -- names ---------------------------------------------------------------------------------------------
def torchvision_to_detectron2(name: str) -> str:
    """conv1 -> stem.conv1, bnK -> convK.norm, layerN -> res(N+1), downsample.0/1 -> shortcut(.norm)."""
    if not name.startswith("layer"):
        name = "stem." + name
    name = re.sub(r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", name)
    name = re.sub(r"\bbn(\d)\b", r"conv\1.norm", name)
    return name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def detectron2_to_torchvision(name: str) -> str:
    name = name.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
    name = re.sub(r"\bconv(\d)\.norm\b", r"bn\1", name)
    name = re.sub(r"^res(\d)", lambda m: f"layer{int(m.group(1)) - 1}", name)
    return name[len("stem."):] if name.startswith("stem.") else name


NAMINGS = {"torchvision": ("conv1.weight", "layer1.0.conv1.weight"),
           "detectron2": ("stem.conv1.weight", "res2.0.conv1.weight")}


def candidate_prefixes(keys) -> list[tuple[str, str]]:
    """(prefix, naming) of every ResNet in a flat key set."""
    keys = set(keys)
    out = []
    for naming, (stem, block) in NAMINGS.items():
        for k in keys:
            if k.endswith(stem) and k[: -len(stem)] + block in keys:
                p = k[: -len(stem)]
                if naming == "torchvision" and p.endswith("stem."):
                    continue  # Detectron2's stem.conv1 is not a torchvision conv1
                out.append((p, naming))
    return sorted(set(out))


def is_secondary(prefix: str) -> bool:
    parts = re.split(r"[._]", prefix.lower())
    return any(s in prefix.lower() if "_" in s else s in parts for s in SECONDARY)


def choose_prefix(cands: list[tuple[str, str]], where: str, asked: str | None = None) -> tuple[str, str]:
    if asked is not None:
        asked = asked if asked in ("", None) or asked.endswith(".") else asked + "."
        hit = [c for c in cands if c[0] == asked]
        if not hit:
            raise WeightsError(f"{where}: no ResNet under --prefix '{asked}'; the file has one under "
                               f"{_names(cands) or 'no prefix at all'}.")
        return hit[0]
    if not cands:
        return None
    primary = [c for c in cands if not is_secondary(c[0])] or cands
    if len(primary) > 1:
        raise WeightsError(f"{where} holds several ResNets ({_names(primary)}); pick one with --prefix "
                           f"(e.g. --prefix '{primary[0][0]}').")
    return primary[0]


def _names(cands) -> str:
    return ", ".join(f"'{p}'" if p else "the top level" for p, _ in cands)


def describe(obj, prefix: str, naming: str, path: Path) -> str:
    """The format a file was taken to be, in words (for messages and summaries)."""
    top = set(obj) if isinstance(obj, dict) else set()
    where = f"prefix '{prefix}'" if prefix else "no prefix"
    if naming == "detectron2":
        return f"Detectron2 weights ({where})"
    if {"teacher", "student"} <= top:
        return f"DINO checkpoint ({'teacher' if prefix.startswith('teacher') else 'student'}, {where})"
    if "classy_state_dict" in top:
        return f"VISSL checkpoint (trunk, {where})"
    if "encoder_q" in prefix:
        return f"MoCo checkpoint (query encoder, {where})"
    if "pytorch-lightning_version" in top or "hyper_parameters" in top:
        return f"Lightning checkpoint ({where})"
    kind = "safetensors" if path.suffix == ".safetensors" else "PyTorch"
    return f"{kind} state dict with torchvision/timm names ({where})"


def find_backbone(path: str | Path, prefix: str | None = None, obj=None) -> FoundBackbone:
    """The one ResNet in a weights file, torchvision-named, heads (``fc.*``) dropped; ``obj``: the file's
    contents when the caller has read them already."""
    path = Path(path)
    obj = read_weights_file(path) if obj is None else obj
    flat = flatten(obj)
    choice = choose_prefix(candidate_prefixes(flat), str(path), prefix)
    if choice is None:
        raise WeightsError(f"{path} holds no ResNet: no conv1.weight beside layer1.0.conv1.weight (nor Detectron2's "
                           f"stem.conv1.weight beside res2.0.conv1.weight) under any prefix; keys look like "
                           f"{', '.join(list(flat)[:3]) or '(none)'}.")
    p, naming = choice
    sd = {k[len(p):]: v for k, v in flat.items() if k.startswith(p)}
    if naming == "detectron2":
        sd = {detectron2_to_torchvision(k): v for k, v in sd.items() if k.startswith(("stem.", "res"))}
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    return FoundBackbone(path, describe(obj, p, naming, path), p, sd, sha256_of(path))


# -- the architecture ----------------------------------------------------------------------------------
@dataclass
class Arch:
    backbone: str  # MODEL.BACKBONE: resnet50, or timm:resnet50 when asked
    small_stem: bool
    width: int
    in_chans: int


def blocks_of(keys) -> tuple[str, tuple[int, ...]]:
    """(block kind, blocks per layer) of torchvision-named ResNet keys."""
    keys = set(keys)
    counts = []
    for layer in range(1, 5):
        n = 0
        while f"layer{layer}.{n}.conv1.weight" in keys:
            n += 1
        counts.append(n)
    return ("bottleneck" if "layer1.0.conv3.weight" in keys else "basic"), tuple(counts)


def depth_of(keys) -> int | None:
    """The ResNet depth of torchvision-named keys (None: no ResNet-18/34/50/101/152)."""
    kind, counts = blocks_of(keys)
    return next((d for d, (k, blocks) in RESNET_DEPTHS.items() if k == kind and counts == blocks), None)


def infer_arch(sd: dict[str, torch.Tensor], where: str, arch: str | None = None) -> Arch:
    """Depth from the blocks per layer, width and input channels from the stem, the small 3x3 stem from its
    kernel; ``arch`` (a torchvision or ``timm:`` ResNet name) overrides the guessed name."""
    kind, counts = blocks_of(sd)
    depth = depth_of(sd)
    if depth is None and arch is None:
        raise WeightsError(f"{where}: {kind} blocks per layer {counts} match no ResNet-18/34/50/101/152; name "
                           "the architecture with --arch.")
    stem = sd["conv1.weight"]
    return Arch(arch or f"resnet{depth}", small_stem=stem.shape[-1] == 3, width=int(stem.shape[0]),
                in_chans=int(stem.shape[1]))


def check_against(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str, fmt: str) -> None:
    """Every tensor of ``model`` matched by name and shape, nothing left over; else one sentence."""
    want = {k: v.shape for k, v in model.state_dict().items() if not k.endswith(OPTIONAL)}
    have = {k: v.shape for k, v in sd.items() if not k.endswith(OPTIONAL)}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    bad = [f"{k} {tuple(have[k])} vs {tuple(want[k])}" for k in sorted(set(want) & set(have)) if have[k] != want[k]]
    if missing or extra or bad:
        parts = ([f"{len(missing)} missing ({', '.join(missing[:3])})"] if missing else []) + \
                ([f"{len(extra)} unexpected ({', '.join(extra[:3])})"] if extra else []) + \
                ([f"{len(bad)} of another shape ({'; '.join(bad[:2])})"] if bad else [])
        raise WeightsError(f"{where}, read as a {fmt}, does not fit {getattr(model, 'name', 'the backbone')}: "
                           f"{', '.join(parts)} backbone keys; pass --prefix or --arch if that guess is wrong.")
