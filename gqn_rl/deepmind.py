"""Importing DeepMind's official gqn-datasets (TFRecord files) into the gqn.data format.

The official datasets (github.com/deepmind/gqn-datasets) are folders of TFRecord files::

    <dataset>/train/001-of-900.tfrecord ...
    <dataset>/test/001-of-100.tfrecord ...

Each record is a serialised ``tf.train.Example`` with two features: ``frames``, a bytes_list
holding one JPEG per view, and ``cameras``, a float_list of 5 numbers per view, the raw pose
``(x, y, z, yaw, pitch)``. Datasets (frame size, views per scene): jaco (64, 11), mazes (84, 300),
rooms_free_camera_no_object_rotations (128, 10), rooms_free_camera_with_object_rotations
(128, 10), rooms_ring_camera (64, 10), shepard_metzler_5_parts (64, 15),
shepard_metzler_7_parts (64, 15). The importer reads sizes from the data, not from this list.

Raw poses are kept as they are: ``gqn.viewpoint.pose_to_viewpoint`` is the one place that turns
them into viewpoints. Neither TensorFlow nor protobuf is needed: this module reads the TFRecord
framing (with its CRC32C checks) and the few protobuf wire-format rules an Example uses.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import crc32c
import imageio.v3 as iio
import numpy as np
from tqdm import tqdm

from gqn.data import DatasetWriter, write_shard_files
from gqn.viewpoint import POSE_DIM

SOURCE = "deepmind-gqn-datasets"
"""``meta["source"]`` of an imported dataset."""

_HEADER = struct.Struct("<QI")  # data length, masked CRC32C of the 8 length bytes
_CRC = struct.Struct("<I")  # masked CRC32C of the data
_MASK_DELTA = 0xA282EAD8
_SPLITS = ("train", "test")

PathLike = str | os.PathLike


class CorruptRecordError(ValueError):
    """A TFRecord record that fails its CRC checks, is truncated, or does not decode.

    The message names the file, the record index (0-based) and what was wrong; the same
    are in the attributes ``path``, ``record`` and ``reason``.
    """

    def __init__(self, path: PathLike, record: int, reason: str) -> None:
        self.path, self.record, self.reason = str(path), int(record), reason
        super().__init__(f"{self.path}: record {self.record}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the three fields so the error survives a trip out of a worker process.
        return type(self), (self.path, self.record, self.reason)


# --------------------------------------------------------------------------------------------
# TFRecord framing


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC32C: ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` mod 2**32."""
    crc = crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _frames(f: BinaryIO, path: PathLike) -> Iterator[tuple[int, int]]:
    """Walk the record framing of an open file, checking each length header.

    Yields ``(record index, data length)`` with ``f`` positioned at the record's data; the
    caller may read from there (the walk seeks to the next header itself). Raises
    CorruptRecordError when a header is truncated, fails its CRC or announces more bytes
    than the file holds: nothing after it can be found.
    """
    size = os.fstat(f.fileno()).st_size
    offset, index = 0, 0
    while offset < size:
        f.seek(offset)
        header = f.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise CorruptRecordError(
                path, index, f"truncated: the file ends {len(header)} bytes into the "
                f"{_HEADER.size}-byte record header"
            )
        length, stored = _HEADER.unpack(header)
        computed = masked_crc32c(header[:8])
        if computed != stored:
            raise CorruptRecordError(
                path, index, f"the length header fails its CRC32C check "
                f"(stored 0x{stored:08x}, computed 0x{computed:08x})"
            )
        left = size - offset - _HEADER.size
        if length + _CRC.size > left:
            raise CorruptRecordError(
                path, index, f"truncated: the header announces {length} data bytes and a "
                f"{_CRC.size}-byte CRC, the file has {left} bytes left"
            )
        yield index, length
        offset += _HEADER.size + length + _CRC.size
        index += 1


def _records(
    f: BinaryIO, path: PathLike, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, bytes | None, str | None]]:
    """Records ``start <= index < stop`` of an open TFRecord file.

    Yields ``(index, data, None)`` for a record whose data passes its CRC and
    ``(index, None, reason)`` for one that does not (the framing is intact, so reading goes
    on). Framing damage raises CorruptRecordError (see ``_frames``). Records before ``start``
    are skipped by seeking, their data unchecked.
    """
    for index, length in _frames(f, path):
        if stop is not None and index >= stop:
            return
        if index < start:
            continue
        data = f.read(length)
        (stored,) = _CRC.unpack(f.read(_CRC.size))
        computed = masked_crc32c(data)
        if computed == stored:
            yield index, data, None
        else:
            yield index, None, (
                f"the data ({length} bytes) fails its CRC32C check "
                f"(stored 0x{stored:08x}, computed 0x{computed:08x})"
            )


