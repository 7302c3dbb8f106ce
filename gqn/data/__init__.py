"""Multi-view scene datasets on disk: writing shards, reading scenes, sampling GQN batches.

- ``gqn.data.format``: the directory layout, its manifest and their checks; ``SPLITS``.
- ``gqn.data.writer``: ``write_shard_files`` (safe in worker processes) and ``DatasetWriter``.
- ``gqn.data.dataset``: ``SceneDataset``, one split read through memory maps.
- ``gqn.data.batch``: ``Batch``, the GQN training batch ``SceneDataset.sample_batch`` draws.
"""

from __future__ import annotations

from gqn.data.batch import Batch
from gqn.data.dataset import SceneDataset
from gqn.data.format import FORMAT_NAME, FORMAT_VERSION, SPLITS, PathLike
from gqn.data.writer import DatasetBusyError, DatasetWriter, write_shard_files

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SPLITS",
    "Batch",
    "DatasetBusyError",
    "DatasetWriter",
    "PathLike",
    "SceneDataset",
    "write_shard_files",
]
