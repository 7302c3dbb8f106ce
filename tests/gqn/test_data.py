"""Tests for gqn.data: the dataset format, its writer, its reader and batch sampling."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gqn.data import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Batch,
    DatasetBusyError,
    DatasetWriter,
    SceneDataset,
    write_shard_files,
)
from gqn.viewpoint import pose_to_viewpoint

SIZE = 8
VIEWS = 5
META = {"scene": "shepard_metzler_5", "seed": 3, "sizes": (1, 2)}


def make_shard(
    scenes: int, first_id: int = 0, views: int = VIEWS, size: int = SIZE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Scenes whose pixels encode (view index, scene id); poses and truth random per scene.

    Returns images uint8 [S, V, size, size, 3], poses float32 [S, V, 5], truth (S dicts).
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(scenes, views, size, size, 3), dtype=np.uint8)
    images[..., 0] = np.arange(views, dtype=np.uint8)[None, :, None, None]
    images[..., 1] = np.arange(first_id, first_id + scenes, dtype=np.uint8)[:, None, None, None]
    poses = rng.uniform(-3, 3, size=(scenes, views, 5)).astype(np.float32)
    truth = [{"id": first_id + s, "pos": rng.normal(size=3).tolist()} for s in range(scenes)]
    return images, poses, truth


def make_dataset(root: Path, shard_sizes: tuple[int, ...] = (3, 2)) -> list[tuple]:
    """Write a train split with the given shard sizes (shard 1 has no truth) and a test split."""
    writer = DatasetWriter(root, image_size=SIZE, views=VIEWS, meta=META)
    shards, first = [], 0
    for index, n in enumerate(shard_sizes):
        images, poses, truth = make_shard(n, first_id=first, seed=index)
        truth_or_none = None if index == 1 else truth
        writer.write_shard("train", index, images, poses, truth_or_none)
        shards.append((images, poses, truth_or_none))
        first += n
    writer.write_shard("test", 0, *make_shard(2, first_id=100, seed=9))
    return shards


def test_round_trip_is_exact(tmp_path: Path) -> None:
    shards = make_dataset(tmp_path)
    ds = SceneDataset(tmp_path, split="train")
    assert len(ds) == 5
    assert (ds.image_size, ds.views) == (SIZE, VIEWS)
    assert ds.meta == {"scene": "shepard_metzler_5", "seed": 3, "sizes": [1, 2]}
    i = 0
    for images, poses, truth in shards:
        for s in range(images.shape[0]):
            got_images, got_poses = ds.scene(i)
            assert got_images.dtype == np.uint8 and got_poses.dtype == np.float32
            np.testing.assert_array_equal(got_images, images[s])
            np.testing.assert_array_equal(got_poses, poses[s])
            assert ds.truth(i) == (None if truth is None else truth[s])
            i += 1
    np.testing.assert_array_equal(ds.scene(-1)[0], shards[-1][0][-1])
    assert len(SceneDataset(tmp_path, split="test")) == 2
    restored = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(restored.scene(4)[0], ds.scene(4)[0])


def test_scene_out_of_range(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    ds = SceneDataset(tmp_path)
    for i in (5, -6):
        with pytest.raises(IndexError, match="out of range"):
            ds.scene(i)
    with pytest.raises(IndexError):
        ds.truth(5)


def test_manifest_contents_and_checksums(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, image_size=SIZE, views=VIEWS, meta=META)
    for index, n in ((2, 1), (0, 3)):  # out of order on purpose
        writer.write_shard("train", index, *make_shard(n, seed=index))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == FORMAT_NAME and manifest["version"] == FORMAT_VERSION
    assert (manifest["image_size"], manifest["views"]) == (SIZE, VIEWS)
    assert manifest["meta"]["seed"] == 3
    assert manifest["splits"]["test"] == {"scenes": 0, "shards": []}
    train = manifest["splits"]["train"]
    assert train["scenes"] == 4
    assert [r["index"] for r in train["shards"]] == [0, 2]
    record = train["shards"][0]
    assert record["scenes"] == 3
    assert record["images"] == "train/00000.images.npy"
    assert record["poses"] == "train/00000.poses.npy"
    assert record["truth"] == "train/00000.truth.json"
    for kind in ("images", "poses", "truth"):
        digest = hashlib.sha256((tmp_path / record[kind]).read_bytes()).hexdigest()
        assert record["sha256"][kind] == digest
    assert not list(tmp_path.rglob("*.tmp"))


def test_resume_keeps_existing_shards(tmp_path: Path) -> None:
    first = DatasetWriter(tmp_path, image_size=SIZE, views=VIEWS, meta=META)
    images0, poses0, _ = make_shard(3, seed=0)
    first.write_shard("train", 0, images0, poses0)
    first.close()  # as a process that ended: its lock is released
    second = DatasetWriter(tmp_path, image_size=SIZE, views=VIEWS, meta=dict(META))
    assert second.has_shard("train", 0)
    assert not second.has_shard("train", 1)
    second.write_shard("train", 1, *make_shard(2, first_id=3, seed=1))
    ds = SceneDataset(tmp_path)
    assert len(ds) == 5
    np.testing.assert_array_equal(ds.scene(0)[0], images0[0])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"image_size": SIZE * 2}, "image_size"),
        ({"views": VIEWS + 1}, "views"),
        ({"meta": {**META, "seed": 4}}, "meta"),
        ({"meta": None}, "meta"),
    ],
)
def test_resume_with_other_settings_names_the_field(
    tmp_path: Path, kwargs: dict[str, Any], field: str
) -> None:
    DatasetWriter(tmp_path, image_size=SIZE, views=VIEWS, meta=META)
    settings: dict[str, Any] = {"image_size": SIZE, "views": VIEWS, "meta": META, **kwargs}
    with pytest.raises(ValueError, match=field) as info:
        DatasetWriter(tmp_path, **settings)
    others = {"image_size", "views", "meta"} - {field}
    assert not any(f"on {other}" in str(info.value) for other in others)


def test_leftover_tmp_ignored_and_missing_shard_reported(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    (tmp_path / "train" / "00002.images.npy.1234.tmp").write_bytes(b"half a shard")
    (tmp_path / "manifest.json.tmp").write_text("{ truncated")
    writer = DatasetWriter(tmp_path, image_size=SIZE, views=VIEWS, meta=META)
    assert writer.has_shard("train", 0) and writer.has_shard("train", 1)
    assert not writer.has_shard("train", 2)
    assert len(SceneDataset(tmp_path)) == 5

    (tmp_path / "train" / "00001.poses.npy").unlink()
    assert not writer.has_shard("train", 1)
    with pytest.raises(FileNotFoundError, match="00001.poses.npy"):
        SceneDataset(tmp_path)
    # Rewriting the missing shard repairs the dataset.
    writer.write_shard("train", 1, *make_shard(2, first_id=3, seed=1))
    assert writer.has_shard("train", 1) and len(SceneDataset(tmp_path)) == 5


def test_verify_detects_corrupted_bytes(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    SceneDataset(tmp_path, verify=True).verify()  # clean data passes
    path = tmp_path / "train" / "00001.images.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one pixel: shape and dtype still fine
    path.write_bytes(bytes(data))
    ds = SceneDataset(tmp_path)  # without verify the header checks pass
    with pytest.raises(ValueError, match=r"00001\.images\.npy.*SHA-256"):
        ds.verify()
    with pytest.raises(ValueError, match=r"00001\.images\.npy"):
        SceneDataset(tmp_path, verify=True)
    SceneDataset(tmp_path, split="test", verify=True)  # other splits are not affected


def test_reader_rejects_shard_with_wrong_shape(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    np.save(tmp_path / "train" / "00000.images.npy", np.zeros((3, VIEWS, 4, 4, 3), np.uint8))
    expected = r"00000\.images\.npy.*\(3, 5, 8, 8, 3\).*\(3, 5, 4, 4, 3\)"
    with pytest.raises(ValueError, match=expected):
        SceneDataset(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda im, po, tr: (im.astype(np.float32), po, tr), "float32 (2, 5, 8, 8, 3)"),
        (lambda im, po, tr: (im[:, :, :4], po, tr), "(2, 5, 4, 8, 3)"),
        (lambda im, po, tr: (im[:, :4], po[:, :4], tr), "(2, 4, 8, 8, 3)"),
        (lambda im, po, tr: (im[..., 0], po, tr), "(2, 5, 8, 8)"),
        (lambda im, po, tr: (im, po[..., :3], tr), "(2, 5, 3)"),
        (lambda im, po, tr: (im, po[:1], tr), "(1, 5, 5)"),
        (lambda im, po, tr: (im, po.astype(str), tr), "<U"),
        (lambda im, po, tr: (im, po, tr[:1]), "list of 2 dicts"),
    ],
)
def test_writer_rejects_bad_arrays(tmp_path: Path, change: Any, message: str) -> None:
    writer = DatasetWriter(tmp_path, image_size=SIZE, views=VIEWS)
    images, poses, truth = change(*make_shard(2))
    with pytest.raises(ValueError, match=re.escape(message)):
        writer.write_shard("train", 0, images, poses, truth)
    assert not writer.has_shard("train", 0)
    assert not (tmp_path / "train").exists() or not any((tmp_path / "train").iterdir())


def test_missing_or_bad_manifest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "manifest.json"))):
        SceneDataset(tmp_path)
    make_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"unknown split 'valid'.*\['test', 'train'\]"):
        SceneDataset(tmp_path, split="valid")
    good = json.loads((tmp_path / "manifest.json").read_text())
    bad_fields = (("format", "tfrecord"), ("version", 2), ("image_size", 0), ("views", None))
    for field, value in bad_fields:
        (tmp_path / "manifest.json").write_text(json.dumps({**good, field: value}))
        with pytest.raises(ValueError, match=f"'{field}'"):
            SceneDataset(tmp_path)
    del good["format"]
    (tmp_path / "manifest.json").write_text(json.dumps(good))
    with pytest.raises(ValueError, match="'format'"):
        SceneDataset(tmp_path)


def test_worker_files_then_add_shard(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, image_size=SIZE, views=VIEWS)
    images, poses, truth = make_shard(2)
    record = write_shard_files(tmp_path, "train", 7, images, poses, truth)
    assert record["index"] == 7 and record["scenes"] == 2
    assert not writer.has_shard("train", 7)  # files written, manifest untouched
    assert len(SceneDataset(tmp_path)) == 0
    writer.add_shard("train", record)
    assert writer.has_shard("train", 7)
    ds = SceneDataset(tmp_path, verify=True)
    np.testing.assert_array_equal(ds.scene(1)[0], images[1])

    other = DatasetWriter(tmp_path / "other", image_size=SIZE, views=VIEWS + 1)
    wrong = write_shard_files(other.path, "train", 0, images, poses)
    with pytest.raises(ValueError, match=r"\(2, 6, 8, 8, 3\)"):
        other.add_shard("train", wrong)


def test_sample_batch_shapes_and_dtypes(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    batch = SceneDataset(tmp_path).sample_batch(6, np.random.default_rng(0), max_context=3)
    k = batch.context_size
    assert 1 <= k <= 3 and batch.batch_size == 6
    assert batch.context_x.shape == (6, k, 3, SIZE, SIZE) and batch.context_x.dtype == torch.uint8
    assert batch.context_v.shape == (6, k, 7) and batch.context_v.dtype == torch.float32
    assert batch.query_x.shape == (6, 3, SIZE, SIZE) and batch.query_x.dtype == torch.uint8
    assert batch.query_v.shape == (6, 7) and batch.query_v.dtype == torch.float32
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.query_x, batch.query_x)
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.query_x = batch.query_x  # type: ignore[misc]


def test_query_never_in_context_and_viewpoints_match_poses(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    ds = SceneDataset(tmp_path)
    rng = np.random.default_rng(1)
    for _ in range(20):
        batch = ds.sample_batch(8, rng)
        cx, qx = batch.context_x.numpy(), batch.query_x.numpy()
        for b in range(8):
            context_views = cx[b, :, 0, 0, 0].tolist()  # channel 0 holds the view index
            query_view = int(qx[b, 0, 0, 0])
            scene_id = int(qx[b, 1, 0, 0])  # channel 1 holds the scene id
            assert len(set(context_views)) == len(context_views)
            assert query_view not in context_views
            assert (cx[b, :, 1] == scene_id).all() and (qx[b, 1] == scene_id).all()
            images, poses = ds.scene(scene_id)
            np.testing.assert_array_equal(cx[b], images[context_views].transpose(0, 3, 1, 2))
            np.testing.assert_array_equal(qx[b], images[query_view].transpose(2, 0, 1))
            np.testing.assert_allclose(
                batch.context_v[b].numpy(), pose_to_viewpoint(poses[context_views]), rtol=1e-6
            )
            np.testing.assert_allclose(
                batch.query_v[b].numpy(), pose_to_viewpoint(poses[query_view]), rtol=1e-6
            )


def test_context_size_in_range_and_varies(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    ds = SceneDataset(tmp_path)
    rng = np.random.default_rng(2)
    sizes = {ds.sample_batch(2, rng, max_context=3).context_size for _ in range(40)}
    assert sizes <= {1, 2, 3} and len(sizes) > 1
    default = {ds.sample_batch(2, rng).context_size for _ in range(60)}
    assert default <= set(range(1, VIEWS)) and VIEWS - 1 in default
    for bad in (0, VIEWS):
        with pytest.raises(ValueError, match="max_context"):
            ds.sample_batch(2, rng, max_context=bad)


def test_same_seed_same_batches(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    ds = SceneDataset(tmp_path)

    def fields(batch: Batch) -> list[torch.Tensor]:
        return [batch.context_x, batch.context_v, batch.query_x, batch.query_v]

    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(3):
        for x, y in zip(fields(ds.sample_batch(4, a)), fields(ds.sample_batch(4, b)), strict=True):
            assert torch.equal(x, y)
    state = a.bit_generator.state
    first = ds.sample_batch(4, a)
    a.bit_generator.state = state
    again = ds.sample_batch(4, a)
    assert all(torch.equal(x, y) for x, y in zip(fields(first), fields(again), strict=True))


def test_a_writer_waits_out_a_reader_s_look_at_the_lock(tmp_path: Path) -> None:
    """A reader (lock_holder) holds the lock shared for a moment; a writer starting then
    waits for it instead of refusing, naming a holder that has finished."""
    import fcntl
    import threading

    from gqn.fileio import lock_directory

    lock_directory(tmp_path, "lock").close()  # an earlier writer, finished
    with open(tmp_path / "lock", "rb") as reader:
        fcntl.flock(reader, fcntl.LOCK_SH | fcntl.LOCK_NB)
        threading.Timer(0.3, fcntl.flock, (reader, fcntl.LOCK_UN)).start()
        lock_directory(tmp_path, "lock").close()


def test_readers_refuse_a_dataset_another_process_is_writing(tmp_path: Path) -> None:
    """A reader of a dataset that is still being written would train on part of it: the
    writer's lock (held by another process) refuses it, naming the writer; the writing
    process itself may read what it wrote."""
    make_dataset(tmp_path)
    with DatasetWriter(tmp_path, image_size=SIZE, views=VIEWS, meta=META):
        assert len(SceneDataset(tmp_path)) == 5  # this process holds the lock
    code = ("import sys, time; from gqn.data import DatasetWriter; "
            f"w = DatasetWriter(sys.argv[1], {SIZE}, {VIEWS}, {META!r}); print('ready', "
            "flush=True); time.sleep(60)")
    writer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        with pytest.raises(DatasetBusyError, match=rf"being written by pid {writer.pid} "):
            SceneDataset(tmp_path, "test")
    finally:
        writer.kill()
        writer.wait()
    assert len(SceneDataset(tmp_path)) == 5  # the lock went with the process


def test_readers_refuse_a_dataset_whose_writer_stopped_before_the_end(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, image_size=SIZE, views=VIEWS, meta=META)
    writer.plan({"train": 2, "test": 0})
    writer.write_shard("train", 0, *make_shard(3))
    writer.close()
    with pytest.raises(ValueError, match=r"manifest.json: unfinished: 1 of the 2 shards of the "
                                         r"train split are written \(3 scenes\)"):
        SceneDataset(tmp_path, "test")
    with DatasetWriter(tmp_path, image_size=SIZE, views=VIEWS, meta=META) as again:
        again.write_shard("train", 1, *make_shard(2, first_id=3, seed=1))
    assert len(SceneDataset(tmp_path)) == 5
    with pytest.raises(ValueError, match="planned shards"):
        again.plan({"train": -1})