def read_tfrecord(path: PathLike) -> Iterator[bytes]:
    """The records of one TFRecord file, in order, each checked against both of its CRCs.

    Raises CorruptRecordError (naming the file and the record index) at the first record that
    is truncated or fails a check; the records before it have been yielded.
    """
    with open(path, "rb") as f:
        for index, data, reason in _records(f, path):
            if data is None:
                raise CorruptRecordError(path, index, str(reason))
            yield data


def _count_records(path: Path) -> int:
    """Records in a file by its framing alone (data unchecked); a damaged header counts as one."""
    count = 0
    with open(path, "rb") as f:
        try:
            for _ in _frames(f, path):
                count += 1
        except CorruptRecordError:
            count += 1  # the record where reading stops; importing it reports the damage
    return count


# --------------------------------------------------------------------------------------------
# Protobuf wire format: just enough for tf.train.Example


def _varint(buf: memoryview, pos: int, end: int, where: str) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; return (value, next position)."""
    result = shift = 0
    while True:
        if pos >= end:
            raise ValueError(f"{where}: truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError(f"{where}: varint longer than 10 bytes")


def _fields(buf: memoryview, start: int, end: int, where: str) -> Iterator[tuple[int, int, Any]]:
    """The fields of one message in ``buf[start:end]`` as ``(number, wire type, value)``.

    value: the integer for a varint (wire type 0), else ``(begin, end)`` of the payload in
    ``buf`` (1: 8 bytes, 2: length-delimited, 5: 4 bytes). Groups (3, 4) are refused.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end, where)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError(f"{where}: field number 0 is not valid protobuf")
        if wire == 0:
            value, pos = _varint(buf, pos, end, f"{where}: field {number}")
            yield number, wire, value
            continue
        if wire == 2:
            size, pos = _varint(buf, pos, end, f"{where}: field {number} length")
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
        else:
            raise ValueError(f"{where}: field {number} has wire type {wire}, not readable here")
        if pos + size > end:
            raise ValueError(
                f"{where}: field {number} is truncated ({size} bytes announced, "
                f"{end - pos} left)"
            )
        yield number, wire, (pos, pos + size)
        pos += size


def _expect(wire: int, want: int, where: str, number: int) -> None:
    if wire != want:
        raise ValueError(f"{where}: field {number} has wire type {wire}, expected {want}")


def _signed64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def _parse_list(buf: memoryview, kind: int, span: tuple[int, int], where: str) -> list:
    """Values of a BytesList (kind 1), FloatList (2) or Int64List (3) message."""
    values: list = []
    for number, wire, value in _fields(buf, *span, where):
        if number != 1:
            continue  # unknown field
        if kind == 1:
            _expect(wire, 2, where, number)
            values.append(bytes(buf[value[0]:value[1]]))
        elif kind == 2 and wire == 2:  # packed floats
            begin, stop = value
            if (stop - begin) % 4:
                raise ValueError(f"{where}: packed floats take {stop - begin} bytes, "
                                 "not a multiple of 4")
            values.extend(np.frombuffer(buf[begin:stop], dtype="<f4").tolist())
        elif kind == 2:
            _expect(wire, 5, where, number)
            values.append(struct.unpack_from("<f", buf, value[0])[0])
        elif wire == 2:  # packed int64s
            pos, stop = value
            while pos < stop:
                item, pos = _varint(buf, pos, stop, where)
                values.append(_signed64(item))
        else:
            _expect(wire, 0, where, number)
            values.append(_signed64(value))
    return values


_KINDS = {1: "bytes_list", 2: "float_list", 3: "int64_list"}


def _parse_feature(
    buf: memoryview, span: tuple[int, int], where: str, merged: tuple[int, list] | None
) -> tuple[int, list] | None:
    """A Feature message as ``(kind, values)`` merged into ``merged`` (protobuf semantics:
    a repeated occurrence of the same list extends it, another list of the oneof replaces it)."""
    for number, wire, value in _fields(buf, *span, where):
        if number not in _KINDS:
            continue
        _expect(wire, 2, where, number)
        values = _parse_list(buf, number, value, f"{where}.{_KINDS[number]}")
        if merged is not None and merged[0] == number:
            merged[1].extend(values)
        else:
            merged = (number, values)
    return merged


