"""DATA.AUGMENT_ON device: the batched tensor form of every shipped pipeline, against the PIL path's statistics
(the CPU form of what runs on a GPU)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import transforms as T
from torchvision.transforms.functional import pil_to_tensor

from pretrain.data import batch_transforms as BA
from pretrain.common import UserError
from pretrain.data.synthetic import SyntheticShapes
from pretrain.data.transforms import AUGMENTATION_REGISTRY, IMAGENET_MEAN, IMAGENET_STD, build_batch_augment


def test_crop_boxes_follow_random_resized_crop():
    n, h, w = 20000, 40, 30
    boxes = BA.crop_boxes(n, h, w, (0.2, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0), "cpu")
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    torch.manual_seed(0)
    ref = torch.tensor([T.RandomResizedCrop.get_params(torch.zeros(3, h, w), [0.2, 1.0], [3 / 4, 4 / 3])
                        for _ in range(n)], dtype=torch.float)  # (i, j, h, w)
    ours = torch.stack([boxes[:, 1], boxes[:, 0], bh, bw], 1)
    for col in range(4):  # mean and spread of top, left, height, width within Monte-Carlo error
        a, b = ours[:, col], ref[:, col]
        se = (a.var() / n + b.var() / n).sqrt()
        assert abs(a.mean() - b.mean()) < 4 * se + 1e-6, (col, a.mean(), b.mean())
        assert abs(a.std() - b.std()) < 0.03 * b.std() + 0.05, (col, a.std(), b.std())


def _image_stats(x: torch.Tensor) -> np.ndarray:
    """Per image: channel means, channel spread, and mean absolute difference between channels (colour)."""
    return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), (x[:, 0] - x[:, 1]).abs().mean(dim=(1, 2))[:, None]],
                     1).numpy()


@pytest.mark.parametrize("name,size", [("mocov2", 32), ("mocov2", 96), ("ir", 32), ("cmc", 32)])
def test_batch_form_matches_the_pil_path_statistics(name, size):
    base = SyntheticShapes("train", 16, image_size=size)
    images = [base[i][0] for i in range(16)]
    _assert_views_match_pil(name, size, images, [pil_to_tensor(im) for im in images], reps=48, stack=True)


def _assert_views_match_pil(name, size, pil_images, uint8_images, reps, stack):
    """Each image ``reps`` times through the PIL pipeline and through the batch form (``uint8_images``: the
    same images as tensors, batched as one tensor when ``stack``, else as a list): the distribution of each
    view statistic (mean and spread over all views) agrees."""
    pil_tf = AUGMENTATION_REGISTRY.get(name)(size)
    torch.manual_seed(0)
    pil = torch.stack([pil_tf(im) for im in pil_images for _ in range(reps)])
    batch = build_batch_augment(name, size)
    many = [x for x in uint8_images for _ in range(reps)]
    dev = torch.cat([batch(torch.stack(many[i:i + 256]) if stack else many[i:i + 256], seed=i)
                     for i in range(0, len(many), 256)])
    assert dev.shape == pil.shape == (len(pil_images) * reps, 3, size, size)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    a, b = _image_stats(pil * std + mean), _image_stats(dev * std + mean)
    assert np.abs(a.mean(0) - b.mean(0)).max() < 0.02, (a.mean(0), b.mean(0))
    assert np.abs(a.std(0) - b.std(0)).max() < 0.025, (a.std(0), b.std(0))


def test_batch_form_is_a_function_of_the_seed_and_differs_between_views():
    raw = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    aug = build_batch_augment("mocov2", 32)
    assert torch.equal(aug(raw, seed=5), aug(raw, seed=5))
    assert not torch.equal(aug(raw, seed=5), aug(raw, seed=6))


def test_hue_round_trip_and_a_user_pipeline_without_batch_form():
    x = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(BA.adjust(x, "hue", torch.zeros(4)), x, atol=1e-5, rtol=0)
    ref = torch.stack([T.functional.adjust_hue(x[i], 0.3) for i in range(4)])
    torch.testing.assert_close(BA.adjust(x, "hue", torch.full((4,), 0.3)), ref, atol=1e-4, rtol=0)
    if "plain_fn" not in AUGMENTATION_REGISTRY:
        AUGMENTATION_REGISTRY.register(lambda size: T.ToTensor(), name="plain_fn")
    with pytest.raises(UserError, match="no batch form for DATA.AUGMENT_ON device"):
        build_batch_augment("plain_fn", 32)


def test_pretraining_with_device_augmentation_resumes_exactly(tmp_path, tiny_opts):
    from pretrain.cli import main as pretrain_main
    from tests.conftest import opts_with

    opts = opts_with(tiny_opts, **{"DATA.AUGMENT_ON": "device", "KNN.ENABLED": False, "SOLVER.MAX_ITERS": 4})
    assert pretrain_main(["-o", str(tmp_path / "a"), *opts]) == 0
    half = opts_with(opts, **{"SOLVER.MAX_ITERS": 2})
    assert pretrain_main(["-o", str(tmp_path / "b"), *half]) == 0
    assert pretrain_main(["-o", str(tmp_path / "b"), "--auto-resume", *opts]) == 0
    a = torch.load(tmp_path / "a" / "checkpoint_last.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint_last.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _jpegs(root, sizes, per_class=4):
    """ImageFolder JPEGs of different sizes (smooth random content), ImageNet layout."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for k, (w, h) in enumerate(sizes * per_class):
        d = root / "train" / f"n{k % 2:08d}"
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (max(2, h // 6), max(2, w // 6), 3), dtype=np.uint8)
        paths.append(d / f"img_{k}.JPEG")
        Image.fromarray(small).resize((w, h), Image.BICUBIC).save(paths[-1], quality=90)
    return paths


def test_decoding_on_the_device_matches_the_pil_path(tmp_path):
    """DATA.DECODE_ON device: decode_jpeg (CPU form here) gives PIL's pixels, and the views of images of
    different sizes follow the PIL pipeline's statistics."""
    from pretrain.data import ImageFolderDataset
    from pretrain.data.views import EncodedImages, collate_encoded, decode_batch

    _jpegs(tmp_path, [(48, 36), (30, 64), (40, 40)])
    ds = ImageFolderDataset(tmp_path, "train")
    files, _, index, labels = collate_encoded([EncodedImages(ds, "imagefolder")[i] for i in range(len(ds))])
    decoded = decode_batch(files, "cpu")
    assert [tuple(d.shape[1:]) for d in decoded[:3]] == [(36, 48), (64, 30), (40, 40)]
    assert index.tolist() == list(range(12)) and labels.tolist() == ds.targets
    for d, i in zip(decoded, range(len(ds))):
        assert (d.float() - pil_to_tensor(ds[i][0]).float()).abs().mean() < 1.0  # the same libjpeg decode
    _assert_views_match_pil("mocov2", 32, [ds[i][0] for i in range(len(ds))], decoded, reps=64, stack=False)


@pytest.mark.timeout(90)  # the failure this guards against is a stalled loader
def test_jpeg_batches_cross_from_loader_workers_intact(tmp_path):
    """With DATA.DECODE_ON device the workers hand over the files' bytes: one flat tensor per batch (a list of
    small tensors, one shared-memory file descriptor each, stalled a 2-worker loader here); every file's
    bytes arrive unchanged, in the batch's order."""
    from torch.utils.data import DataLoader

    from pretrain.data import ImageFolderDataset
    from pretrain.data.views import EncodedImages, collate_encoded

    paths = _jpegs(tmp_path, [(48, 36), (30, 64), (40, 40), (20, 24)])
    ds = ImageFolderDataset(tmp_path, "train")
    loader = DataLoader(EncodedImages(ds, "imagefolder"), batch_size=4, num_workers=2, collate_fn=collate_encoded,
                        shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = 0
    for files, _, index, _ in loader:
        assert len(files.lengths) == len(index) == 4
        for f, i in zip(files.files(), index.tolist()):
            assert f.tolist() == list(Path(ds.samples[i][0]).read_bytes())
            seen += 1
    assert seen == len(ds) == len(paths)


def test_pretraining_decodes_jpegs_on_the_device_and_resumes_exactly(tmp_path, tiny_opts):
    from pretrain.cli import main as pretrain_main
    from tests.conftest import opts_with

    _jpegs(tmp_path / "data", [(48, 36), (30, 64), (40, 40), (20, 24)])
    opts = opts_with(tiny_opts, **{"DATA.NAME": "imagefolder", "DATA.ROOT": tmp_path / "data",
                                   "DATA.AUGMENT_ON": "device", "DATA.DECODE_ON": "device",
                                   "KNN.ENABLED": False, "SOLVER.MAX_ITERS": 4})
    assert pretrain_main(["-o", str(tmp_path / "a"), *opts]) == 0
    assert pretrain_main(["-o", str(tmp_path / "b"), *opts_with(opts, **{"SOLVER.MAX_ITERS": 2})]) == 0
    assert pretrain_main(["-o", str(tmp_path / "b"), "--auto-resume", *opts]) == 0
    a = torch.load(tmp_path / "a" / "checkpoint_last.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint_last.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_decoding_on_the_device_says_what_it_needs(tmp_path, tiny_opts, capsys):
    from PIL import Image

    from pretrain.cli import main as pretrain_main
    from pretrain.data import DatasetError, ImageFolderDataset
    from tests.conftest import opts_with

    png = _jpegs(tmp_path, [(20, 20)], per_class=1)[0]
    Image.open(png).save(png, format="PNG")  # PNG content under an ImageNet .JPEG name
    with pytest.raises(DatasetError, match=f"{png.name} is not a JPEG.*DATA.DECODE_ON loader"):
        ImageFolderDataset(tmp_path, "train").encoded(0)
    for kv, msg in [({"DATA.AUGMENT_ON": "device", "DATA.DECODE_ON": "device"}, "DATA.NAME synthetic does not"),
                    ({"DATA.DECODE_ON": "device"}, "set DATA.AUGMENT_ON device too")]:
        assert pretrain_main(["-o", str(tmp_path / "x"), *opts_with(tiny_opts, **kv)]) == 2
        assert msg in capsys.readouterr().err
