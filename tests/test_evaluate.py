"""The kNN monitor and the linear probe on features whose answer is known: separable classes give 100 %."""
import torch

from pretrain.engine.lr_schedules import build_lr_lambda
from pretrain.evaluation.accuracy import topk_accuracy
from pretrain.evaluation.knn import knn_predict
from pretrain.evaluation.linear import train_linear_on_features


def separable(n_per_class=40, classes=4, dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(classes, dim) * 10.0
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[y] + 0.5 * torch.randn(len(y), dim, generator=g), y


def test_knn_is_perfect_on_separable_features_and_chance_on_shuffled_labels():
    ftr, ytr = separable(seed=0)
    fte, yte = separable(seed=1)
    scores = knn_predict(ftr, ytr, fte, 4, k=10, temperature=0.1)
    assert topk_accuracy(scores, yte, ks=(1,))["top1"] == 100.0
    shuffled = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(2))]
    assert topk_accuracy(knn_predict(ftr, shuffled, fte, 4, k=10), yte, ks=(1,))["top1"] < 60.0


def test_linear_probe_is_perfect_on_separable_features():
    ftr, ytr = separable(seed=0)
    fte, yte = separable(seed=1)
    iters = (len(ftr) // 32) * 20
    _, acc = train_linear_on_features(ftr, ytr, fte, yte, 4, epochs=20, batch_size=32, lr=0.1, momentum=0.9,
                                      weight_decay=0.0, lr_lambda=build_lr_lambda("cosine", (), 0.1, iters), seed=0)
    assert acc["top1"] == 100.0 and acc["top5"] == 100.0
    _, untrained = train_linear_on_features(ftr, ytr, fte, yte, 4, epochs=0, batch_size=32, lr=0.1, momentum=0.9,
                                            weight_decay=0.0, lr_lambda=lambda i: 1.0, seed=0)
    assert untrained["top1"] < 100.0


def test_feature_cache_round_trips_and_the_probe_streams_from_it(tmp_path):
    """Features written to disk in float16 (memory-mapped), read back by batch and by chunk; the probe on the
    cache scores like the probe on the same features in memory."""
    from torch.utils.data import TensorDataset

    from pretrain.evaluation.features import FeatureCache, InMemoryFeatures
    from pretrain.evaluation.linear import train_linear_probe

    x, y = separable(n_per_class=30, seed=3)
    cache = FeatureCache.write(torch.nn.Identity(), TensorDataset(x, y), "cpu", tmp_path / "train", batch_size=7)
    assert len(cache) == 120 and cache.dim == 12 and cache.features.dtype.name == "float16"
    assert torch.equal(cache.labels, y)
    rows, labels = cache.batch(torch.tensor([17, 3, 90]))
    assert torch.equal(labels, y[[3, 17, 90]]) and torch.allclose(rows, x[[3, 17, 90]], atol=1e-2)  # file order
    assert torch.allclose(torch.cat([c for c, _ in cache.chunks(50)]), x, atol=1e-2)
    assert not (tmp_path / "train.tmp").exists()
    fte, yte = separable(seed=4)
    args = (4, 10, 32, 0.1, 0.9, 0.0, lambda i: 1.0, 0)
    _, on_disk = train_linear_probe(cache, InMemoryFeatures(fte, yte), *args)
    _, in_memory = train_linear_probe(InMemoryFeatures(x.half().float(), y), InMemoryFeatures(fte, yte), *args)
    assert on_disk["top1"] == in_memory["top1"] == 100.0
