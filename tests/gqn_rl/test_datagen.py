import dataclasses
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from agents.cli import main
from envs.scenes import FAMILIES
from gqn.data import SceneDataset
from gqn_rl.datagen import GenerateConfig, contact_sheet, generate

CONFIG = GenerateConfig(scene="rooms_ring", scenes=6, test_scenes=2, views=4, size=16,
                        shard_size=2, seed=7)


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def test_generate_writes_both_splits_with_truth(tmp_path: Path) -> None:
    out = generate(CONFIG, tmp_path / "d", progress=False)
    train, test = SceneDataset(out, "train"), SceneDataset(out, "test", verify=True)
    assert (len(train), len(test), train.views, train.image_size) == (6, 2, 4, 16)
    images, poses = train.scene(5)
    assert images.shape == (4, 16, 16, 3) and poses.shape == (4, 5)
    assert train.truth(5)["objects"]
    assert train.meta["scene"] == "rooms_ring" and train.meta["seed"] == 7
    assert not np.array_equal(train.scene(0)[0], test.scene(0)[0])


@pytest.mark.slow  # 6 s: starts worker processes
def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    one = generate(CONFIG, tmp_path / "one", workers=1, progress=False)
    two = generate(CONFIG, tmp_path / "two", workers=2, progress=False)
    assert shard_bytes(one) == shard_bytes(two)
    other = generate(GenerateConfig(**{**CONFIG.__dict__, "seed": 8}), tmp_path / "other",
                     progress=False)
    assert shard_bytes(other) != shard_bytes(one)


def test_interrupted_run_finishes_only_the_missing_shards(tmp_path: Path) -> None:
    out = generate(CONFIG, tmp_path / "d", progress=False)
    complete = shard_bytes(out)
    manifest = json.loads((out / "manifest.json").read_text())
    lost = manifest["splits"]["train"]["shards"].pop(1)      # as if killed before registering
    manifest["splits"]["train"]["scenes"] -= lost["scenes"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / lost["images"]).unlink()
    (out / "train" / "00001.images.npy.123.tmp").write_bytes(b"half a shard")
    kept = out / manifest["splits"]["train"]["shards"][0]["images"]
    before = kept.stat().st_mtime_ns
    generate(CONFIG, out, progress=False)
    assert kept.stat().st_mtime_ns == before, "a finished shard was rendered again"
    assert shard_bytes(out) == complete, "a shard differs, or the killed writer's file is left"
    assert len(SceneDataset(out, "train", verify=True)) == 6


def test_resuming_with_another_config_is_refused(tmp_path: Path) -> None:
    generate(CONFIG, tmp_path / "d", progress=False)
    with pytest.raises(ValueError, match="meta"):
        generate(GenerateConfig(**{**CONFIG.__dict__, "seed": 1}), tmp_path / "d",
                 progress=False)


def test_resuming_after_the_family_changed_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    generate(GenerateConfig(**{**CONFIG.__dict__, "scenes": 2}), tmp_path / "d", progress=False)
    changed = dataclasses.replace(FAMILIES["rooms_ring"], ring_radius=2.5)
    monkeypatch.setitem(FAMILIES, "rooms_ring", changed)
    with pytest.raises(ValueError, match="ring_radius"):
        generate(CONFIG, tmp_path / "d", progress=False)


def test_bad_config_is_named() -> None:
    with pytest.raises(ValueError, match="unknown scene family 'kitchen'"):
        GenerateConfig(scene="kitchen", scenes=1)
    with pytest.raises(ValueError, match="views must be >= 2"):
        GenerateConfig(scene="arm", scenes=1, views=1)


def test_contact_sheet_tiles_scenes_and_views(tmp_path: Path) -> None:
    out = generate(CONFIG, tmp_path / "d", progress=False)
    sheet = contact_sheet(out, scenes=3, views=4)
    assert sheet.shape == (3 * 17 + 1, 4 * 17 + 1, 3)
    np.testing.assert_array_equal(sheet[1:17, 18:34], SceneDataset(out).scene(0)[0][1])


def test_cli_generate_writes_dataset_and_contact_sheet(tmp_path: Path) -> None:
    out = tmp_path / "sm"
    assert main(["data", "generate", "--scene", "shepard_metzler_5", "--out", str(out),
                 "--scenes", "3", "--image-size", "16", "--workers", "1", "--no-progress"]) == 0
    assert iio.imread(out / "contact_sheet.png").shape[2] == 3
    assert len(SceneDataset(out)) == 3 and SceneDataset(out).views == 15


@pytest.mark.parametrize("scene", ["arm", "rooms_free", "rooms_free_rotations",
                                   "shepard_metzler_5", "shepard_metzler_7"])
def test_every_family_generates_deterministically_and_resumes(scene: str,
                                                              tmp_path: Path) -> None:
    config = GenerateConfig(scene=scene, scenes=2, test_scenes=1, views=3, size=16,
                            shard_size=1)
    first = generate(config, tmp_path / "a", progress=False)
    again = generate(config, tmp_path / "b", progress=False)
    assert shard_bytes(first) == shard_bytes(again)
    manifest = json.loads((first / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"].pop()
    manifest["splits"]["train"]["scenes"] -= 1
    (first / "manifest.json").write_text(json.dumps(manifest))
    generate(config, first, progress=False)
    assert shard_bytes(first) == shard_bytes(again)
    assert len(SceneDataset(first, "train", verify=True)) == 2
