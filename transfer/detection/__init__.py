"""Detectron2 transfer: export (no Detectron2 needed), configs, datasets, heads and train_net.

``export`` and ``resnet_table`` work without Detectron2; ``train_net``, ``heads`` and the dataset
registration import it (after ``transfer.detectron2_compat.ensure()``)."""

from pathlib import Path

from pretrain.common import UserError

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "detectron_configs"


class TransferError(UserError):
    """A user-fixable problem (config, dataset, weights); one sentence."""
