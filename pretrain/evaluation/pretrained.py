"""``load_backbone``: the one way every command gets a backbone to evaluate (or its random-init twin).

The source is either a ring-pretrain run (a run directory or one of its checkpoints: the run's own config
and architecture) or any weights file holding a ResNet (``pretrain/modeling/weight_formats.py`` recognises
torchvision, timm, MoCo, Lightning, VISSL, DINO and Detectron2 layouts).  A weights file has no config of
its own: the evaluation's settings (dataset, probe) come from ``config`` (files or shipped names, as
``ring-pretrain -c``) and ``opts``; the architecture comes from the file, recorded in ``MODEL.*``, and the
file itself in ``WEIGHTS.*`` (its name and content hash key its rows in the results tables).
"""
from __future__ import annotations

from pathlib import Path

import torch

from pretrain.config import ConfigError, config_from_yaml_str, get_key, load_config, merge_overrides
from pretrain.contrastive.objectives import build_eval_backbone
from pretrain.engine.checkpoint import LAST, backbone_state_dict, checked, is_pretrain_checkpoint, load_checkpoint
from pretrain.modeling.backbones import build_backbone
from pretrain.modeling.weight_formats import (Arch, FoundBackbone, check_against, find_backbone, infer_arch,
                                              read_weights_file)


def load_backbone(checkpoint: str | Path, random_init: bool = False, opts: list[str] | None = None, *,
                  config=None, arch: str | None = None, prefix: str | None = None, name: str | None = None):
    """(config, backbone) with ``KEY VALUE`` overrides applied (so ``SEED`` picks the random init of the
    baseline).  A run's backbone has the architecture its objective evaluates (CMC: both Lab streams)."""
    path = Path(checkpoint)
    state = load_checkpoint(path) if path.is_dir() else read_weights_file(path)
    if is_pretrain_checkpoint(state):
        given = [flag for flag, v in (("-c/--config", config), ("--arch", arch), ("--prefix", prefix),
                                      ("--name", name)) if v]
        if given:
            raise ConfigError(f"{given[0]} applies to weights files; {path} is a ring-pretrain run, which brings its "
                              "own config and architecture.")
        return _from_run(checked(state, path / LAST if path.is_dir() else path), random_init, opts)
    return _from_file(path, state, random_init, opts, config, arch, prefix, name)


# settings that build a run's backbone: an override would build another network than the checkpoint holds
RUN_MODEL_KEYS = ("MODEL.BACKBONE", "MODEL.SMALL_STEM", "MODEL.WIDTH", "CMC.WIDTH", "OBJECTIVE.NAME")


def is_run(path: str | Path) -> bool:
    """A ring-pretrain run directory or checkpoint (not a weights file from elsewhere); cheap: a PyTorch file is
    memory-mapped, its tensors not read."""
    path = Path(path)
    return path.is_dir() or (path.is_file() and is_pretrain_checkpoint(read_weights_file(path)))


def _from_run(state: dict, random_init: bool, opts):
    cfg = config_from_yaml_str(state["config"])
    changed = [(k, v) for k, v in zip((opts or [])[0::2], (opts or [])[1::2])
               if k.startswith(RUN_MODEL_KEYS) and str(v) != str(get_key(cfg, k))]
    if changed:
        key, value = changed[0]
        raise ConfigError(f"{key} {value}: a run's backbone is evaluated as it was trained ({key} "
                          f"{get_key(cfg, key)}); drop the override, or evaluate other weights with --weights FILE.")
    cfg.defrost()
    merge_overrides(cfg, opts or [])
    cfg.freeze()
    torch.manual_seed(cfg.SEED)
    bb = build_eval_backbone(cfg)
    if not random_init:
        bb.load_state_dict(backbone_state_dict(state))
    return cfg, bb


def fitting_backbone(found: FoundBackbone, arch: Arch):
    """The untrained backbone of ``arch``, once every tensor of the file is matched to it (else one sentence)."""
    bb = build_backbone(arch.backbone, arch.small_stem, arch.in_chans, arch.width)
    check_against(bb, found.state_dict, str(found.path), found.format)
    return bb


def _from_file(path: Path, contents, random_init: bool, opts, config, arch, prefix, name):
    found = find_backbone(path, prefix, contents)
    a = infer_arch(found.state_dict, str(path), arch)
    cfg = load_config(config, opts)
    cfg.defrost()
    cfg.MODEL.BACKBONE, cfg.MODEL.SMALL_STEM, cfg.MODEL.WIDTH = a.backbone, a.small_stem, a.width
    w = cfg.WEIGHTS
    w.NAME, w.SHA256, w.FILE, w.FORMAT, w.PREFIX = (name or path.name, found.sha256, str(path), found.format,
                                                    found.prefix)
    cfg.freeze()
    torch.manual_seed(cfg.SEED)
    bb = fitting_backbone(found, a)
    if not random_init:
        # every tensor was matched above; only optional buffers (num_batches_tracked) may be absent
        bb.load_state_dict(found.state_dict, strict=False)
    return cfg, bb


def default_output(checkpoint: str | Path, cfg, what: str, random_init: bool = False) -> Path:
    """Where an evaluation writes when ``-o`` is not given: ``<run dir>/<what>`` for a run,
    ``runs/external/<name>/<what>`` for a weights file (never beside a file that may be read-only)."""
    sub = f"{what}_random_init" if random_init else what
    if cfg.WEIGHTS.SHA256:
        return Path("runs") / "external" / cfg.WEIGHTS.NAME / sub
    src = Path(checkpoint)
    return (src if src.is_dir() else src.parent) / sub
