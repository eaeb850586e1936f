"""ring-export: a pretrained backbone -> Detectron2's weight format (.pkl).

    ring-export runs/moco -o runs/moco/model_final.pkl          # a ring-pretrain run or checkpoint
    ring-export resnet50_state_dict.pth -o r50.pkl                # torchvision / timm ResNet state dicts too

Accepted inputs: our pretraining checkpoints (MoCo's query encoder, IR/SimCLR's encoder, CMC's two
streams), and torchvision/timm ResNet-18/34/50/101 state dicts, bare or under 'state_dict'/'model' and a
prefix such as 'module.encoder_q.'.  Names are mapped (conv1 -> stem.conv1, bnK -> convK.norm,
layerN -> res(N+1), downsample.0/1 -> shortcut/shortcut.norm); heads, classifiers, key encoders, banks,
queues and num_batches_tracked are dropped.  Before writing, every name and shape is checked against
Detectron2's ResNet of that depth (``resnet_table``); anything unexpected stops with one sentence.  The
file is a pickle of {"model": {name: ndarray}, "__author__": ..., "matching_heuristics": True},
written atomically: Detectron2 recognises it as its own format only with both 'model' and '__author__'.
"""
from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import numpy as np
import torch

from pretrain.common import CHECKPOINT_HELP, UserError, cli_main, command_parser
from pretrain.data.color import STREAMS as CMC_STREAMS
from pretrain.engine.checkpoint import KIND as PRETRAIN_KIND
from pretrain.engine.checkpoint import CheckpointError, backbone_state_dict
from pretrain.io import atomic_path
from transfer.detection.resnet_table import depth_of, detectron2_resnet_shapes

AUTHOR = "ringnce"


class ExportError(UserError):
    """An input that is not a ResNet Detectron2 can load (one sentence)."""


def torchvision_to_detectron2(name: str) -> str:
    if not name.startswith("layer"):
        name = "stem." + name
    name = re.sub(r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", name)
    name = re.sub(r"\bbn(\d)\b", r"conv\1.norm", name)
    name = name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    return name


def _load(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {str(e)[:150]}).") \
            from None
    if not isinstance(obj, dict):
        raise ExportError(f"{path} holds a {type(obj).__name__}, not a state dict or checkpoint.")
    return obj


def _strip_prefix(sd: dict, where: str) -> dict:
    """Find the ResNet inside a state dict with arbitrary prefixes (module., encoder_q., backbone. ...)."""
    prefixes = sorted({k[: -len("conv1.weight")] for k in sd if k.endswith("conv1.weight") and "layer" not in k
                       and f"{k[: -len('conv1.weight')]}layer1.0.conv1.weight" in sd})
    if not prefixes:
        raise ExportError(f"{where} is not a ResNet: no conv1.weight with layer1..4 next to it (got keys like "
                          f"{', '.join(list(sd)[:3])}).")
    preferred = [p for p in prefixes if "encoder_k" not in p and "key" not in p]
    if len(preferred) > 1:
        q = [p for p in preferred if "encoder_q" in p or "query" in p]
        preferred = q if len(q) == 1 else preferred
    if len(preferred) != 1:
        raise ExportError(f"{where} holds several ResNets ({', '.join(p or '<root>' for p in prefixes)}); export "
                          "one of them as a plain state dict.")
    p = preferred[0]
    return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}


