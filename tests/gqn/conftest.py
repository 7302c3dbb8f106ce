from pathlib import Path

import numpy as np
import pytest

from gqn.data import DatasetWriter


def write_synthetic_dataset(path: Path, size: int = 16, views: int = 5, scenes: int = 16,
                            shard: int = 8, seed: int = 0) -> Path:
    """Scenes of one random colour, shaded by the camera's yaw: a tiny multi-view world."""
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(path, image_size=size, views=views, meta={"scene": "synthetic"})
    for split, count in (("train", scenes), ("test", shard)):
        for index in range(count // shard):
            colour = rng.integers(0, 256, (shard, 1, 1, 1, 3))
            poses = rng.uniform(-1, 1, (shard, views, 5)).astype(np.float32)
            shade = (0.5 + 0.4 * np.cos(poses[..., 3]))[..., None, None, None]
            images = np.broadcast_to(colour * shade, (shard, views, size, size, 3))
            writer.write_shard(split, index, images.astype(np.uint8), poses)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_synthetic_dataset(tmp_path / "data")