def _parse_features(
    buf: memoryview, span: tuple[int, int], features: dict[str, tuple[int, list] | None]
) -> None:
    """Add the map entries of a Features message to ``features``."""
    where = "Example.features"
    for number, wire, value in _fields(buf, *span, where):
        if number != 1:
            continue
        _expect(wire, 2, where, number)
        key, feature = "", None
        for entry_number, entry_wire, entry_value in _fields(buf, *value, f"{where}.feature"):
            if entry_number == 1:
                _expect(entry_wire, 2, f"{where}.feature", entry_number)
                raw = bytes(buf[entry_value[0]:entry_value[1]])
                try:
                    key = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(f"{where}: feature name {raw!r} is not UTF-8") from err
            elif entry_number == 2:
                _expect(entry_wire, 2, f"{where}.feature", entry_number)
                feature = _parse_feature(
                    buf, entry_value, f"{where}.feature[{key!r}]", feature
                )
        features[key] = feature  # a later entry with the same key wins, as in a protobuf map


def parse_example(data: bytes) -> dict[str, list]:
    """Decode a serialised ``tf.train.Example`` into ``{feature name: values}``.

    A bytes_list gives ``bytes`` values, a float_list ``float`` (packed or not), an int64_list
    ``int``; a feature with no list set gives ``[]``. Unknown fields are skipped. Malformed
    input raises ValueError naming the message and field at fault.
    """
    buf = memoryview(data).cast("B")
    features: dict[str, tuple[int, list] | None] = {}
    for number, wire, value in _fields(buf, 0, len(buf), "Example"):
        if number == 1:
            _expect(wire, 2, "Example", number)
            _parse_features(buf, value, features)
    return {name: ([] if f is None else f[1]) for name, f in features.items()}


# --------------------------------------------------------------------------------------------
# Scenes


def decode_scene(example: Mapping[str, list]) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``[V, H, W, 3]`` and raw poses float32 ``[V, 5]`` of one parsed Example.

    ``frames`` must hold V JPEGs of one size and ``cameras`` 5 * V floats; anything else
    raises ValueError naming the field.
    """
    frames, cameras = example.get("frames"), example.get("cameras")
    for name, value in (("frames", frames), ("cameras", cameras)):
        if value is None:
            raise ValueError(f"the Example has no field {name!r}; it has {sorted(example)}")
    if not frames or not all(isinstance(x, bytes) for x in frames):
        raise ValueError("field 'frames' must be a non-empty bytes_list (one JPEG per view)")
    if not all(isinstance(x, float) for x in cameras):
        raise ValueError("field 'cameras' must be a float_list")
    views = len(frames)
    if len(cameras) != POSE_DIM * views:
        raise ValueError(
            f"field 'cameras' holds {len(cameras)} floats, but field 'frames' holds {views} "
            f"JPEGs and each view takes {POSE_DIM} floats (x, y, z, yaw, pitch): "
            f"{POSE_DIM * views} expected"
        )
    poses = np.asarray(cameras, dtype=np.float32).reshape(views, POSE_DIM)  # [V, 5]
    if not np.isfinite(poses).all():
        raise ValueError("field 'cameras' holds NaN or infinite values")
    images = []
    for i, jpeg in enumerate(frames):
        try:
            image = iio.imread(jpeg, plugin="pillow", mode="RGB")
        except Exception as err:  # Pillow raises several kinds for bad bytes
            raise ValueError(f"field 'frames'[{i}] is not a decodable JPEG: {err}") from err
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"field 'frames'[{i}] decodes to {image.dtype} {image.shape}, "
                "not uint8 [H, W, 3]"
            )
        if images and image.shape != images[0].shape:
            h, w = image.shape[:2]
            h0, w0 = images[0].shape[:2]
            raise ValueError(
                f"field 'frames'[{i}] is {h}x{w} but field 'frames'[0] is {h0}x{w0}; "
                "all views of a scene must share one size"
            )
        images.append(image)
    return np.stack(images), poses  # [V, H, W, 3], [V, 5]


def _scenes(
    path: Path, start: int = 0, stop: int | None = None,
    skipped: list[tuple[str, int, str]] | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Decoded scenes ``(record index, images, poses)`` of records ``start..stop`` of a file.

    A corrupt record (CRC, truncation or decoding) raises CorruptRecordError; if ``skipped``
    is a list it is appended there as ``(file, index, reason)`` instead. Damage to the framing
    ends the file: the records after it cannot be found.
    """
    try:
        with open(path, "rb") as f:
            for index, data, reason in _records(f, path, start, stop):
                if data is not None:
                    try:
                        images, poses = decode_scene(parse_example(data))
                    except ValueError as err:
                        reason = f"cannot decode the Example: {err}"
                    else:
                        yield index, images, poses
                        continue
                if skipped is None:
                    raise CorruptRecordError(path, index, str(reason))
                skipped.append((str(path), index, str(reason)))
    except CorruptRecordError as err:
        if skipped is None:
            raise
        skipped.append((err.path, err.record, f"{err.reason}; the rest of the file is lost"))