def backbones_of(path: str | Path, random_init: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """{stream name: torchvision-named state dict}; one stream ('') except for CMC ('l', 'ab').  With
    ``random_init``, a pretraining run's own architecture untrained, initialised from the run's SEED: the
    baseline paired with it."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint_last.pth"
    if not path.is_file():
        raise ExportError(f"{path} does not exist; pass a ring-pretrain run directory or a checkpoint file.")
    obj = _load(path)
    if random_init and obj.get("kind") != PRETRAIN_KIND:
        raise ExportError(f"--random-init needs a ring-pretrain run or checkpoint (its architecture), not {path}.")
    if obj.get("kind") == PRETRAIN_KIND:
        try:
            sd = untrained_backbone(path) if random_init else backbone_state_dict(obj)
        except CheckpointError as e:
            raise ExportError(str(e)) from None
        if all(k.split(".")[0] in CMC_STREAMS for k in sd):
            return {s: {k[len(s) + 1:]: v for k, v in sd.items() if k.startswith(s + ".")} for s in CMC_STREAMS}
        return {"": sd}
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return {"": _strip_prefix(tensors, str(path))}


def untrained_backbone(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    from pretrain.evaluation.pretrained import load_backbone

    return load_backbone(checkpoint, random_init=True)[1].state_dict()


def source_info(src: str | Path, random_init: bool = False) -> dict:
    """method/estimator/backbone/seed and the result fingerprint of the pretraining run behind src (for the
    results tables)."""
    path = Path(src) / "checkpoint_last.pth" if Path(src).is_dir() else Path(src)
    obj = _load(path)
    if obj.get("kind") != PRETRAIN_KIND:
        return {"checkpoint": str(src), "method": "external", "estimator": "none"}
    from pretrain.config import config_from_yaml_str, provenance

    return {"checkpoint": str(src), **provenance(config_from_yaml_str(obj["config"]), random_init)}


def convert(sd: dict[str, torch.Tensor], where: str, expect_depth: int | None = None
            ) -> tuple[dict[str, np.ndarray], int]:
    """torchvision-named ResNet -> Detectron2 names, checked against the table of its depth."""
    depth = depth_of(sd)
    if depth is None:
        raise ExportError(f"{where}: the layers do not form a ResNet-18/34/50/101/152 (blocks per layer do not "
                          "match any depth).")
    if expect_depth and depth != expect_depth:
        raise ExportError(f"{where} is a ResNet-{depth} but --depth {expect_depth} was asked; use --depth {depth} "
                          f"and a ResNet-{depth} Detectron2 config (MODEL.RESNETS.DEPTH {depth}).")
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked") or k.startswith("fc.") or not (k.startswith(("conv1", "bn1", "layer"))):
            continue
        out[torchvision_to_detectron2(k)] = v.detach().float().cpu().numpy()
    stem = out.get("stem.conv1.weight")
    if stem is not None and stem.shape[-1] != 7:
        raise ExportError(f"{where}: the stem is a {stem.shape[-1]}x{stem.shape[-1]} conv (the small-image stem); "
                          "Detectron2's ResNet stem is 7x7: pretrain with MODEL.SMALL_STEM False to transfer it.")
    chans = stem.shape[1] if stem is not None else 3
    width = stem.shape[0] if stem is not None else 64  # narrow ResNets (MODEL.WIDTH, CMC.WIDTH) too
    table = detectron2_resnet_shapes(depth, chans, width)
    missing = sorted(set(table) - set(out))
    extra = sorted(set(out) - set(table))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise ExportError(f"{where}: does not match Detectron2's ResNet-{depth} ({what}; {len(missing)} missing, "
                          f"{len(extra)} unexpected).")
    for k, shape in table.items():
        if tuple(out[k].shape) != shape:
            raise ExportError(f"{where}: {k} has shape {tuple(out[k].shape)} but Detectron2's ResNet-{depth} needs "
                              f"{shape}.")
    return out, depth


def export(src: str | Path, dst: str | Path, expect_depth: int | None = None, random_init: bool = False) -> dict:
    """Writes the Detectron2 .pkl; returns {'depth', 'streams', 'tensors', 'width'}."""
    streams = backbones_of(src, random_init)
    model: dict[str, np.ndarray] = {}
    depth = None
    for stream, sd in streams.items():
        converted, depth = convert(sd, f"{src}" + (f" ({stream} stream)" if stream else ""), expect_depth)
        prefix = f"{stream}." if stream else ""
        model.update({prefix + k: v for k, v in converted.items()})
    payload = {"model": model, "__author__": AUTHOR, "matching_heuristics": True,
               "ringnce_source": source_info(src, random_init)}
    with atomic_path(dst) as tmp, open(tmp, "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    width = int(next(v for k, v in model.items() if k.endswith("stem.conv1.weight")).shape[0])
    return {"depth": depth, "streams": [s or "rgb" for s in streams], "tensors": len(model), "width": width}


def config_requirements(info: dict) -> list[str]:
    """What a Detectron2 config must set for these weights, and the shipped configs that set it.

    Detectron2's stock configs (BGR input, Caffe pixel statistics, stride in the 1x1 conv) load these
    weights without a warning and compute wrong features."""
    depth, cmc, width = info["depth"], info["streams"] != ["rgb"], info["width"]
    lines = ["INPUT.FORMAT RGB", "MODEL.PIXEL_MEAN [123.675, 116.280, 103.530]",
             "MODEL.PIXEL_STD [58.395, 57.120, 57.375]", "MODEL.RESNETS.STRIDE_IN_1X1 False",
             f"MODEL.RESNETS.DEPTH {depth}"]
    if cmc:
        lines += ["MODEL.BACKBONE.NAME build_cmc_resnet_fpn_backbone (or build_cmc_resnet_backbone for C4)",
                  f"MODEL.CMC.WIDTH {width}"]
    else:
        lines += [f"MODEL.RESNETS.RES2_OUT_CHANNELS {width if depth < 50 else 4 * width}"]
        if width != 64:
            lines += ["MODEL.BACKBONE.NAME build_resnet_any_width_fpn_backbone (or build_resnet_any_width_backbone "
                      "for C4)", f"MODEL.RESNETS.STEM_OUT_CHANNELS {width}"]
    from transfer.detection import CONFIG_ROOT

    shipped = sorted(str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.glob(f"*/*_R_{depth}_*.yaml"))
    return lines, shipped


@cli_main("ring-export")
def main(argv: list[str] | None = None) -> int:
    p = command_parser("ring-export", __doc__, checkpoint=CHECKPOINT_HELP + ", or a ResNet state dict",
                       output="the .pkl file to write", output_required=True)
    p.add_argument("--depth", type=int, default=None, help="refuse unless the backbone has this depth")
    p.add_argument("--random-init", action="store_true", help="the run's architecture, untrained (seeded by its "
                                                               "SEED): the random-init baseline for detection")
    args = p.parse_args(argv)
    info = export(args.checkpoint, args.output, args.depth, args.random_init)
    print(f"[ring-export] ResNet-{info['depth']} ({', '.join(info['streams'])}), {info['tensors']} tensors -> "
          f"{args.output}")
    needs, shipped = config_requirements(info)
    print("[ring-export] the Detectron2 config must set (stock configs load these weights silently and compute "
          "wrong features):\n  " + "\n  ".join(needs))
    if shipped:
        print("[ring-export] shipped configs that set these (detectron_configs/): " + ", ".join(shipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
