"""A source's images, class by class: Meta-Dataset records (the official format) or image folders.

- records: ``<root>/<source>/dataset_spec.json`` and ``<root>/<source>/{class_id}.tfrecords``;
- folders: ``<root>/<source>/<class name>/<image>``; the spec is ``<root>/<source>/dataset_spec.json``
  if present, else the official spec of that source name (class names matched to folder names), else
  every folder becomes a test class.
"""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from meta_dataset.spec import OFFICIAL_SPECS, SourceSpec, SpecError, load_spec
from meta_dataset.tfrecord import RecordError, RecordFile, decode_example

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm"}


class Source:
    def __init__(self, root: str | Path, name: str, cache_dir: str | Path | None = None):
        self.root, self.name, self.cache_dir = Path(root) / name, name, cache_dir
        if not self.root.is_dir():
            raise SpecError(f"source '{name}' not found: {self.root} does not exist; --records must hold one folder "
                            "per source (the converted records, or <class>/<image> folders).")
        self.mode = "records" if any(self.root.glob("*.tfrecords")) else "folders"
        self.spec = self._spec()

    def _spec(self) -> SourceSpec:
        if (self.root / "dataset_spec.json").is_file() or self.mode == "records":
            return load_spec(self.root / "dataset_spec.json")
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not folders:
            raise SpecError(f"{self.root} holds neither *.tfrecords nor class folders.")
        official = OFFICIAL_SPECS / f"{self.name}_dataset_spec.json"
        if official.is_file():
            spec = load_spec(official)
            missing = [n for n in spec.class_names.values() if n not in set(folders)]
            if missing:
                raise SpecError(f"{self.root}: folders for {len(missing)} of the official {self.name} classes are "
                                f"missing (e.g. '{missing[0]}').")
            self._folder_of = {c: self.root / n for c, n in spec.class_names.items()}
        else:
            names = dict(enumerate(folders))
            spec = SourceSpec(self.name, "flat", names, {}, {"train": [], "valid": [], "test": list(names)})
            self._folder_of = {c: self.root / n for c, n in names.items()}
        spec.images_per_class = {c: len(self._folder_images(c)) for c in spec.class_names}
        return spec

    def _folder_images(self, class_id: int) -> list[Path]:
        return sorted(p for p in self._folder_of[class_id].iterdir() if p.suffix.lower() in IMAGE_EXTS)

    def class_images(self, class_id: int) -> list[Image.Image]:
        """Every image of a class, in file/record order, as RGB."""
        if self.mode == "records":
            path = self.root / self.spec.file_pattern.format(class_id)
            rf = RecordFile(path, self.cache_dir)
            if len(rf) != self.spec.images_per_class[class_id]:
                raise RecordError(f"{path} holds {len(rf)} records but dataset_spec.json says "
                                  f"{self.spec.images_per_class[class_id]}; convert the source again.")
            blobs = [(f"{path}#{i}", decode_example(rf.read(i))[0]) for i in range(len(rf))]
        else:
            blobs = [(str(p), p.read_bytes()) for p in self._folder_images(class_id)]
        out = []
        for where, blob in blobs:
            try:
                out.append(Image.open(io.BytesIO(blob)).convert("RGB"))
            except (UnidentifiedImageError, OSError) as e:
                raise RecordError(f"{where} is not a decodable image ({e}).") from None
        return out
