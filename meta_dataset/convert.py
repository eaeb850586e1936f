"""ring-md-convert: write image sets into Meta-Dataset's own format (records + dataset_spec.json).

    ring-md-convert fashion_mnist -o data/meta_dataset          # Debian dataset-fashion-mnist
    ring-md-convert animal_mnist -o data/meta_dataset           # PyPI animal-mnist (pip install --no-deps)
    ring-md-convert synthetic -o data/meta_dataset              # the built-in procedural shapes
    ring-md-convert folder --from my_images/ --name birds -o data/meta_dataset   # <class>/<image> folders

Each class becomes ``{class_id}.tfrecords`` of tf.train.Example records (``image``: PNG bytes,
``label``: the class id), written atomically; ``dataset_spec.json`` is a flat DatasetSpecification.
Small converted sources put every class in the test split (``--split-counts`` changes that).
"""
from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from meta_dataset.spec import SourceSpec
from meta_dataset.tfrecord import encode_example, write_records
from pretrain.common import Registry, UserError, cli_main, command_parser
from pretrain.io import atomic_write_json


def _png(img) -> bytes:
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))).save(buf, format="PNG")
    return buf.getvalue()


def write_source(out_root: str | Path, name: str, images_by_class: dict[int, list], class_names: dict[int, str],
                 split_counts: tuple[int, int, int] | None = None) -> SourceSpec:
    """Writes <out_root>/<name>/{c}.tfrecords and dataset_spec.json; classes must be 0..n-1."""
    out = Path(out_root) / name
    ids = sorted(images_by_class)
    if ids != list(range(len(ids))):
        raise UserError(f"{name}: class ids must be 0..{len(ids) - 1}, got {ids[:5]}...; number the classes from 0.")
    n_train, n_valid, n_test = split_counts or (0, 0, len(ids))
    if n_train + n_valid + n_test != len(ids):
        raise UserError(f"--split-counts {n_train} {n_valid} {n_test} must add up to the {len(ids)} classes.")
    for c in ids:
        write_records(out / f"{c}.tfrecords", (encode_example(_png(im), c) for im in images_by_class[c]))
    spec = SourceSpec(name, "flat", dict(class_names), {c: len(images_by_class[c]) for c in ids},
                      {"train": ids[:n_train], "valid": ids[n_train:n_train + n_valid],
                       "test": ids[n_train + n_valid:]})
    atomic_write_json(out / "dataset_spec.json", spec.to_json())
    return spec


def _by_class(images, labels, max_per_class: int) -> dict[int, list]:
    out: dict[int, list] = {}
    for img, y in zip(images, labels):
        lst = out.setdefault(int(y), [])
        if len(lst) < max_per_class:
            lst.append(img)
    return dict(sorted(out.items()))


CONVERTER_REGISTRY = Registry("CONVERTER", key="ring-md-convert SOURCE", doc="""Image sets ring-md-convert writes
as Meta-Dataset sources.

A member is a function ``fn(max_per_class, root) -> (images_by_class, class_names)``: ``{class id: [images
(PIL or uint8 arrays)]}`` with ids 0..n-1, and ``{class id: name}``; ``root`` (``--from``) overrides the
default location or is required (folders).  Missing data raises a ``UserError`` naming what to install.""")


@CONVERTER_REGISTRY.register(name="fashion_mnist")
def load_fashion_mnist(max_per_class: int, root: str | None = None):
    from pretrain.data.idx import FASHION_CLASSES, FASHION_MNIST_DEFAULT, load_idx

    ds = load_idx(root or FASHION_MNIST_DEFAULT, "test")
    return _by_class(ds.images, ds.targets, max_per_class), dict(enumerate(FASHION_CLASSES))


@CONVERTER_REGISTRY.register(name="animal_mnist")
def load_animal_mnist(max_per_class: int, root: str | None = None):
    """PyPI animal-mnist's gzipped pickles, read without importing its module (it needs TensorFlow)."""
    import importlib.util

    from pretrain.common import NumpyOnlyUnpickler
    from pretrain.data.base import DatasetError

    spec = importlib.util.find_spec("animal_mnist")
    if spec is None and root is None:
        raise DatasetError("animal-mnist is not installed; pip install --no-deps animal-mnist (or pass --from DIR).")
    base = Path(root) if root else Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"

    def load(name):
        with gzip.open(base / name, "rb") as f:
            return np.asarray(NumpyOnlyUnpickler(f, encoding="bytes").load())
    images, labels = load("animal_data_version_3.gz"), load("animal_label_version_3.gz")
    classes = sorted(set(labels.tolist()))
    remap = {c: i for i, c in enumerate(classes)}
    return _by_class(images, [remap[int(y)] for y in labels], max_per_class), {i: f"animal_{c}" for c, i in
                                                                                 remap.items()}


@CONVERTER_REGISTRY.register(name="synthetic")
def load_synthetic(max_per_class: int, root: str | None = None):
    from pretrain.data.synthetic import CLASSES, SyntheticShapes

    ds = SyntheticShapes("test", size=max_per_class * len(CLASSES), image_size=32, seed=7)
    return _by_class((ds[i][0] for i in range(len(ds))), ds.targets, max_per_class), dict(enumerate(CLASSES))


@CONVERTER_REGISTRY.register(name="folder")
def load_folder(max_per_class: int, root: str | None = None):
    if not root or not Path(root).is_dir():
        raise UserError(f"--from {root}: give a folder of <class>/<image> subfolders.")
    classes = sorted(p for p in Path(root).iterdir() if p.is_dir())
    out = {}
    for i, d in enumerate(classes):
        files = sorted(p for p in d.iterdir() if p.is_file())[:max_per_class]
        out[i] = [Image.open(p).convert("RGB") for p in files]
    return out, {i: d.name for i, d in enumerate(classes)}


@cli_main("ring-md-convert")
def main(argv: list[str] | None = None) -> int:
    p = command_parser("ring-md-convert", __doc__, output="records root (one folder per source is written in it)",
                       output_required=True)
    p.add_argument("source", choices=CONVERTER_REGISTRY.names())
    p.add_argument("--name", default=None, help="source name (default: the builder's)")
    p.add_argument("--from", dest="src", default=None, help="input folder (folder; overrides default locations)")
    p.add_argument("--max-per-class", type=int, default=600)
    p.add_argument("--split-counts", type=int, nargs=3, metavar=("TRAIN", "VALID", "TEST"), default=None)
    args = p.parse_args(argv)
    images, names = CONVERTER_REGISTRY.get(args.source)(args.max_per_class, args.src)
    spec = write_source(args.output, args.name or args.source, images, names,
                        tuple(args.split_counts) if args.split_counts else None)
    print(f"[ring-md-convert] {spec.name}: {len(spec.class_names)} classes, {sum(spec.images_per_class.values())} "
          f"images -> {Path(args.output) / spec.name} ({json.dumps({k: len(v) for k, v in spec.split_classes.items()})})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
