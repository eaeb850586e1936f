"""TFRecord files without TensorFlow: framing with masked CRC32C checks, an offset index, tf.train.Example.

A TFRecord file is a sequence of records: uint64 length (little endian), uint32 masked CRC32C of those
8 bytes, the data, uint32 masked CRC32C of the data.  Meta-Dataset's records hold a tf.train.Example
with ``image`` (encoded bytes) and ``label`` (int64).  The index (byte offset and length of every
record) is built on first use and saved beside the file, or in a cache folder when that is read-only;
it is rebuilt when the file's size or modification time changes.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import crc32c
import numpy as np

from pretrain.common import UserError

_MASK_DELTA = 0xA282EAD8


class RecordError(UserError):
    """A records file is missing, truncated or corrupted; the message names the file and the fix."""


def masked_crc(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def write_records(path: str | os.PathLike, payloads) -> int:
    """Write byte strings as a TFRecord file, atomically; returns the number of records."""
    from pretrain.io import atomic_path

    n = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for data in payloads:
            header = struct.pack("<Q", len(data))
            f.write(header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data)))
            n += 1
    return n


def scan_offsets(path: Path) -> np.ndarray:
    """(offset, length) of every record, verifying the length CRCs (a full scan, no data CRCs)."""
    rows, size = [], path.stat().st_size
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            header = f.read(12)
            if len(header) < 12:
                raise RecordError(f"{path} is truncated at byte {pos} (half a record header); convert the source "
                                  "again.")
            length, crc = struct.unpack("<QI", header)
            if masked_crc(header[:8]) != crc:
                raise RecordError(f"{path}: the record at byte {pos} has a corrupted length (CRC mismatch); "
                                  "convert the source again.")
            if pos + 16 + length > size:
                raise RecordError(f"{path} is truncated: the record at byte {pos} needs {length} bytes; convert "
                                  "the source again.")
            rows.append((pos + 12, length))
            pos += 16 + length
            f.seek(pos)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


class RecordFile:
    """Random access to the records of one file through its index."""

    def __init__(self, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise RecordError(f"records file {self.path} not found.")
        self.index = self._load_or_build_index(cache_dir)

    def _index_paths(self, cache_dir) -> list[Path]:
        paths = [self.path.with_name(self.path.name + ".index.json")]
        if cache_dir:
            digest = hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:16]
            paths.append(Path(cache_dir) / f"{self.path.stem}-{digest}.index.json")
        return paths

    def _load_or_build_index(self, cache_dir) -> np.ndarray:
        st = self.path.stat()
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        for p in self._index_paths(cache_dir):
            if p.is_file():
                try:
                    saved = json.loads(p.read_text())
                except json.JSONDecodeError:
                    continue
                if saved.get("stamp") == stamp:
                    return np.asarray(saved["records"], dtype=np.int64).reshape(-1, 2)
        index = scan_offsets(self.path)
        payload = json.dumps({"stamp": stamp, "records": index.tolist()})
        from pretrain.io import atomic_write_text

        for p in self._index_paths(cache_dir):
            try:
                atomic_write_text(p, payload)
                break
            except OSError:  # read-only records folder: try the cache folder
                continue
        return index

    def __len__(self) -> int:
        return len(self.index)

    def read(self, i: int) -> bytes:
        offset, length = (int(v) for v in self.index[i])
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(length + 4)
        if len(data) != length + 4:
            raise RecordError(f"{self.path} is truncated inside record {i}; convert the source again.")
        if masked_crc(data[:length]) != struct.unpack("<I", data[length:])[0]:
            raise RecordError(f"{self.path}: record {i} (byte {offset}) is corrupted (data CRC mismatch); "
                              "convert the source again.")
        return data[:length]

    def __iter__(self):
        for i in range(len(self)):
            yield self.read(i)


def encode_example(image: bytes, label: int) -> bytes:
    """A tf.train.Example with Meta-Dataset's two features."""
    from tfrecord import example_pb2

    ex = example_pb2.Example()
    ex.features.feature["image"].bytes_list.value.append(image)
    ex.features.feature["label"].int64_list.value.append(int(label))
    return ex.SerializeToString()


def decode_example(data: bytes) -> tuple[bytes, int]:
    from google.protobuf.message import DecodeError
    from tfrecord import example_pb2

    ex = example_pb2.Example()
    try:
        ex.ParseFromString(data)
        feats = ex.features.feature
        return feats["image"].bytes_list.value[0], int(feats["label"].int64_list.value[0])
    except (DecodeError, IndexError, KeyError) as e:
        raise RecordError(f"a record is not a Meta-Dataset tf.train.Example with 'image' and 'label' ({e}).") \
            from None
