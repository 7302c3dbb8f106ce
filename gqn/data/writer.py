"""Writing dataset directories (see ``gqn.data.format``) shard by shard.

Every file, the manifest included, is written under a temporary name in its final folder and
then moved into place with ``os.replace``, so a killed writer never leaves a truncated file under
a final name. Shard files can be written by worker processes (``write_shard_files``); one
process owns the manifest (``DatasetWriter``) and registers each shard once its files are
complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gqn.checks import check_int
from gqn.data.format import (
    _MANIFEST,
    FORMAT_NAME,
    FORMAT_VERSION,
    SPLITS,
    WRITER_LOCK,
    DatasetBusyError,
    PathLike,
    _check_opened_shard,
    _check_positive_int,
    _check_record,
    _check_split_name,
    _load_manifest,
    _ManifestView,
    _shard_stem,
    _verify_record,
)
from gqn.fileio import (
    atomic_write,
    lock_directory,
    remove_partial_files,
    sha256,
)
from gqn.viewpoint import POSE_DIM

LOCK_NAME = WRITER_LOCK


def _lock_for_writing(root: Path) -> BinaryIO:
    """An exclusive lock on ``root``'s lock file, held while the returned file is open; raises
    :class:`DatasetBusyError` naming the holder when another process has it."""
    return lock_directory(root, LOCK_NAME, DatasetBusyError)


def changes(old: Any, new: Any, name: str = "") -> list[str]:
    """What differs between two JSON-like values, one short phrase per leaf ("meta.scenes
    changed from 32 to 40"), long values cut to 60 characters."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [phrase for key in sorted(old.keys() | new.keys(), key=str)
                if old.get(key) != new.get(key)
                for phrase in changes(old.get(key), new.get(key),
                                      f"{name}.{key}" if name else str(key))]

    def short(value: Any) -> str:
        text = "nothing" if value is None else repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    return [f"{name} changed from {short(old)} to {short(new)}"]


def _set_shards(entry: dict[str, Any], shards: list[dict[str, Any]]) -> None:
    """Make ``shards`` (sorted by index) a split's manifest entry, with its scene count."""
    entry["shards"] = sorted(shards, key=lambda r: r["index"])
    entry["scenes"] = sum(r["scenes"] for r in shards)


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
    index = check_int(index, "shard index")
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


class DatasetWriter(_ManifestView):
    """Writes a dataset directory shard by shard; reopening an existing one resumes it.

    Args:
        path: dataset directory (created if missing).
        image_size: H == W of every image.
        views: V, views per scene.
        meta: free JSON-serialisable dict saved in the manifest (e.g. the generator config).

    If ``path/manifest.json`` exists it is loaded and must agree on image_size, views and meta
    (ValueError naming the differing fields); its shards are kept, and the ``*.tmp`` files a
    killed writer left are deleted. One process owns the manifest: workers call
    ``write_shard_files`` and this writer calls ``add_shard``.
    """

    def __init__(
        self, path: PathLike, image_size: int, views: int, meta: dict[str, Any] | None = None
    ) -> None:
        self._root = Path(path)
        image_size = _check_positive_int(image_size, "image_size", "DatasetWriter")
        views = _check_positive_int(views, "views", "DatasetWriter")
        meta = _normalise_meta(meta)
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_for_writing(self._root)
        try:
            self._open(image_size, views, meta)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the directory's write lock (also released when the process ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, image_size: int, views: int, meta: dict[str, Any]) -> None:
        if (self._root / _MANIFEST).exists():
            manifest = _load_manifest(self._root)
            ours = {"image_size": image_size, "views": views, "meta": meta}
            differ = [k for k, v in ours.items() if manifest[k] != v]
            if differ:
                details = "; ".join(changes({k: manifest[k] for k in differ},
                                            {k: ours[k] for k in differ}))
                raise ValueError(
                    f"{self._root / _MANIFEST} disagrees with this writer on "
                    f"{', '.join(differ)} ({details}): a dataset keeps the settings it was "
                    "begun with; write the new one to another directory"
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
        for split in SPLITS:
            self._manifest["splits"].setdefault(split, {"scenes": 0, "shards": []})
        for folder in (self._root, *(self._root / split for split in SPLITS)):
            remove_partial_files(folder)  # left by a killed writer; this one holds the lock
        self._write_manifest()

    def plan(self, shards: dict[str, int]) -> None:
        """Record how many shards each split will hold once written (``{split: count}``):
        until they are all registered, readers refuse the dataset as unfinished, so a
        writer stopped half-way never passes for a whole dataset."""
        for split, count in shards.items():
            _check_split_name(split)
            check_int(count, f"planned shards of split {split!r}", at_least=0)
        self._manifest["planned_shards"] = dict(shards)
        self._write_manifest()

    def shards(self, split: str) -> int:
        """Shards registered so far in ``split``."""
        entry = self._manifest["splits"].get(split)
        return 0 if entry is None else len(entry["shards"])

    def scenes(self, split: str) -> int:
        """Scenes registered so far in ``split`` (0 for a split with no shards)."""
        entry = self._manifest["splits"].get(split)
        return 0 if entry is None else int(entry["scenes"])

    def forget_corrupt_shards(self) -> list[tuple[str, int, str]]:
        """Unregister every shard whose files are missing or whose SHA-256 differs from the
        manifest's (reading each shard file once), so that the caller writes it again;
        returns ``(split, index, reason)`` of each."""
        found = []
        for split, entry in self._manifest["splits"].items():
            kept = []
            for record in entry["shards"]:
                try:
                    _verify_record(self._root, record)
                    kept.append(record)
                except (ValueError, FileNotFoundError) as error:
                    found.append((split, int(record["index"]), str(error)))
            _set_shards(entry, kept)
        if found:
            self._write_manifest()
        return found

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
        _set_shards(entry, [r for r in entry["shards"] if r["index"] != record["index"]]
                    + [record])
        self._write_manifest()

    def _write_manifest(self) -> None:
        final = self._root / _MANIFEST
        data = _to_json_bytes(self._manifest, "manifest", indent=1)
        atomic_write(final, lambda f: f.write(data))
