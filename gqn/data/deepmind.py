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
them into viewpoints. Neither TensorFlow nor protobuf is needed: ``gqn.data.tfrecord`` reads the
TFRecord framing (with its CRC32C checks) and the few protobuf wire-format rules an Example uses.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
from tqdm import tqdm

from gqn.checks import check_int
from gqn.data import SPLITS, DatasetWriter, PathLike, write_shard_files
from gqn.data.tfrecord import CorruptRecordError, _count_records, _records, parse_example
from gqn.viewpoint import POSE_DIM

SOURCE = "deepmind-gqn-datasets"
"""``meta["source"]`` of an imported dataset."""


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

    splits = {s: tfrecords(src / s) for s in SPLITS if (src / s).is_dir()}
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
    of src>, "scene": "deepmind/<name of src>"}``: a GQN pretrained on it records that scene
    family, which no environment of this project shows. Shards already registered in ``out``
    are kept, so a killed import run again writes the missing shards only; a shard is
    registered only once its files are complete.
    """
    src, out = Path(src), Path(out)
    check_int(workers, "workers", at_least=1)
    if scenes_per_shard is not None:
        check_int(scenes_per_shard, "scenes_per_shard (or None)", at_least=1)
    splits = _find_splits(src)
    name = src.resolve().name
    size, views, reference = _dataset_shape(src, splits, skip_corrupt)
    meta: dict[str, Any] = {"source": SOURCE, "dataset": name, "scene": f"deepmind/{name}"}
    if scenes_per_shard is not None:
        meta["scenes_per_shard"] = scenes_per_shard
    with DatasetWriter(out, image_size=size, views=views, meta=meta) as writer:
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
                    tasks.append(_Task(split, index, str(path), start, stop, str(out), size,
                                       views, reference, skip_corrupt))
                    index += 1
        writer.forget_corrupt_shards()  # imported again below
        writer.plan({split: sum(t.split == split for t in tasks) for split in splits})
        pending = [t for t in tasks if not writer.has_shard(t.split, t.index)]
        report = ImportReport(files=len({t.path for t in pending}), scenes=0,
                              shards_kept=len(tasks) - len(pending))

        bar = tqdm(total=len(tasks), initial=report.shards_kept, desc=f"import {name}",
                   unit="shard", disable=not progress, dynamic_ncols=True)
        try:
            if workers == 1 or len(pending) <= 1:
                _register(writer, map(_import_shard, pending), report, bar)
            else:
                context = multiprocessing.get_context("spawn")
                with context.Pool(min(workers, len(pending))) as pool:
                    _register(writer, pool.imap_unordered(_import_shard, pending), report, bar)
        finally:
            bar.close()
            report.skipped.sort()
        # Every shard was tried: one whose records were all skipped as corrupt has none.
        writer.plan({split: writer.shards(split) for split in splits})
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
