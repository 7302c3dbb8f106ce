"""Multi-view scene datasets on disk: writing shards, reading scenes, sampling GQN batches.

A dataset is a directory::

    DIR/manifest.json
    DIR/<split>/<index:05d>.images.npy   uint8   [S, V, H, W, 3]   (plain .npy, memory-mappable)
    DIR/<split>/<index:05d>.poses.npy    float32 [S, V, 5]          raw poses (x, y, z, yaw, pitch)
    DIR/<split>/<index:05d>.truth.json   optional JSON list of S per-scene ground-truth dicts

Every file, the manifest included, is written under a temporary name in its final folder and
then moved into place with ``os.replace``, so a killed writer never leaves a truncated file under
a final name. The manifest lists each split's shards (sorted by index) with their SHA-256 sums.
"""

from __future__ import annotations

import copy
import json
import operator
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from gqn.fileio import atomic_write, sha256
from gqn.viewpoint import POSE_DIM, VIEWPOINT_DIM, pose_to_viewpoint

FORMAT_NAME = "gqn-rl-scenes"
FORMAT_VERSION = 1

_MANIFEST = "manifest.json"
_DEFAULT_SPLITS = ("train", "test")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------
# Batches


@dataclass(frozen=True, eq=False)
class Batch:
    """One GQN training batch: K context views and one query view per scene.

    Images are uint8 CHW (the model scales them to [0, 1]); viewpoints are the 7-D
    ``(x, y, z, cos yaw, sin yaw, cos pitch, sin pitch)``.
    """

    context_x: torch.Tensor
    """Context images, uint8 ``[B, K, 3, H, W]``."""
    context_v: torch.Tensor
    """Context viewpoints, float32 ``[B, K, 7]``."""
    query_x: torch.Tensor
    """Query images, uint8 ``[B, 3, H, W]``."""
    query_v: torch.Tensor
    """Query viewpoints, float32 ``[B, 7]``."""

    def __post_init__(self) -> None:
        cx, cv, qx, qv = (tuple(t.shape) for t in self._tensors())
        if len(cx) != 5 or cx[2] != 3:
            raise ValueError(f"context_x must be [B, K, 3, H, W], got shape {cx}")
        b, k, _, h, w = cx
        expected = {
            "context_v": ((b, k, VIEWPOINT_DIM), cv),
            "query_x": ((b, 3, h, w), qx),
            "query_v": ((b, VIEWPOINT_DIM), qv),
        }
        for name, (want, got) in expected.items():
            if want != got:
                raise ValueError(f"{name} must be {want} to match context_x {cx}, got {got}")

    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.context_x, self.context_v, self.query_x, self.query_v

    @property
    def batch_size(self) -> int:
        """Number of scenes B."""
        return int(self.context_x.shape[0])

    @property
    def context_size(self) -> int:
        """Number of context views K."""
        return int(self.context_x.shape[1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Return a copy of the batch on ``device`` (dtypes unchanged)."""
        cx, cv, qx, qv = (t.to(device, non_blocking=non_blocking) for t in self._tensors())
        return Batch(context_x=cx, context_v=cv, query_x=qx, query_v=qv)


# --------------------------------------------------------------------------------------------
# Small helpers shared by the writer and the reader


def _json_default(obj: Any) -> Any:
    """Let ``json`` write numpy scalars and arrays found in meta or truth dicts."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _to_json_bytes(obj: Any, what: str, indent: int | None = None) -> bytes:
    """JSON of ``obj``; without ``indent`` Python's fast C encoder writes it."""
    try:
        return json.dumps(obj, default=_json_default, allow_nan=False, indent=indent).encode()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be JSON-serialisable (no NaN/inf): {err}") from err


def _normalise_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    """The meta dict as it reads back from JSON (tuples become lists, numpy scalars numbers)."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    return json.loads(_to_json_bytes(meta, "meta"))


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_positive_int(value: Any, field: str, where: str) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{where}: field {field!r} must be a positive integer, got {value!r}")
    return int(value)


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
    index = record["index"]
    if not _is_int(index) or index < 0:
        raise ValueError(f"{where}.index must be a non-negative integer, got {index!r}")
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
    if not _is_int(version):
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
    """Open a shard's two arrays and check dtypes and shapes against the manifest."""
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
            raise ValueError(f"{path}: SHA-256 mismatch (manifest {expected}, file {actual})")


# --------------------------------------------------------------------------------------------
# Writing


def _check_shard_arrays(
    images: np.ndarray,
    poses: np.ndarray,
    truth: list[dict[str, Any]] | None,
    image_size: int | None,
    views: int | None,
) -> np.ndarray:
    """Validate one shard's arrays; return the poses as float32 ``[S, V, 5]``."""
    images = np.asanyarray(images)
    v = "V" if views is None else str(views)
    hw = "H, W" if image_size is None else f"{image_size}, {image_size}"
    want = f"uint8 [S, {v}, {hw}, 3]"
    shape = tuple(images.shape)
    if (
        images.dtype != np.uint8
        or len(shape) != 5
        or shape[4] != 3
        or shape[0] < 1
        or shape[2] != shape[3]
        or (views is not None and shape[1] != views)
        or (image_size is not None and shape[2] != image_size)
    ):
        raise ValueError(
            f"images must be {want} (square, at least one scene), got {images.dtype} {shape}"
        )
    s, v_count = shape[:2]
    poses_arr = np.asanyarray(poses)
    if poses_arr.dtype.kind not in "fiu":
        raise ValueError(f"poses must be real numbers (cast to float32), got {poses_arr.dtype}")
    if tuple(poses_arr.shape) != (s, v_count, POSE_DIM):
        raise ValueError(
            f"poses must have shape {(s, v_count, POSE_DIM)} to match images {shape}, "
            f"got {tuple(poses_arr.shape)}"
        )
    poses32 = poses_arr.astype(np.float32)
    if not np.isfinite(poses32).all():
        raise ValueError(f"poses {tuple(poses_arr.shape)} contain NaN or inf (as float32)")
    if truth is not None:
        if not isinstance(truth, list) or len(truth) != s:
            n = len(truth) if isinstance(truth, list) else type(truth).__name__
            raise ValueError(f"truth must be a list of {s} dicts (one per scene), got {n}")
        for i, t in enumerate(truth):
            if not isinstance(t, dict):
                raise ValueError(f"truth[{i}] must be a dict, got {type(t).__name__}")
    return poses32


def write_shard_files(
    path: PathLike,
    split: str,
    index: int,
    images: np.ndarray,
    poses: np.ndarray,
    truth: list[dict[str, Any]] | None = None,
    *,
    image_size: int | None = None,
    views: int | None = None,
) -> dict[str, Any]:
    """Atomically write one shard's files and return its manifest record; the manifest is untouched.

    Safe to call from worker processes (one index per call); register the returned record with
    ``DatasetWriter.add_shard`` in the process that owns the manifest.

    Args:
        path: dataset directory.
        split: split folder, e.g. ``"train"``.
        index: shard index (non-negative); files are named ``{index:05d}.*``.
        images: uint8 ``[S, V, H, W, 3]``, H == W.
        poses: raw poses ``[S, V, 5]`` (stored as float32).
        truth: optional list of S per-scene ground-truth dicts (JSON-serialisable).
        image_size, views: if given, the shapes must match them.
    """
    _check_split_name(split)
    if not _is_int(index) or index < 0:
        raise ValueError(f"shard index must be a non-negative integer, got {index!r}")
    index = int(index)
    poses32 = _check_shard_arrays(images, poses, truth, image_size, views)
    images = np.ascontiguousarray(images)
    truth_bytes = None if truth is None else _to_json_bytes(truth, f"truth of shard {index}")

    root = Path(path)
    (root / split).mkdir(parents=True, exist_ok=True)
    stem = _shard_stem(split, index)
    record: dict[str, Any] = {
        "index": index,
        "scenes": int(images.shape[0]),
        "images": f"{stem}.images.npy",
        "poses": f"{stem}.poses.npy",
        "truth": None if truth_bytes is None else f"{stem}.truth.json",
        "sha256": {},
    }
    payloads: list[tuple[str, Callable[[BinaryIO], None]]] = [
        ("images", lambda f: np.save(f, images, allow_pickle=False)),
        ("poses", lambda f: np.save(f, poses32, allow_pickle=False)),
    ]
    if truth_bytes is not None:
        payloads.append(("truth", lambda f: f.write(truth_bytes)))
    for kind, write in payloads:
        final = root / record[kind]
        atomic_write(final, write)
        record["sha256"][kind] = sha256(final)
    return record


class DatasetWriter:
    """Writes a dataset directory shard by shard; reopening an existing one resumes it.

    Args:
        path: dataset directory (created if missing).
        image_size: H == W of every image.
        views: V, views per scene.
        meta: free JSON-serialisable dict saved in the manifest (e.g. the generator config).

    If ``path/manifest.json`` exists it is loaded and must agree on image_size, views and meta
    (ValueError naming the differing fields); its shards are kept. One process owns the
    manifest: workers call ``write_shard_files`` and this writer calls ``add_shard``.
    """

    def __init__(
        self, path: PathLike, image_size: int, views: int, meta: dict[str, Any] | None = None
    ) -> None:
        self._root = Path(path)
        image_size = _check_positive_int(image_size, "image_size", "DatasetWriter")
        views = _check_positive_int(views, "views", "DatasetWriter")
        meta = _normalise_meta(meta)
        self._root.mkdir(parents=True, exist_ok=True)
        if (self._root / _MANIFEST).exists():
            manifest = _load_manifest(self._root)
            ours = {"image_size": image_size, "views": views, "meta": meta}
            differ = [k for k, v in ours.items() if manifest[k] != v]
            if differ:
                details = "; ".join(
                    f"{k}: manifest {manifest[k]!r}, writer {ours[k]!r}" for k in differ
                )
                raise ValueError(
                    f"{self._root / _MANIFEST} disagrees with this writer on "
                    f"{', '.join(differ)} ({details})"
                )
            self._manifest = manifest
        else:
            self._manifest = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "image_size": image_size,
                "views": views,
                "meta": meta,
                "splits": {},
            }
        for split in _DEFAULT_SPLITS:
            self._manifest["splits"].setdefault(split, {"scenes": 0, "shards": []})
        self._write_manifest()

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
        """A copy of the manifest's free ``meta`` dict."""
        return copy.deepcopy(self._manifest["meta"])

    def scenes(self, split: str) -> int:
        """Scenes registered so far in ``split`` (0 for a split with no shards)."""
        entry = self._manifest["splits"].get(split)
        return 0 if entry is None else int(entry["scenes"])

    def has_shard(self, split: str, index: int) -> bool:
        """True if shard ``index`` of ``split`` is in the manifest and all its files exist."""
        record = self._find(split, index)
        if record is None:
            return False
        rels = [record["images"], record["poses"]] + ([record["truth"]] if record["truth"] else [])
        return all((self._root / rel).is_file() for rel in rels)

    def write_shard(
        self,
        split: str,
        index: int,
        images: np.ndarray,
        poses: np.ndarray,
        truth: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write shard ``index`` of ``split`` and register it (replacing a shard of that index).

        images: uint8 ``[S, V, H, W, 3]``; poses: ``[S, V, 5]``; truth: S dicts or None.
        """
        record = write_shard_files(
            self._root, split, index, images, poses, truth,
            image_size=self.image_size, views=self.views,
        )
        self._register(split, record)

    def add_shard(self, split: str, record: dict[str, Any]) -> None:
        """Register a record returned by ``write_shard_files`` and rewrite the manifest.

        The files must exist and match this dataset's image_size and views; checksums are
        taken from the record (``SceneDataset(..., verify=True)`` rechecks them).
        """
        _check_split_name(split)
        record = _check_record(record, f"shard record for split {split!r}")
        _check_opened_shard(self._root, record, self.image_size, self.views)
        self._register(split, record)

    def _find(self, split: str, index: int) -> dict[str, Any] | None:
        entry = self._manifest["splits"].get(split)
        if entry is None:
            return None
        return next((r for r in entry["shards"] if r["index"] == index), None)

    def _register(self, split: str, record: dict[str, Any]) -> None:
        entry = self._manifest["splits"].setdefault(split, {"scenes": 0, "shards": []})
        shards = [r for r in entry["shards"] if r["index"] != record["index"]] + [record]
        shards.sort(key=lambda r: r["index"])
        entry["shards"] = shards
        entry["scenes"] = sum(r["scenes"] for r in shards)
        self._write_manifest()

    def _write_manifest(self) -> None:
        final = self._root / _MANIFEST
        data = _to_json_bytes(self._manifest, "manifest", indent=1)
        atomic_write(final, lambda f: f.write(data), tmp=final.with_name(_MANIFEST + ".tmp"))


# --------------------------------------------------------------------------------------------
# Reading


class SceneDataset:
    """Read-only view of one split of a dataset directory, memory-mapped shard by shard.

    Args:
        path: dataset directory holding ``manifest.json``.
        split: ``"train"``, ``"test"`` or another split listed in the manifest.
        verify: also recompute every shard file's SHA-256 and fail on a mismatch.

    ``scene(i)`` gives uint8 ``[V, H, W, 3]`` images and float32 ``[V, 5]`` raw poses;
    ``sample_batch`` gives GQN training batches.
    """

    def __init__(self, path: PathLike, split: str = "train", verify: bool = False) -> None:
        self._root = Path(path)
        self._manifest = _load_manifest(self._root)
        splits = self._manifest["splits"]
        if split not in splits:
            raise ValueError(
                f"{self._root / _MANIFEST}: unknown split {split!r}; available: {sorted(splits)}"
            )
        self._split = split
        self._records: list[dict[str, Any]] = splits[split]["shards"]
        counts = [r["scenes"] for r in self._records]
        self._offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])  # [shards + 1]
        self._truth: dict[int, list[dict[str, Any]] | None] = {}
        self._open_shards()
        if verify:
            self.verify()

    def _open_shards(self) -> None:
        opened = [
            _check_opened_shard(self._root, r, self.image_size, self.views) for r in self._records
        ]
        self._images: list[np.ndarray] = [im for im, _ in opened]
        self._poses: list[np.ndarray] = [po for _, po in opened]

    def __getstate__(self) -> dict[str, Any]:
        # Pickle (e.g. to DataLoader workers) without copying the memory-mapped arrays.
        state = self.__dict__.copy()
        state["_images"] = state["_poses"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open_shards()

    def verify(self) -> None:
        """Recompute SHA-256 of every shard file of this split; ValueError naming a bad file."""
        for record in self._records:
            _verify_record(self._root, record)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return (
            f"SceneDataset({str(self._root)!r}, split={self._split!r}, scenes={len(self)}, "
            f"views={self.views}, image_size={self.image_size})"
        )

    @property
    def path(self) -> Path:
        """The dataset directory."""
        return self._root

    @property
    def split(self) -> str:
        """The split this object reads."""
        return self._split

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

    def _locate(self, i: int) -> tuple[int, int]:
        """Global scene index (negative counts from the end) -> (shard, index in shard)."""
        n = len(self)
        j = operator.index(i)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"scene index {i} out of range for split {self._split!r} ({n} scenes)")
        shard = int(np.searchsorted(self._offsets, j, side="right")) - 1
        return shard, j - int(self._offsets[shard])

    def scene(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Scene ``i``: images uint8 ``[V, H, W, 3]`` and raw poses float32 ``[V, 5]`` (copies)."""
        shard, local = self._locate(i)
        return np.array(self._images[shard][local]), np.array(self._poses[shard][local])

    def truth(self, i: int) -> dict[str, Any] | None:
        """Ground-truth dict of scene ``i``, or None if its shard has no truth file."""
        shard, local = self._locate(i)
        if shard not in self._truth:
            rel = self._records[shard]["truth"]
            self._truth[shard] = None if rel is None else self._load_truth(shard, rel)
        truth = self._truth[shard]
        return None if truth is None else copy.deepcopy(truth[local])

    def _load_truth(self, shard: int, rel: str) -> list[dict[str, Any]]:
        path = _resolve(self._root, rel, "truth")
        try:
            truth = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise FileNotFoundError(f"truth shard file {path} is missing") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"truth shard file {path} is not valid JSON: {err}") from err
        n = self._records[shard]["scenes"]
        if not isinstance(truth, list) or len(truth) != n:
            got = len(truth) if isinstance(truth, list) else type(truth).__name__
            raise ValueError(f"truth shard file {path} must hold a list of {n} dicts, got {got}")
        return truth

    def sample_batch(
        self, batch_size: int, rng: np.random.Generator, max_context: int | None = None
    ) -> Batch:
        """Sample a GQN batch: B scenes with replacement, one K in 1..max_context per batch.

        For each scene a random permutation of its V views gives K context views and the next
        one as query (never a context view). All randomness comes from ``rng``.

        Returns a Batch: context_x uint8 ``[B, K, 3, H, W]``, context_v float32 ``[B, K, 7]``,
        query_x uint8 ``[B, 3, H, W]``, query_v float32 ``[B, 7]``.
        """
        n, v, size = len(self), self.views, self.image_size
        if n == 0:
            raise ValueError(f"split {self._split!r} of {self._root} has no scenes to sample")
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if v < 2:
            raise ValueError(f"sampling needs at least 2 views per scene, {self._root} has {v}")
        if max_context is None:
            max_context = v - 1
        elif not _is_int(max_context) or not 1 <= max_context <= v - 1:
            raise ValueError(f"max_context must be in 1..{v - 1} (views - 1), got {max_context!r}")

        b = int(batch_size)
        scenes = rng.integers(0, n, size=b)  # [B]
        k = int(rng.integers(1, int(max_context) + 1))
        order = rng.permuted(np.tile(np.arange(v), (b, 1)), axis=1)[:, : k + 1]  # [B, K+1]

        shard = np.searchsorted(self._offsets, scenes, side="right") - 1  # [B]
        local = scenes - self._offsets[shard]  # [B]
        context_x = np.empty((b, k, 3, size, size), dtype=np.uint8)
        query_x = np.empty((b, 3, size, size), dtype=np.uint8)
        poses = np.empty((b, k + 1, POSE_DIM), dtype=np.float32)
        for s in np.unique(shard):
            rows = np.flatnonzero(shard == s)
            scene_idx = local[rows][:, None]  # [b_s, 1]
            views_idx = order[rows]  # [b_s, K+1]
            images = self._images[s][scene_idx, views_idx]  # [b_s, K+1, H, W, 3]
            context_x[rows] = images[:, :k].transpose(0, 1, 4, 2, 3)
            query_x[rows] = images[:, k].transpose(0, 3, 1, 2)
            poses[rows] = self._poses[s][scene_idx, views_idx]
        viewpoints = pose_to_viewpoint(poses)  # [B, K+1, 7] float32
        return Batch(
            context_x=torch.from_numpy(context_x),
            context_v=torch.from_numpy(np.ascontiguousarray(viewpoints[:, :k])),
            query_x=torch.from_numpy(query_x),
            query_v=torch.from_numpy(np.ascontiguousarray(viewpoints[:, k])),
        )
