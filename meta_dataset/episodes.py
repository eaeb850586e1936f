"""Episode sampling by Meta-Dataset's rules (Triantafillou et al. 2020, and its sampling code), seeded and
machine-independent.

Variable-way variable-shot (``variable``):
- ways: flat sources uniform in [5, min(50, classes in the split)]; Omniglot: an alphabet of the split
  uniformly, then ways uniform in [5, min(50, its characters)] within it; ImageNet: an internal node of
  the split's WordNet subgraph spanning 5..392 leaves, uniformly, then min(50, span) of its leaves.
- query per class: min(10, floor(smallest class / 2)) for the whole episode (a class of < 2 images is
  an error).
- support: beta ~ U[0, 1); S = min(500, sum_c floor(beta * min(100, remaining_c) + 1)); log-weights
  u_c ~ U[ln 0.5, ln 2); p_c proportional to size_c * exp(u_c); n_c = min(floor(p_c * (S - ways)) + 1,
  remaining_c), with remaining_c = size_c - query.
Fixed (``5w1s``, ``5w5s``): 5 classes uniformly over the split's classes that hold at least shots +
queries images (the official sampler's ``min_examples_in_class``; the others are left out of every episode
and counted in ``EpisodeSampler.dropped``), hierarchies off, 1 or 5 support and 15 query images per class.

Within each class the images are shuffled before support and query are taken (disjoint, support +
query <= class size): traffic_sign's images come in 30-frame sequences of one sign.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from meta_dataset.spec import SourceSpec
from pretrain.common import UserError

MAX_WAYS, MIN_WAYS, MAX_QUERY, MAX_SUPPORT, MAX_PER_CLASS = 50, 5, 10, 500, 100
MAX_SPAN = 392
FIXED = {"5w1s": (5, 1, 15), "5w5s": (5, 5, 15)}
PROTOCOLS = ("variable", *FIXED)


class EpisodeError(UserError):
    """An episode that the source cannot supply (too few classes or images), or an unknown protocol."""


@dataclass
class Episode:
    classes: np.ndarray  # (ways,) class ids; episode label j is classes[j]
    support: np.ndarray  # (n_support, 2): class id, image index within the class
    query: np.ndarray  # (n_query, 2)
    support_labels: np.ndarray
    query_labels: np.ndarray


def _pick_classes_variable(spec: SourceSpec, split: str, rng: np.random.Generator) -> np.ndarray:
    if spec.kind == "hierarchical":
        h = spec.hierarchy[split]
        eligible = [n for n in h.internal_nodes() if MIN_WAYS <= len(h.spans[n]) <= MAX_SPAN]
        if not eligible:
            raise EpisodeError(f"{spec.name}/{split}: no WordNet node spans {MIN_WAYS}..{MAX_SPAN} leaves.")
        leaves = np.asarray(h.spans[eligible[rng.integers(len(eligible))]])
        return rng.choice(leaves, size=min(MAX_WAYS, len(leaves)), replace=False)
    if spec.kind == "bilevel":
        groups = spec.superclasses[split]
        if not groups:
            raise EpisodeError(f"{spec.name} has no alphabets in split '{split}'.")
        pool = np.asarray(groups[rng.integers(len(groups))][1])
    else:
        pool = np.asarray(spec.classes(split))
    if len(pool) < MIN_WAYS:
        raise EpisodeError(f"{spec.name}/{split} has {len(pool)} classes (in this group); variable-way episodes need "
                           f"at least {MIN_WAYS}.")
    ways = int(rng.integers(MIN_WAYS, min(MAX_WAYS, len(pool)) + 1))
    return rng.choice(pool, size=ways, replace=False)


def _variable_shots(sizes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    if sizes.min() < 2:
        raise EpisodeError("a class with fewer than 2 images cannot give both support and query images.")
    ways = len(sizes)
    query = min(MAX_QUERY, int(sizes.min()) // 2)
    remaining = sizes - query
    beta = rng.random()
    support_total = min(MAX_SUPPORT, int(np.floor(beta * np.minimum(MAX_PER_CLASS, remaining) + 1).sum()))
    log_w = rng.uniform(math.log(0.5), math.log(2.0), size=ways)
    p = sizes * np.exp(log_w)
    p = p / p.sum()
    shots = np.minimum(np.floor(p * (support_total - ways)).astype(np.int64) + 1, remaining)
    return shots, query


def eligible_classes(spec: SourceSpec, split: str, min_examples: int) -> tuple[np.ndarray, int]:
    """(the split's classes with at least ``min_examples`` images, how many it has fewer)."""
    classes = np.asarray(spec.classes(split))
    keep = np.asarray([spec.images_per_class[c] >= min_examples for c in classes], dtype=bool)
    return classes[keep], int((~keep).sum())


class EpisodeSampler:
    def __init__(self, spec: SourceSpec, split: str, protocol: str = "variable", seed: int = 0):
        if protocol not in PROTOCOLS:
            raise EpisodeError(f"--protocol '{protocol}' is unknown; choose one of: {', '.join(PROTOCOLS)}.")
        self.spec, self.split, self.protocol, self.seed = spec, split, protocol, seed
        if not spec.classes(split):
            raise EpisodeError(f"{spec.name} has no classes in split '{split}' (e.g. traffic_sign is test-only).")
        self.pool, self.dropped = None, 0
        if protocol in FIXED:
            ways, shot, query = FIXED[protocol]
            self.pool, self.dropped = eligible_classes(spec, split, shot + query)
            if len(self.pool) < ways:
                raise EpisodeError(f"{spec.name}/{split} has {len(self.pool)} classes with at least {shot + query} "
                                   f"images ({self.dropped} smaller left out), fewer than the {ways} ways {protocol} "
                                   "needs; use --protocol variable for this source.")

    def episode(self, i: int) -> Episode:
        """Episode i depends only on (seed, i): any subset can be drawn, in any order, on any machine."""
        rng = np.random.default_rng([self.seed, i])
        spec = self.spec
        if self.protocol == "variable":
            classes = _pick_classes_variable(spec, self.split, rng)
            sizes = np.asarray([spec.images_per_class[c] for c in classes])
            shots, query = _variable_shots(sizes, rng)
        else:
            ways, shot, query = FIXED[self.protocol]
            classes = rng.choice(self.pool, size=ways, replace=False)
            sizes = np.asarray([spec.images_per_class[c] for c in classes])
            shots = np.full(ways, shot)
        support, query_rows, s_lab, q_lab = [], [], [], []
        for j, (c, n, k) in enumerate(zip(classes, sizes, shots)):
            order = rng.permutation(int(n))  # within-class shuffle
            query_rows += [(int(c), int(x)) for x in order[:query]]
            support += [(int(c), int(x)) for x in order[query:query + int(k)]]
            q_lab += [j] * query
            s_lab += [j] * int(k)
        return Episode(np.asarray(classes), np.asarray(support).reshape(-1, 2), np.asarray(query_rows).reshape(-1, 2),
                       np.asarray(s_lab), np.asarray(q_lab))

    def __iter__(self):
        i = 0
        while True:
            yield self.episode(i)
            i += 1
