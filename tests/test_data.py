import gzip
from pathlib import Path

import numpy as np
import pytest

from pretrain.common import UserError
from pretrain.config import load_config
from pretrain.data import DatasetError, ImageFolderDataset, SyntheticShapes, build_dataset, load_cifar, load_idx, \
    load_stl10, subset
from pretrain.data.idx import FASHION_MNIST_DEFAULT
from transfer.formats import write_cifar10, write_cifar100, write_idx, write_image_folder, write_stl10


def _one_sentence(msg: str):
    assert "\n" not in msg and msg.strip().endswith((".", ")")), msg


def test_cifar10_reads_pixels_and_labels(tmp_path):
    written = write_cifar10(tmp_path)
    ds = load_cifar("cifar10", tmp_path, "train")
    assert len(ds) == 5 * 6 and ds.classes[3] == "class3"
    data, labels = written["data_batch_2"]
    img, label = ds[6 + 4]  # batch 2, item 4
    np.testing.assert_array_equal(np.asarray(img), data[4].reshape(3, 32, 32).transpose(1, 2, 0))
    assert label == labels[4]
    test = load_cifar("cifar10", tmp_path / "cifar-10-batches-py", "test")  # the folder itself works too
    assert len(test) == 6


def test_cifar100_uses_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    ds = load_cifar("cifar100", tmp_path, "test")
    assert [ds[i][1] for i in range(len(ds))] == written["test"][1]
    assert len(ds.classes) == 100


def test_cifar_errors(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-batches-py") as e:
        load_cifar("cifar10", tmp_path, "train")
    _one_sentence(str(e.value))
    write_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(DatasetError, match="data_batch_3.*truncated") as e:
        load_cifar("cifar10", tmp_path, "train")
    _one_sentence(str(e.value))


def test_cifar_pickle_cannot_run_code(tmp_path):
    import os
    import pickle

    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DatasetError, match="refusing to load"):
        load_cifar("cifar10", tmp_path, "test")


def test_stl10_layout_and_unlabeled(tmp_path):
    written = write_stl10(tmp_path)
    train = load_stl10(tmp_path, "train")
    img, label = train[2]
    np.testing.assert_array_equal(np.asarray(img), written["train"][0][2])
    assert label == int(written["train"][1][2]) - 1
    both = load_stl10(tmp_path, "train+unlabeled")
    assert len(both) == 4 + 3 and both[5][1] == -1
    np.testing.assert_array_equal(np.asarray(both[5][0]), written["unlabeled"][0][1])


def test_stl10_truncated(tmp_path):
    write_stl10(tmp_path)
    p = tmp_path / "stl10_binary" / "test_X.bin"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="test_X.bin.*truncated") as e:
        load_stl10(tmp_path, "test")
    _one_sentence(str(e.value))
    with pytest.raises(DatasetError, match="stl10_binary"):
        load_stl10(tmp_path / "nowhere", "train")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    written = write_idx(tmp_path, gz=gz)
    ds = load_idx(tmp_path, "test")
    img, label = ds[3]
    np.testing.assert_array_equal(np.asarray(img)[..., 0], written["t10k"][0][3])
    assert np.asarray(img).shape == (28, 28, 3) and label == written["t10k"][1][3]


def test_idx_truncated_and_missing(tmp_path):
    write_idx(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated") as e:
        load_idx(tmp_path, "train")
    _one_sentence(str(e.value))
    with pytest.raises(DatasetError, match="does not exist"):
        load_idx(tmp_path / "missing", "train")


def test_idx_truncated_gzip(tmp_path):
    write_idx(tmp_path, gz=True)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(DatasetError, match="t10k-images.*(truncated|corrupt)"):
        load_idx(tmp_path, "test")


@pytest.mark.skipif(not Path(FASHION_MNIST_DEFAULT).is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_real_fashion_mnist_default_location():
    cfg = load_config(None, ["DATA.NAME", "fashion_mnist"])
    train, test = build_dataset(cfg.DATA, "train"), build_dataset(cfg.DATA, "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert sorted(set(test.targets.tolist())) == list(range(10)) and test.classes[9] == "Ankle boot"
    with gzip.open(Path(FASHION_MNIST_DEFAULT) / "t10k-labels-idx1-ubyte.gz") as f:
        assert f.read()[8 + 17] == test[17][1]


def test_image_folder(tmp_path):
    written = write_image_folder(tmp_path)
    ds = ImageFolderDataset(tmp_path, "train")
    assert ds.classes == ["n01440764", "n01443537"] and len(ds) == 6
    img, label = ds[4]
    np.testing.assert_array_equal(np.asarray(img), written[ds.samples[4][0]])
    assert label == 1
    assert len(ImageFolderDataset(tmp_path, "test")) == 6  # 'test' reads val/


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="train/<class>/<image>"):
        ImageFolderDataset(tmp_path, "train")
    write_image_folder(tmp_path)
    bad = tmp_path / "train" / "n01440764" / "n01440764_0.JPEG"
    bad.write_bytes(b"not an image")
    ds = ImageFolderDataset(tmp_path, "train")
    with pytest.raises(DatasetError, match="n01440764_0.JPEG is not a readable image") as e:
        ds[0]
    _one_sentence(str(e.value))


def test_synthetic_is_deterministic_and_labelled():
    a, b = SyntheticShapes("train", 20, 24), SyntheticShapes("train", 20, 24)
    assert np.array_equal(np.asarray(a[7][0]), np.asarray(b[7][0])) and a[7][1] == 7
    assert not np.array_equal(np.asarray(a[7][0]), np.asarray(SyntheticShapes("test", 20, 24)[7][0]))
    assert a[3][0].size == (24, 24)


def test_synthetic_palette_colours():
    from pretrain.data.synthetic import PALETTE

    cfg = load_config(None, ["DATA.SYNTHETIC_SIZE", 40, "DATA.IMAGE_SIZE", 24, "DATA.SYNTHETIC_COLORS", "palette"])
    ds = build_dataset(cfg.DATA, "train")
    pal = np.array(PALETTE)
    pairs = set()
    for i in range(len(ds)):
        img, label = ds[i]
        px = np.asarray(img).astype(int).reshape(-1, 1, 3)
        dist = np.abs(px - pal[None]).sum(2)  # (pixels, 4)
        near = dist.min(1) < 50  # noise +-12 per channel; edge pixels blend two colours
        used, counts = np.unique(dist.argmin(1)[near], return_counts=True)
        assert near.mean() > 0.5 and label == i % 10
        assert len(used[counts > 0.02 * len(px)]) == 2  # a background and a shape colour, both from the palette
        pairs.add(tuple(used[counts > 0.02 * len(px)]))
    assert len(pairs) == 6  # every unordered pair of the four colours occurs
    with pytest.raises(DatasetError, match="DATA.SYNTHETIC_COLORS 'grey': choose one of random, palette"):
        SyntheticShapes("train", 4, colors="grey")


def test_registry_errors_and_subset():
    cfg = load_config(None, ["DATA.NAME", "nope"])
    with pytest.raises(UserError, match="DATA.NAME .nope. is unknown; choose one of: .*cifar10"):
        build_dataset(cfg.DATA, "train")
    ds = SyntheticShapes("train", 100, 8)
    sub = subset(ds, 30)
    assert len(sub) == 30 and len(set(sub.targets)) > 3  # spread over classes, not the first 30
