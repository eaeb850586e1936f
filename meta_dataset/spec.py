"""Meta-Dataset dataset specifications (the ``dataset_spec.json`` beside each source's records).

Three kinds, as the benchmark's converter writes them:
- ``DatasetSpecification`` (flat): ``classes_per_split``; class ids are contiguous, train then valid
  then test.
- ``BiLevelDatasetSpecification`` (omniglot): ``superclasses_per_split`` and
  ``classes_per_superclass``; superclasses are contiguous per split, and classes contiguous per
  superclass.
- ``HierarchicalDatasetSpecification`` (ilsvrc_2012): ``split_subgraphs`` of WordNet nodes per split;
  the leaves are the classes (``class_names`` maps class id -> wn_id).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.common import UserError

SPLITS = ("train", "valid", "test")
OFFICIAL_SPECS = Path(__file__).resolve().parent / "specs"


class SpecError(UserError):
    pass


@dataclass
class Hierarchy:
    """One split's WordNet subgraph: children per node, and the leaves (class ids) under every node."""

    children: dict[str, list[str]]
    leaf_class: dict[str, int]  # wn_id of a leaf -> class id
    spans: dict[str, list[int]] = field(default_factory=dict)  # node -> class ids of the leaves below it

    def __post_init__(self):
        def leaves(node):
            if node not in self.spans:
                kids = self.children.get(node, [])
                if not kids:
                    self.spans[node] = [self.leaf_class[node]] if node in self.leaf_class else []
                else:
                    self.spans[node] = sorted({c for k in kids for c in leaves(k)})
            return self.spans[node]
        for node in self.children:
            leaves(node)

    def internal_nodes(self) -> list[str]:
        return sorted(n for n, kids in self.children.items() if kids)


@dataclass
class SourceSpec:
    name: str
    kind: str  # flat | bilevel | hierarchical
    class_names: dict[int, str]
    images_per_class: dict[int, int]
    split_classes: dict[str, list[int]]
    superclasses: dict[str, list[tuple[str, list[int]]]] = field(default_factory=dict)  # bilevel
    hierarchy: dict[str, Hierarchy] = field(default_factory=dict)  # hierarchical
    file_pattern: str = "{}.tfrecords"

    def classes(self, split: str) -> list[int]:
        if split not in SPLITS:
            raise SpecError(f"split '{split}' is not one of {', '.join(SPLITS)}.")
        return self.split_classes[split]

    def to_json(self) -> dict:
        """The official JSON layout (flat sources; what our converter writes)."""
        if self.kind != "flat":
            raise SpecError("only flat specifications are written by the converter.")
        counts = {s.upper(): len(self.split_classes[s]) for s in SPLITS}
        return {"name": self.name, "classes_per_split": counts,
                "images_per_class": {str(k): v for k, v in self.images_per_class.items()},
                "class_names": {str(k): v for k, v in self.class_names.items()}, "path": "",
                "file_pattern": self.file_pattern, "__class__": "DatasetSpecification"}


def _int_keys(d: dict) -> dict[int, object]:
    return {int(k): v for k, v in d.items()}


def _contiguous(counts: dict[str, int]) -> dict[str, list[int]]:
    out, start = {}, 0
    for s in SPLITS:
        n = int(counts.get(s.upper(), 0))
        out[s] = list(range(start, start + n))
        start += n
    return out


def parse_spec(raw: dict, where: str = "dataset_spec.json") -> SourceSpec:
    try:
        kind = raw["__class__"]
        name, names = raw["name"], _int_keys(raw["class_names"])
        pattern = raw.get("file_pattern", "{}.tfrecords")
        if kind == "DatasetSpecification":
            return SourceSpec(name, "flat", names, _int_keys(raw["images_per_class"]),
                              _contiguous(raw["classes_per_split"]), file_pattern=pattern)
        if kind == "BiLevelDatasetSpecification":
            sup_counts = _int_keys(raw["classes_per_superclass"])
            sup_names = _int_keys(raw["superclass_names"])
            sup_splits = _contiguous(raw["superclasses_per_split"])
            first = {}
            start = 0
            for s in sorted(sup_counts):
                first[s] = start
                start += sup_counts[s]
            superclasses = {split: [(sup_names[s], list(range(first[s], first[s] + sup_counts[s]))) for s in sups]
                            for split, sups in sup_splits.items()}
            split_classes = {split: [c for _, cs in sups for c in cs] for split, sups in superclasses.items()}
            return SourceSpec(name, "bilevel", names, _int_keys(raw["images_per_class"]), split_classes,
                              superclasses=superclasses, file_pattern=pattern)
        if kind == "HierarchicalDatasetSpecification":
            wn_to_class = {wn: c for c, wn in names.items()}
            hierarchy, split_classes, images = {}, {}, {}
            for split in SPLITS:
                nodes = raw["split_subgraphs"][split.upper()]
                children = {n["wn_id"]: list(n["children_ids"]) for n in nodes}
                leaves = {wn: wn_to_class[wn] for wn, kids in children.items() if not kids}
                hierarchy[split] = Hierarchy(children, leaves)
                split_classes[split] = sorted(leaves.values())
                counts = raw["images_per_class"][split.upper()]
                images.update({wn_to_class[wn]: int(counts[wn]) for wn in leaves})
            return SourceSpec(name, "hierarchical", names, images, split_classes, hierarchy=hierarchy,
                              file_pattern=pattern)
    except (KeyError, TypeError, ValueError) as e:
        raise SpecError(f"{where} is not a valid Meta-Dataset dataset spec (missing or bad {e}).") from None
    raise SpecError(f"{where}: unknown spec kind '{raw.get('__class__')}'.")


def load_spec(path: str | Path) -> SourceSpec:
    path = Path(path)
    if path.is_dir():
        path = path / "dataset_spec.json"
    if not path.is_file():
        raise SpecError(f"{path} not found: each source folder needs the dataset_spec.json that Meta-Dataset's "
                        "converter (or ring-md-convert) writes beside its records.")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SpecError(f"{path} is not valid JSON ({e}).") from None
    return parse_spec(raw, str(path))


def official_spec(name: str) -> SourceSpec:
    return load_spec(OFFICIAL_SPECS / f"{name}_dataset_spec.json")
