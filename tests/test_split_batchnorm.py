"""SplitBatchNorm2d: per-sub-batch BatchNorm in one pass equals one pass of the encoder per sub-batch."""
import copy

import pytest
import torch
from torch import nn

from pretrain.config import load_config
from pretrain.modeling.backbones import build_encoder
from pretrain.modeling.split_batchnorm import SplitBatchNorm2d, split_batchnorm_


def _encoder():
    torch.manual_seed(0)
    return build_encoder(load_config(None, ["MODEL.WIDTH", "8", "MODEL.SMALL_STEM", "False"]).MODEL)


@pytest.mark.parametrize("channels_last", [False, True])
def test_one_pass_equals_a_pass_per_sub_batch(channels_last):
    per_chunk, one_pass = _encoder(), _encoder()
    assert split_batchnorm_(one_pass, 4)
    assert sum(isinstance(m, SplitBatchNorm2d) for m in one_pass.modules()) == 20  # every BN of a ResNet-18
    assert one_pass.state_dict().keys() == per_chunk.state_dict().keys()  # checkpoints unchanged
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(memory_format=fmt)
    per_chunk, one_pass = per_chunk.to(memory_format=fmt), one_pass.to(memory_format=fmt)
    ref = torch.cat([per_chunk(c) for c in x.chunk(4)])
    out = one_pass(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    ref.square().sum().backward()
    out.square().sum().backward()
    for (name, a), b in zip(per_chunk.named_parameters(), one_pass.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, a), b in zip(per_chunk.named_buffers(), one_pass.buffers()):  # running stats moved 4 times
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    assert one_pass.backbone.bn1.num_batches_tracked == 4
    # the sub-batches differ: the statistics really are per slice (not the whole batch's)
    whole = copy.deepcopy(per_chunk).train()
    assert not torch.allclose(whole(x), out, atol=1e-3)
    one_pass.eval(), per_chunk.eval()
    torch.testing.assert_close(one_pass(x), per_chunk(x))  # eval: plain BatchNorm with running statistics


def test_statistics_are_per_slice_without_running_statistics_too():
    bn = SplitBatchNorm2d(3, track_running_stats=False, splits=2).train()
    x = torch.randn(8, 3, 4, 4)
    ref = torch.cat([nn.functional.batch_norm(c, None, None, training=True) for c in x.chunk(2)])
    torch.testing.assert_close(bn(x), ref)


def test_other_batchnorms_are_left_alone():
    mixed = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.BatchNorm1d(4 * 9))
    assert not split_batchnorm_(mixed, 2)
    assert type(mixed[1]) is nn.BatchNorm2d  # nothing converted: the caller keeps a pass per sub-batch


def test_moco_runs_its_sub_batches_as_bn_passes_says():
    """MOCO.BN_PASSES: auto is one pass for small sub-batches on a CPU and a pass per sub-batch from 32 images;
    one and per_split force it; both give MoCo the same loss from the same weights."""
    from pretrain.common import UserError
    from pretrain.contrastive.objectives import build_objective

    def moco(batch, passes):
        cfg = load_config(None, ["MODEL.SMALL_STEM", "True", "MODEL.WIDTH", "8", "MODEL.OUT_DIM", "16",
                                 "MOCO.QUEUE_SIZE", str(4 * batch), "MOCO.BN_PASSES", passes, "DEVICE", "cpu"])
        torch.manual_seed(0)
        return build_objective(cfg, 1000, batch)

    def splits(obj):
        return any(isinstance(m, SplitBatchNorm2d) for m in obj.encoder_q.modules())

    assert (moco(128, "auto").split_passes, splits(moco(128, "auto"))) == (1, True)  # 16 images per sub-batch
    assert (moco(256, "auto").split_passes, splits(moco(256, "auto"))) == (8, False)  # 32
    assert moco(128, "one").split_passes == 1 and moco(64, "per_split").split_passes == 8
    x = torch.randn(2, 128, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    one, each = moco(128, "one"), moco(128, "per_split")
    each.load_state_dict(one.state_dict())
    (a, _), (b, _) = one(*x), each(*x)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    with pytest.raises(UserError, match="MOCO.BN_PASSES"):
        moco(64, "twice")