# --------------------------------------------------------------------------------------------
# Importing


@dataclass
class ImportReport:
    """What :func:`import_deepmind` did in one call (a resumed call counts its own work only)."""

    files: int
    """Input TFRecord files read (files whose shards were all registered before are not read)."""
    scenes: int
    """Scenes written."""
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    """Corrupt records skipped with ``skip_corrupt=True``: ``(file, record index, reason)``."""
    shards_written: int = 0
    """Shards written and registered."""
    shards_kept: int = 0
    """Shards already registered by an earlier call, left untouched."""

    @property
    def skipped_per_file(self) -> dict[str, int]:
        """Number of skipped records of each file that had any."""
        counts: dict[str, int] = {}
        for path, _, _ in self.skipped:
            counts[path] = counts.get(path, 0) + 1
        return counts


@dataclass(frozen=True)
class _Task:
    """One output shard: records ``start..stop`` of one input file (picklable for spawn)."""

    split: str
    index: int
    path: str
    start: int
    stop: int | None
    out: str
    image_size: int
    views: int
    reference: str
    skip_corrupt: bool


def _check_shape(path: PathLike, index: int, images: np.ndarray, size: int | None = None,
                 views: int | None = None, reference: str = "") -> None:
    """A scene must be square and, once the dataset's shape is known, agree with it."""
    v, h, w, _ = images.shape
    if h != w:
        raise ValueError(f"{path}: record {index}: frames are {h}x{w}; the dataset format "
                         "needs square frames")
    if size is not None and (v, h) != (views, size):
        raise ValueError(
            f"{path}: record {index}: {v} views of {h}x{w} frames, but the dataset has "
            f"{views} views of {size}x{size} frames (taken from {reference}); "
            "all records must agree"
        )


def _import_shard(task: _Task) -> tuple[str, dict[str, Any] | None, list[tuple[str, int, str]]]:
    """Worker: decode one shard's records and write its files atomically (manifest untouched).

    Returns (split, manifest record or None if no record was readable, skipped records).
    """
    skipped: list[tuple[str, int, str]] | None = [] if task.skip_corrupt else None
    images, poses = [], []
    for index, scene_images, scene_poses in _scenes(Path(task.path), task.start, task.stop,
                                                    skipped):
        _check_shape(task.path, index, scene_images, task.image_size, task.views,
                     task.reference)
        images.append(scene_images)
        poses.append(scene_poses)
    if skipped is None:
        skipped = []
    if not images and not skipped:  # only an empty file has no record at all in its range
        empty = CorruptRecordError(task.path, task.start, "the file holds no records (an empty "
                                   "or cut-short download?)")
        if not task.skip_corrupt:
            raise empty
        skipped.append((empty.path, empty.record, empty.reason))
    if not images:
        return task.split, None, skipped
    record = write_shard_files(task.out, task.split, task.index, np.stack(images),
                               np.stack(poses), image_size=task.image_size, views=task.views)
    return task.split, record, skipped


def _find_splits(src: Path) -> dict[str, list[Path]]:
    """``{split: sorted tfrecord files}`` from ``src/train``, ``src/test`` or ``src`` itself."""
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist or is not a folder")

    def tfrecords(folder: Path) -> list[Path]:
        return sorted(p for p in folder.glob("*.tfrecord") if p.is_file())

    splits = {s: tfrecords(src / s) for s in _SPLITS if (src / s).is_dir()}
    splits = {s: files for s, files in splits.items() if files}
    if not splits and tfrecords(src):
        splits = {"train": tfrecords(src)}
    if not splits:
        raise FileNotFoundError(
            f"no *.tfrecord files in {src / 'train'}, {src / 'test'} or {src}"
        )
    return splits


