"""The on-disk dataset format: its manifest, its shard files and the checks that read them.

A dataset is a directory::

    DIR/manifest.json
    DIR/<split>/<index:05d>.images.npy   uint8   [S, V, H, W, 3]   (plain .npy, memory-mappable)
    DIR/<split>/<index:05d>.poses.npy    float32 [S, V, 5]          raw poses (x, y, z, yaw, pitch)
    DIR/<split>/<index:05d>.truth.json   optional JSON list of S per-scene ground-truth dicts

The manifest lists each split's shards (sorted by index) with their SHA-256 sums. Every check
here fails with an error that names the file and the field at fault.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gqn.checks import check_int, is_int
from gqn.fileio import DirectoryBusyError, lock_holder, sha256
from gqn.viewpoint import POSE_DIM

FORMAT_NAME = "gqn-rl-scenes"
FORMAT_VERSION = 1

SPLITS = ("train", "test")
"""The default split names: every new dataset has them, in this order (possibly empty)."""

_MANIFEST = "manifest.json"
WRITER_LOCK = ".writer.lock"
"""The file in a dataset directory whose lock a writer holds; it names the holder."""


class DatasetBusyError(DirectoryBusyError):
    """Another process is writing the dataset directory."""
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")

PathLike = str | os.PathLike


def _check_positive_int(value: Any, field: str, where: str) -> int:
    return check_int(value, f"{where}: field {field!r}", at_least=1)


def _check_split_name(split: str) -> None:
    if not isinstance(split, str) or not _SPLIT_NAME.fullmatch(split):
        raise ValueError(f"split name must match [A-Za-z0-9_-]+, got {split!r}")


def _shard_stem(split: str, index: int) -> str:
    return f"{split}/{index:05d}"


def _resolve(root: Path, rel: str, field: str) -> Path:
    """A shard file path from the manifest, refused if it points outside the dataset."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{root / _MANIFEST}: {field} must be a path inside the dataset: {rel!r}")
    return root / p


def _check_record(record: Any, where: str) -> dict[str, Any]:
    """Validate one shard record and return a clean copy with exactly the manifest's keys."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be a dict, got {type(record).__name__}")
    for key in ("index", "scenes", "images", "poses", "sha256"):
        if key not in record:
            raise ValueError(f"{where} is missing field {key!r}")
    index = check_int(record["index"], f"{where}.index")
    scenes = _check_positive_int(record["scenes"], "scenes", where)
    for key in ("images", "poses"):
        if not isinstance(record[key], str):
            raise ValueError(f"{where}.{key} must be a relative path string, got {record[key]!r}")
    truth = record.get("truth")
    if truth is not None and not isinstance(truth, str):
        raise ValueError(f"{where}.truth must be a relative path string or null, got {truth!r}")
    sha = record["sha256"]
    if not isinstance(sha, dict) or not all(isinstance(v, str) for v in sha.values()):
        raise ValueError(f"{where}.sha256 must map file kinds to hex digests, got {sha!r}")
    unknown = set(sha) - {"images", "poses", "truth"}
    if unknown or not {"images", "poses"} <= set(sha):
        raise ValueError(f"{where}.sha256 must have keys images, poses [, truth]: {sorted(sha)}")
    return {
        "index": int(index),
        "scenes": scenes,
        "images": record["images"],
        "poses": record["poses"],
        "truth": truth,
        "sha256": dict(sha),
    }


def _load_manifest(root: Path) -> dict[str, Any]:
    """Read and validate ``root/manifest.json``; every error names the file and the field."""
    path = root / _MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no dataset manifest at {path}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(manifest).__name__}")
    fmt = manifest.get("format")
    if fmt != FORMAT_NAME:
        raise ValueError(f"{path}: field 'format' must be {FORMAT_NAME!r}, got {fmt!r}")
    version = manifest.get("version")
    if not is_int(version):
        raise ValueError(f"{path}: field 'version' must be an integer, got {version!r}")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: field 'version' is {version}, this reader reads version {FORMAT_VERSION}"
        )
    _check_positive_int(manifest.get("image_size"), "image_size", str(path))
    _check_positive_int(manifest.get("views"), "views", str(path))
    manifest.setdefault("meta", {})
    if not isinstance(manifest["meta"], dict):
        raise ValueError(f"{path}: field 'meta' must be an object, got {manifest['meta']!r}")
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        raise ValueError(f"{path}: field 'splits' must be an object, got {splits!r}")
    planned = manifest.get("planned_shards", {})
    if not isinstance(planned, dict) or not all(
            isinstance(k, str) and is_int(v) and v >= 0 for k, v in planned.items()):
        raise ValueError(f"{path}: field 'planned_shards' must map split names to shard "
                         f"counts, got {planned!r}")
    for name, entry in splits.items():
        where = f"{path}: splits.{name}"
        if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list):
            raise ValueError(f"{where} must be an object with a 'shards' list")
        shards = [_check_record(r, f"{where}.shards[{i}]") for i, r in enumerate(entry["shards"])]
        indices = [r["index"] for r in shards]
        if indices != sorted(set(indices)):
            raise ValueError(f"{where}.shards must be sorted by unique index, got {indices}")
        total = sum(r["scenes"] for r in shards)
        if entry.get("scenes") != total:
            raise ValueError(
                f"{where}.scenes is {entry.get('scenes')!r} but its shards hold {total} scenes"
            )
        splits[name] = {"scenes": total, "shards": shards}
    return manifest


def _check_readable(root: Path, manifest: dict[str, Any]) -> None:
    """Refuse to read a dataset that is being written (another process holds its writer's
    lock) or whose writer stopped before it wrote every shard it planned, naming the writer
    or the split and counts."""
    holder = lock_holder(root, WRITER_LOCK)
    if holder is not None:
        raise DatasetBusyError(f"{root} is being written by {holder}: wait for it to finish "
                                 "(a dataset is read once it is whole)")
    for split, planned in manifest.get("planned_shards", {}).items():
        entry = manifest["splits"].get(split, {"shards": [], "scenes": 0})
        if len(entry["shards"]) < planned:
            raise ValueError(f"{root / _MANIFEST}: unfinished: {len(entry['shards'])} of the "
                             f"{planned} shards of the {split} split are written "
                             f"({entry['scenes']} scenes); its writer stopped before the end: "
                             "run the same command again to finish it")


def _open_npy(path: Path, kind: str) -> np.ndarray:
    """Memory-map one ``.npy`` shard file; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{kind} shard file {path} is missing")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{kind} shard file {path} is not a readable .npy file: {err}") from err


