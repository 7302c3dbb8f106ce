"""GQN training batches and how they are drawn from a dataset's memory-mapped shards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gqn.viewpoint import POSE_DIM, VIEWPOINT_DIM, pose_to_viewpoint


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
    query_mask: torch.Tensor | None = None
    """Where the query views show the scene's objects, bool ``[B, H, W]``, when the dataset
    has masks (:meth:`SceneDataset.masks_path`); None otherwise."""

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
        if self.query_mask is not None:
            expected["query_mask"] = ((b, h, w), tuple(self.query_mask.shape))
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
        mask = None if self.query_mask is None else self.query_mask.to(device)
        return Batch(context_x=cx, context_v=cv, query_x=qx, query_v=qv, query_mask=mask)


def _sample_batch(
    images: Sequence[np.ndarray],
    poses: Sequence[np.ndarray],
    offsets: np.ndarray,
    batch_size: int,
    max_context: int,
    rng: np.random.Generator,
    masks: np.ndarray | None = None,
) -> Batch:
    """Draw a GQN batch from shards: B scenes with replacement, one K in 1..max_context.

    For each scene a random permutation of its V views gives K context views and the next
    one as query (never a context view). All randomness comes from ``rng``. The arguments are
    checked by the caller (``SceneDataset.sample_batch``).

    Args:
        images: per shard, uint8 ``[S_i, V, H, W, 3]`` (memory-mapped), at least one shard.
        poses: per shard, raw poses float32 ``[S_i, V, 5]``.
        offsets: int64 ``[shards + 1]``, the first global scene index of each shard, then
            the number of scenes (at least 1).
        batch_size: B >= 1.
        max_context: the largest K, in 1..V-1.
        rng: the generator of every random choice.
        masks: the objects' masks of every scene, bool ``[N, V, H, W]``, or None.

    Returns a Batch: context_x uint8 ``[B, K, 3, H, W]``, context_v float32 ``[B, K, 7]``,
    query_x uint8 ``[B, 3, H, W]``, query_v float32 ``[B, 7]``.
    """
    n = int(offsets[-1])
    _, v, size = images[0].shape[:3]
    b = int(batch_size)
    scenes = rng.integers(0, n, size=b)  # [B]
    k = int(rng.integers(1, int(max_context) + 1))
    order = rng.permuted(np.tile(np.arange(v), (b, 1)), axis=1)[:, : k + 1]  # [B, K+1]

    shard = np.searchsorted(offsets, scenes, side="right") - 1  # [B]
    local = scenes - offsets[shard]  # [B]
    context_x = np.empty((b, k, 3, size, size), dtype=np.uint8)
    query_x = np.empty((b, 3, size, size), dtype=np.uint8)
    view_poses = np.empty((b, k + 1, POSE_DIM), dtype=np.float32)
    for s in np.unique(shard):
        rows = np.flatnonzero(shard == s)
        scene_idx = local[rows][:, None]  # [b_s, 1]
        views_idx = order[rows]  # [b_s, K+1]
        shard_images = images[s][scene_idx, views_idx]  # [b_s, K+1, H, W, 3]
        context_x[rows] = shard_images[:, :k].transpose(0, 1, 4, 2, 3)
        query_x[rows] = shard_images[:, k].transpose(0, 3, 1, 2)
        view_poses[rows] = poses[s][scene_idx, views_idx]
    viewpoints = pose_to_viewpoint(view_poses)  # [B, K+1, 7] float32
    query_mask = None if masks is None else torch.from_numpy(
        np.asarray(masks[scenes, order[:, k]], dtype=bool))  # [B, H, W]
    return Batch(
        context_x=torch.from_numpy(context_x),
        context_v=torch.from_numpy(np.ascontiguousarray(viewpoints[:, :k])),
        query_x=torch.from_numpy(query_x),
        query_v=torch.from_numpy(np.ascontiguousarray(viewpoints[:, k])),
        query_mask=query_mask,
    )
