"""ring-export: a pretrained backbone -> Detectron2's weight format (.pkl).

    ring-export runs/moco -o runs/moco/model_final.pkl          # a ring-pretrain run or checkpoint
    ring-export resnet50_state_dict.pth -o r50.pkl                # any weights file load_backbone reads
    ring-export moco_v2_800ep.pth.tar -o mocov2.pkl --prefix module.encoder_q.   # a prefix, when the guess fails

Accepted inputs: our pretraining checkpoints (MoCo's query encoder, IR/SimCLR's encoder, CMC's two
streams), and every weights layout ``load_backbone`` recognises (torchvision/timm state dicts and
.safetensors, MoCo .pth.tar, Lightning, VISSL, DINO, Detectron2), ResNet-18/34/50/101.  Names are
mapped (conv1 -> stem.conv1, bnK -> convK.norm, layerN -> res(N+1), downsample.0/1 -> shortcut/shortcut.norm);
heads, classifiers, key encoders, banks, queues and num_batches_tracked are dropped.  Before writing, every name and shape is checked against
Detectron2's ResNet of that depth (``resnet_table``); anything unexpected stops with one sentence.  Then
Detectron2's own ResNet loads the file and must reproduce the source's res2-res5 features on one batch
(``integrity.py``; the max difference is printed); only then is the file moved into place.  The
file is a pickle of {"model": {name: ndarray}, "__author__": ..., "matching_heuristics": True},
written atomically: Detectron2 recognises it as its own format only with both 'model' and '__author__'.
"""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from pretrain.common import CHECKPOINT_HELP, UserError, add_weights_arguments, cli_main, command_parser
from pretrain.config import provenance
from pretrain.data.color import STREAMS as CMC_STREAMS
from pretrain.evaluation.pretrained import load_backbone
from pretrain.io import atomic_path
from pretrain.modeling.weight_formats import depth_of, torchvision_to_detectron2
from transfer.detection.resnet_table import detectron2_resnet_shapes

AUTHOR = "ringnce"


class ExportError(UserError):
    """An input that is not a ResNet Detectron2 can load (one sentence)."""


def source_modules(src: str | Path, random_init: bool = False, arch: str | None = None, prefix: str | None = None,
                   opts: list[str] | None = None, name: str | None = None) -> tuple[dict[str, torch.nn.Module], dict]:
    """({stream name: ResNet trunk}, provenance) through ``load_backbone``: one stream ('') except for CMC
    ('l', 'ab').  With ``random_init``, the architecture untrained, initialised from its SEED: the baseline
    paired with it."""
    cfg, bb = load_backbone(src, random_init, opts, arch=arch, prefix=prefix, name=name)
    streams = {s: getattr(bb, s) for s in CMC_STREAMS} if all(hasattr(bb, s) for s in CMC_STREAMS) else {"": bb}
    return streams, {"checkpoint": str(src), **provenance(cfg, random_init)}


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


def export(src: str | Path, dst: str | Path, expect_depth: int | None = None, random_init: bool = False,
           arch: str | None = None, prefix: str | None = None, check: bool = True, opts: list[str] | None = None,
           name: str | None = None) -> dict:
    """Writes the Detectron2 .pkl; returns {'depth', 'streams', 'tensors', 'width', 'max_abs_diff'}: with
    ``check``, Detectron2's ResNet loads the written file and its res2-res5 features are compared with the
    source's on one batch (``transfer.detection.integrity``), before the file is moved into place."""
    modules, source = source_modules(src, random_init, arch, prefix, opts, name)
    model: dict[str, np.ndarray] = {}
    depth = None
    for stream, m in modules.items():
        converted, depth = convert(m.state_dict(), f"{src}" + (f" ({stream} stream)" if stream else ""),
                                   expect_depth)
        model.update({(f"{stream}." if stream else "") + k: v for k, v in converted.items()})
    payload = {"model": model, "__author__": AUTHOR, "matching_heuristics": True, "ringnce_source": source}
    width = int(next(v for k, v in model.items() if k.endswith("stem.conv1.weight")).shape[0])
    info = {"depth": depth, "streams": [s or "rgb" for s in modules], "tensors": len(model), "width": width}
    with atomic_path(dst) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        if check:
            from transfer.detection.integrity import max_feature_difference

            info["max_abs_diff"] = max_feature_difference(modules, tmp, depth)
    return info


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
    p.add_argument("--random-init", action="store_true", help="the architecture, untrained (seeded by its SEED): the "
                                                               "random-init baseline for detection")
    add_weights_arguments(p)
    p.add_argument("--no-check", action="store_true", help="skip loading the .pkl into Detectron2's ResNet and "
                                                           "comparing its res2-res5 features with the source's")
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides, e.g. SEED 3 (the seed of a --random-init twin, and "
                                           "the seed the results tables file a weights file's rows under)")
    args = p.parse_intermixed_args(argv)
    info = export(args.checkpoint, args.output, args.depth, args.random_init, args.arch, args.prefix,
                  check=not args.no_check, opts=args.opts, name=args.name)
    print(f"[ring-export] ResNet-{info['depth']} ({', '.join(info['streams'])}), {info['tensors']} tensors -> "
          f"{args.output}")
    if "max_abs_diff" in info:
        print(f"[ring-export] integrity: Detectron2's ResNet built from {args.output} reproduces the source's res2-res5 "
              f"features, max |difference| {info['max_abs_diff']:.2e}")
    needs, shipped = config_requirements(info)
    print("[ring-export] the Detectron2 config must set (stock configs load these weights silently and compute "
          "wrong features):\n  " + "\n  ".join(needs))
    if shipped:
        print("[ring-export] shipped configs that set these (detectron_configs/): " + ", ".join(shipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
