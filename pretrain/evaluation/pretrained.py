"""``load_backbone``: the one way every command gets a pretrained backbone (or its random-init twin)."""
from __future__ import annotations

from pathlib import Path

import torch

from pretrain.config import config_from_yaml_str, merge_overrides
from pretrain.contrastive.objectives import build_eval_backbone
from pretrain.engine.checkpoint import backbone_state_dict, load_checkpoint


def load_backbone(checkpoint: str | Path, random_init: bool = False, opts: list[str] | None = None):
    """(config, backbone) from a pretraining run directory or checkpoint file, with ``KEY VALUE`` overrides
    applied first (so ``SEED`` picks the random init of the baseline).  The backbone has the architecture the
    run's objective evaluates (CMC: both Lab streams)."""
    state = load_checkpoint(checkpoint)
    cfg = config_from_yaml_str(state["config"])
    cfg.defrost()
    merge_overrides(cfg, opts or [])
    cfg.freeze()
    torch.manual_seed(cfg.SEED)
    bb = build_eval_backbone(cfg)
    if not random_init:
        bb.load_state_dict(backbone_state_dict(state))
    return cfg, bb
