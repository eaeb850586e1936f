"""The kNN monitor and the linear probe on features whose answer is known: separable classes give 100 %."""
import torch

from pretrain.evaluate import knn_predict, topk_accuracy, train_linear_on_features
from pretrain.lr_schedules import build_lr_lambda


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
