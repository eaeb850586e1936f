import numpy as np
import pytest
import torch
import torchvision
from torchvision import transforms as T

from pretrain.common import UserError
from pretrain.config import load_config
from pretrain.data import SyntheticShapes
from pretrain.data.transforms import build_train_transform, eval_transform
from pretrain.data.views import TwoViewDataset
from pretrain.modeling.backbones import BackboneError, ProjectionHead, build_backbone, build_encoder


def test_torchvision_names_are_kept_for_export():
    bb = build_backbone("resnet50")
    tv = torchvision.models.resnet50().state_dict()
    ours = bb.state_dict()
    assert set(ours) == {k for k in tv if not k.startswith("fc.")}
    assert bb.feature_dim == 2048 and bb(torch.randn(2, 3, 64, 64)).shape == (2, 2048)


def test_small_stem_keeps_resolution():
    bb = build_backbone("resnet18", small_stem=True).eval()
    assert bb.conv1.kernel_size == (3, 3) and bb.conv1.stride == (1, 1) and isinstance(bb.maxpool, torch.nn.Identity)
    assert bb.forward_maps(torch.randn(1, 3, 32, 32)).shape[-1] == 4  # 32 / 8 (layer2-4 strides)
    assert build_backbone("resnet18").eval().forward_maps(torch.randn(1, 3, 32, 32)).shape[-1] == 1


def test_timm_resnet_by_name_has_torchvision_keys():
    bb = build_backbone("timm:resnet18")
    assert set(bb.state_dict()) == set(build_backbone("resnet18").state_dict())
    with pytest.raises(BackboneError, match="only timm ResNets"):
        build_backbone("timm:vit_tiny_patch16_224")
    with pytest.raises(BackboneError, match="not a torchvision ResNet"):
        build_backbone("vgg11")


def test_encoder_outputs_are_l2_normalised():
    cfg = load_config(None, ["MODEL.OUT_DIM", "32"])
    enc = build_encoder(cfg.MODEL)
    z = enc(torch.randn(3, 3, 32, 32))
    assert z.shape == (3, 32) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    head = ProjectionHead(512)
    assert [m.out_features for m in head.net if isinstance(m, torch.nn.Linear)] == [512, 128]


def test_two_views_are_a_function_of_seed_epoch_index():
    base = SyntheticShapes("train", 8, 32)
    tf = build_train_transform("mocov2", 32)
    a, b = TwoViewDataset(base, tf, seed=1), TwoViewDataset(base, tf, seed=1)
    v1, v2, i, label = a[3]
    w1, w2, _, _ = b[3]
    assert torch.equal(v1, w1) and torch.equal(v2, w2) and not torch.equal(v1, v2) and i == 3
    before = torch.get_rng_state()
    a[4]
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is untouched
    b.epoch = 1
    assert not torch.equal(b[3][0], v1)  # a new epoch, new views


def test_pipelines_and_small_image_variants():
    small = build_train_transform("mocov2", 32).transforms
    large = build_train_transform("mocov2", 224).transforms
    def has_blur(ts):
        return any(isinstance(t, T.RandomApply) and isinstance(t.transforms[0], T.GaussianBlur) for t in ts)
    assert not has_blur(small) and has_blur(large)
    ir = build_train_transform("ir", 32).transforms
    assert isinstance(ir[0], T.RandomResizedCrop) and ir[0].scale == (0.2, 1.0)
    assert any(isinstance(t, T.RandomGrayscale) and t.p == 0.2 for t in ir)
    assert eval_transform(32)(SyntheticShapes("test", 2, 40)[0][0]).shape == (3, 32, 32)
    with pytest.raises(UserError, match="DATA.AUGMENT .simclr9. is unknown; choose one of"):
        build_train_transform("simclr9", 32)
    img = SyntheticShapes("train", 2, 32)[1][0]
    assert np.asarray(img).shape == (32, 32, 3)
