"""Frozen-feature evaluation: feature extraction, the weighted kNN monitor, and linear-probe training."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm


def encode_batches(backbone: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256,
                   num_workers: int = 0, progress: bool = False, desc: str = "features"):
    """Yields (features (b, D) float32 on CPU, labels (b,)) batch by batch, the backbone in eval mode (BN
    frozen; its mode is restored afterwards)."""
    was_training = backbone.training
    backbone.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    try:
        for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
            with torch.no_grad():
                f = backbone(x.to(device, non_blocking=True)).float().cpu()
            yield f, torch.as_tensor(y)
    finally:
        backbone.train(was_training)


def extract_features(backbone: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256,
                     num_workers: int = 0, progress: bool = False, desc: str = "features"):
    """(features (N, D) float32 on CPU, labels (N,)) held in memory."""
    feats, labels = zip(*encode_batches(backbone, dataset, device, batch_size, num_workers, progress, desc))
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_predict(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN (Wu et al. 2018): each of the k nearest training features (cosine) votes for its
    class with weight exp(similarity / temperature).  Returns (N_test, num_classes) class scores."""
    train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    k = min(k, len(train_f))
    out = []
    for s in range(0, len(test_f), chunk):
        sim = test_f[s:s + chunk] @ train_f.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes, dtype=sim.dtype)
        votes.scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())
        out.append(votes)
    return torch.cat(out)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    res = {}
    for k in ks:
        k_ = min(k, scores.shape[1])
        hit = (scores.topk(k_, dim=1).indices == labels.unsqueeze(1)).any(dim=1)
        res[f"top{k}"] = 100.0 * hit.float().mean().item()
    return res


def train_linear_probe(train, test, num_classes: int, epochs: int, batch_size: int, lr: float, momentum: float,
                       weight_decay: float, lr_lambda, seed: int, device="cpu", progress: bool = False):
    """A linear classifier on frozen features (``feature_cache.InMemoryFeatures`` or ``FeatureCache``), trained
    on ``device`` from mini-batches, then scored chunk by chunk: memory stays bounded by a batch."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = torch.nn.Linear(train.dim, num_classes).to(device)
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    iters_per_epoch = max(1, len(train) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    for _ in tqdm(range(epochs), desc="linear probe", disable=not progress, leave=False):
        perm = torch.randperm(len(train), generator=g)
        for b in range(iters_per_epoch):
            x, y = train.batch(perm[b * batch_size:(b + 1) * batch_size])
            loss = F.cross_entropy(clf(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():  # top-k hits chunk by chunk: no (N_test x classes) score matrix in memory
        hits, n = {}, 0
        for x, y in test.chunks(8192):
            acc = topk_accuracy(clf(x.to(device)).float().cpu(), y)
            for k, v in acc.items():
                hits[k] = hits.get(k, 0.0) + v * len(y)
            n += len(y)
    return clf.cpu(), {k: v / n for k, v in hits.items()}


def train_linear_on_features(train_f, train_y, test_f, test_y, num_classes: int, epochs: int, batch_size: int,
                             lr: float, momentum: float, weight_decay: float, lr_lambda, seed: int,
                             progress: bool = False):
    """``train_linear_probe`` on tensors held in memory (exactly the linear probe without augmentation)."""
    from .feature_cache import InMemoryFeatures

    return train_linear_probe(InMemoryFeatures(train_f, train_y), InMemoryFeatures(test_f, test_y), num_classes,
                              epochs, batch_size, lr, momentum, weight_decay, lr_lambda, seed, progress=progress)
