"""Each linear-evaluation protocol as configured: optimizer, schedule, transforms; and the paper's protocol
training on augmented views through an encoder whose BatchNorm stays frozen."""
import pytest
import torch
from torchvision import transforms as T

from pretrain.common import UserError
from pretrain.config import load_config
from pretrain.data import SyntheticShapes
from pretrain.data.transforms import build_train_transform, eval_transform
from pretrain.engine.lr_schedules import build_lr_lambda
from pretrain.evaluation.linear import probe_through_encoder
from pretrain.evaluation.protocols import build_protocol
from pretrain.modeling.backbones import build_backbone


def cfg_with(**kv):
    opts = []
    for k, v in kv.items():
        opts += [k, str(v)]
    return load_config(None, opts)


def multipliers(p, total=100):
    f = build_lr_lambda(p.schedule, p.steps, 0.1, total)
    return [f(i) for i in (0, 59, 60, 79, 80, 99)]


def test_paper_protocol_is_the_authors_recipe():
    cfg = cfg_with(**{"LINCLS.PROTOCOL": "paper", "DATA.AUGMENT": "ir", "DATA.IMAGE_SIZE": 32})
    p = build_protocol(cfg)
    assert (p.lr, p.momentum, p.weight_decay, p.cached) == (0.01, 0.9, 1e-5, False)
    assert multipliers(p) == [1.0] * 6  # no schedule
    assert repr(p.train_transform) == repr(build_train_transform("ir", 32))  # the pretraining augmentation
    assert repr(p.test_transform) == repr(eval_transform(32))


@pytest.mark.parametrize("size,resize", [(224, 256), (32, 37), (96, 110)])
def test_moco_protocol_scales_its_crops(size, resize):
    p = build_protocol(cfg_with(**{"LINCLS.PROTOCOL": "moco", "DATA.IMAGE_SIZE": size}))
    assert (p.lr, p.momentum, p.weight_decay, p.cached) == (30.0, 0.9, 0.0, False)
    assert multipliers(p) == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])  # x0.1 at 60 and 80 of 100 epochs
    train, test = p.train_transform.transforms, p.test_transform.transforms
    assert isinstance(train[0], T.RandomResizedCrop) and train[0].size == (size, size)
    assert isinstance(train[1], T.RandomHorizontalFlip)
    assert isinstance(test[0], T.Resize) and test[0].size == resize
    assert isinstance(test[1], T.CenterCrop) and test[1].size == (size, size)


def test_cached_protocol_reads_the_lincls_keys():
    p = build_protocol(cfg_with(**{"LINCLS.LR": 0.2, "LINCLS.WEIGHT_DECAY": 0.001, "LINCLS.STEPS": "(0.5,)"}))
    assert (p.name, p.lr, p.momentum, p.weight_decay, p.cached) == ("cached", 0.2, 0.9, 0.001, True)
    f = build_lr_lambda(p.schedule, p.steps, 0.1, 100)
    assert (f(49), f(50)) == (1.0, pytest.approx(0.1))
    assert repr(p.train_transform) == repr(p.test_transform) == repr(eval_transform(32))
    with pytest.raises(UserError, match="LINCLS.PROTOCOL 'linear' is unknown; choose one of: cached, moco, paper"):
        build_protocol(cfg_with(**{"LINCLS.PROTOCOL": "linear"}))


def test_paper_protocol_trains_on_augmented_views_with_frozen_batchnorm():
    cfg = cfg_with(**{"LINCLS.PROTOCOL": "paper", "LINCLS.EPOCHS": 2, "LINCLS.BATCH_SIZE": 8, "DATA.IMAGE_SIZE": 16,
                      "DATA.NUM_WORKERS": 0})
    p = build_protocol(cfg)
    seen = {}

    class Recording:  # the protocol's training transform, recording what each image became
        def __call__(self, img):
            x = p.train_transform(img)
            seen.setdefault(bytes(img.tobytes()), []).append(x)
            return x
    train, test = SyntheticShapes("train", 16, 16), SyntheticShapes("test", 8, 16)
    torch.manual_seed(0)
    bb = build_backbone("resnet18", small_stem=False, width=16)
    for m in bb.modules():  # non-trivial running statistics: an update would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    bb.train()  # the probe must put it in eval mode itself
    acc = probe_through_encoder(bb, p.__class__(**{**p.__dict__, "train_transform": Recording()}), cfg, train, test,
                                num_classes=10, device=torch.device("cpu"), lr_lambda=lambda i: 1.0)
    assert 0 <= acc["top1"] <= 100
    assert all(torch.equal(before[k], v) for k, v in bb.state_dict().items())  # BN statistics and weights frozen
    assert len(seen) == 16 and all(len(v) == 2 for v in seen.values())  # every image, once per epoch
    assert sum(not torch.equal(a, b) for a, b in seen.values()) >= 14  # two different augmented views


def test_moco_protocol_is_main_lincls_init_every_image_and_last_and_best_epoch(monkeypatch):
    """MoCo's main_lincls: fc N(0, 0.01) with zero bias, no drop_last (10 images at batch 4: 3 steps an
    epoch, every image seen), the test split scored after every epoch, the last and the best reported."""
    from pretrain.evaluation import linear

    cfg = cfg_with(**{"LINCLS.PROTOCOL": "moco", "LINCLS.EPOCHS": 3, "LINCLS.BATCH_SIZE": 4, "DATA.IMAGE_SIZE": 16,
                      "DATA.NUM_WORKERS": 0})
    p = build_protocol(cfg)
    assert (p.init_std, p.drop_last, p.best_epoch) == (0.01, False, True)
    torch.manual_seed(0)
    layer = linear.linear_layer(512, 1000, p.init_std)
    assert torch.all(layer.bias == 0) and abs(layer.weight.std().item() - 0.01) < 5e-4
    assert linear.iters_per_epoch(10, 4, drop_last=False) == 3 and linear.iters_per_epoch(10, 4, drop_last=True) == 2

    steps, per_epoch = [], []
    fit = linear.fit_linear

    def recording_fit(clf, epoch_batches, *a, after_epoch=None, **k):
        def batches():
            for x, y in epoch_batches():
                steps.append(len(y))
                yield x, y

        def scored(epoch):
            after_epoch(epoch)
            per_epoch.append(linear.topk_accuracy(clf(fte_seen[0]).detach(), fte_seen[1])["top1"])
        return fit(clf, batches, *a, after_epoch=scored, **k)
    fte_seen = []
    extract = linear.extract_features

    def recording_extract(*a, **k):
        out = extract(*a, **k)
        fte_seen[:] = out
        return out
    monkeypatch.setattr(linear, "fit_linear", recording_fit)
    monkeypatch.setattr(linear, "extract_features", recording_extract)
    bb = build_backbone("resnet18", small_stem=False, width=16)
    acc = linear.probe_through_encoder(bb, p, cfg, SyntheticShapes("train", 10, 16), SyntheticShapes("test", 12, 16),
                                       num_classes=10, device=torch.device("cpu"), lr_lambda=lambda i: 0.01)
    assert steps == [4, 4, 2] * 3  # every image of every epoch, the last batch partial
    assert len(per_epoch) == 3 and acc["top1"] == per_epoch[-1]
    assert acc["top1_best"] == max(per_epoch) and per_epoch[acc["best_epoch"] - 1] == max(per_epoch)
    assert acc["best_epoch"] == per_epoch.index(max(per_epoch)) + 1  # the first epoch to reach the best
