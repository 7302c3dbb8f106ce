"""Reading one split of a dataset directory (see ``gqn.data.format``): scenes and batches."""

from __future__ import annotations

import copy
import json
import operator
from pathlib import Path
from typing import Any

import numpy as np

from gqn.checks import check_int, is_int
from gqn.data.batch import Batch, _sample_batch
from gqn.data.format import (
    _MANIFEST,
    PathLike,
    _check_opened_shard,
    _check_readable,
    _load_manifest,
    _ManifestView,
    _resolve,
    _verify_record,
)


class SceneDataset(_ManifestView):
    """Read-only view of one split of a dataset directory, memory-mapped shard by shard.

    A dataset another process is writing, or whose writer stopped before it wrote every
    shard it planned, is refused (naming the writer, or the split and its counts).

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
        _check_readable(self._root, self._manifest)
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
        state["_images"] = state["_poses"] = state["_masks"] = None
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
    def split(self) -> str:
        """The split this object reads."""
        return self._split

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

    @property
    def masks_path(self) -> Path:
        """Where this split's masks of the scenes' objects live: ``DIR/<split>.masks.npy``,
        bool ``[N, V, H, W]`` (written by ``gqn-rl data masks``)."""
        return self._root / f"{self._split}.masks.npy"

    def masks(self) -> np.ndarray | None:
        """The objects' masks of every scene and view, bool ``[N, V, H, W]`` (memory-mapped),
        or None when the split has none. Raises ValueError naming the file when its shape or
        dtype does not fit the split."""
        path = self.masks_path
        if not path.is_file():
            return None
        if getattr(self, "_masks", None) is None:
            try:
                masks = np.load(path, mmap_mode="r")
            except ValueError as error:
                raise ValueError(f"{path}: not a masks file ({error})") from None
            want = (len(self), self.views, self.image_size, self.image_size)
            if masks.dtype != np.bool_ or masks.shape != want:
                raise ValueError(f"{path}: masks must be bool {list(want)} for this split, got "
                                 f"{masks.dtype} {list(masks.shape)}")
            self._masks = masks
        return self._masks

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
        n, v = len(self), self.views
        if n == 0:
            raise ValueError(f"split {self._split!r} of {self._root} has no scenes to sample")
        check_int(batch_size, "batch_size", at_least=1)
        if v < 2:
            raise ValueError(f"sampling needs at least 2 views per scene, {self._root} has {v}")
        if max_context is None:
            max_context = v - 1
        elif not is_int(max_context) or not 1 <= max_context <= v - 1:
            raise ValueError(f"max_context must be in 1..{v - 1} (views - 1), got {max_context!r}")
        return _sample_batch(self._images, self._poses, self._offsets, batch_size, max_context,
                             rng, self.masks())