def _check_opened_shard(
    root: Path, record: dict[str, Any], image_size: int, views: int
) -> tuple[np.ndarray, np.ndarray]:
    """Open a shard's two arrays and check dtypes and shapes against the manifest.

    Returns the memory-mapped images uint8 ``[S, V, H, W, 3]`` and poses float32 ``[S, V, 5]``.
    """
    images_path = _resolve(root, record["images"], "images")
    poses_path = _resolve(root, record["poses"], "poses")
    images = _open_npy(images_path, "images")
    poses = _open_npy(poses_path, "poses")
    s = record["scenes"]
    for path, arr, dtype, shape in (
        (images_path, images, np.uint8, (s, views, image_size, image_size, 3)),
        (poses_path, poses, np.float32, (s, views, POSE_DIM)),
    ):
        if arr.dtype != dtype or arr.shape != shape:
            raise ValueError(
                f"{path}: expected {np.dtype(dtype)} {shape} as listed in the manifest, "
                f"got {arr.dtype} {arr.shape}"
            )
    if record["truth"] is not None:
        truth_path = _resolve(root, record["truth"], "truth")
        if not truth_path.is_file():
            raise FileNotFoundError(f"truth shard file {truth_path} is missing")
    return images, poses


def _verify_record(root: Path, record: dict[str, Any]) -> None:
    """Recompute a shard's SHA-256 sums; raise ValueError naming the file on mismatch."""
    for kind, expected in record["sha256"].items():
        rel = record.get(kind)
        if rel is None:
            raise ValueError(
                f"{root / _MANIFEST}: shard {record['index']} has a {kind} checksum, no {kind} file"
            )
        path = _resolve(root, rel, kind)
        if not path.is_file():
            raise FileNotFoundError(f"{kind} shard file {path} is missing")
        actual = sha256(path)
        if actual != expected:
            raise ValueError(f"{path}: SHA-256 mismatch (manifest {expected}, file {actual}); "
                             "a dataset of gqn-rl data generate is repaired by running the same "
                             "command again")


class _ManifestView:
    """The properties a loaded manifest answers, shared by ``DatasetWriter`` and ``SceneDataset``.

    A subclass sets ``_root`` (the dataset directory) and ``_manifest`` (its manifest dict, as
    ``_load_manifest`` returns it).
    """

    _root: Path
    _manifest: dict[str, Any]

    @property
    def path(self) -> Path:
        """The dataset directory."""
        return self._root

    @property
    def image_size(self) -> int:
        """H == W of every image."""
        return int(self._manifest["image_size"])

    @property
    def views(self) -> int:
        """Views per scene V."""
        return int(self._manifest["views"])

    @property
    def meta(self) -> dict[str, Any]:
        """A copy of the manifest's free ``meta`` dict (e.g. the generator config)."""
        return copy.deepcopy(self._manifest["meta"])

    @property
    def content_sha256(self) -> str:
        """SHA-256 of the manifest's content (its JSON with sorted keys, without the writer's
        plan): sizes, meta and every shard's SHA-256 sums, so it names the dataset's bytes,
        wherever it lies."""
        content = {k: v for k, v in self._manifest.items() if k != "planned_shards"}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