def _dataset_shape(
    src: Path, splits: dict[str, list[Path]], skip_corrupt: bool
) -> tuple[int, int, str]:
    """(image size, views, where they were read) from the first readable record."""
    for files in splits.values():
        for path in files:
            for index, images, _ in _scenes(path, skipped=[] if skip_corrupt else None):
                _check_shape(path, index, images)
                return int(images.shape[1]), int(images.shape[0]), f"{path} record {index}"
    raise ValueError(f"{src}: not one readable record in its {sum(map(len, splits.values()))} "
                     "tfrecord files")


def import_deepmind(
    src: PathLike,
    out: PathLike,
    *,
    skip_corrupt: bool = False,
    workers: int = 1,
    scenes_per_shard: int | None = None,
    progress: bool = True,
) -> ImportReport:
    """Import an official gqn-datasets folder into a gqn.data dataset directory.

    Args:
        src: a dataset folder holding ``train/`` and/or ``test/`` with ``*.tfrecord`` files,
            or a folder of ``*.tfrecord`` files (imported as split ``"train"``).
        out: dataset directory to write (resumed if it holds an earlier import of ``src``).
        skip_corrupt: skip records that fail a CRC check, are truncated or do not decode, and
            list them in the report, instead of raising CorruptRecordError.
        workers: processes that decode files (spawned; the calling process owns the manifest).
        scenes_per_shard: None for one shard per input file (shard index = the file's position
            in the sorted list of its split); N to cut each file into shards of N records,
            numbered consecutively in file order (recorded in ``meta``).
        progress: show a progress bar.

    Image size and views are read from the data; every record must agree (ValueError naming
    the file and record). ``meta`` is ``{"source": "deepmind-gqn-datasets", "dataset": <name
    of src>}``. Shards already registered in ``out`` are kept, so a killed import run again
    writes the missing shards only; a shard is registered only once its files are complete.
    """
    src, out = Path(src), Path(out)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if scenes_per_shard is not None and (
        isinstance(scenes_per_shard, bool) or not isinstance(scenes_per_shard, int)
        or scenes_per_shard < 1
    ):
        raise ValueError(f"scenes_per_shard must be None or a positive integer, "
                         f"got {scenes_per_shard!r}")
    splits = _find_splits(src)
    name = src.resolve().name
    size, views, reference = _dataset_shape(src, splits, skip_corrupt)
    meta: dict[str, Any] = {"source": SOURCE, "dataset": name}
    if scenes_per_shard is not None:
        meta["scenes_per_shard"] = scenes_per_shard
    writer = DatasetWriter(out, image_size=size, views=views, meta=meta)

    tasks: list[_Task] = []
    for split, files in splits.items():
        index = 0
        for path in files:
            if scenes_per_shard is None:
                ranges: list[tuple[int, int | None]] = [(0, None)]
            else:
                chunks = max(1, math.ceil(_count_records(path) / scenes_per_shard))
                ranges = [(c * scenes_per_shard, (c + 1) * scenes_per_shard)
                          for c in range(chunks)]
            for start, stop in ranges:
                tasks.append(_Task(split, index, str(path), start, stop, str(out), size, views,
                                   reference, skip_corrupt))
                index += 1
    pending = [t for t in tasks if not writer.has_shard(t.split, t.index)]
    report = ImportReport(files=len({t.path for t in pending}), scenes=0,
                          shards_kept=len(tasks) - len(pending))

    bar = tqdm(total=len(tasks), initial=report.shards_kept, desc=f"import {name}",
               unit="shard", disable=not progress, dynamic_ncols=True)
    try:
        if workers == 1 or len(pending) <= 1:
            _register(writer, map(_import_shard, pending), report, bar)
        else:
            with multiprocessing.get_context("spawn").Pool(min(workers, len(pending))) as pool:
                _register(writer, pool.imap_unordered(_import_shard, pending), report, bar)
    finally:
        bar.close()
        report.skipped.sort()
    return report


def _register(
    writer: DatasetWriter,
    results: Iterator[tuple[str, dict[str, Any] | None, list[tuple[str, int, str]]]],
    report: ImportReport,
    bar: tqdm,
) -> None:
    for split, record, skipped in results:
        report.skipped.extend(skipped)
        if record is not None:
            writer.add_shard(split, record)
            report.scenes += record["scenes"]
            report.shards_written += 1
        bar.update(1)
        bar.set_postfix(scenes=report.scenes, skipped=len(report.skipped), refresh=False)
