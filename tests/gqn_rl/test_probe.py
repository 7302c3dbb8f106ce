"""Probes find a planted signal and find none in noise: each readout alone, then the whole
``gqn-rl probe`` on a tiny dataset whose images encode part of their ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.cli import main
from gqn import GQN, GQNConfig
from gqn.checkpoint import save_checkpoint
from gqn.config import TrainConfig
from gqn.data import DatasetWriter, SceneDataset
from gqn_rl.datagen import GenerateConfig, generate
from gqn_rl.probe import ProbeConfig, probe, report_markdown, state_targets
from gqn_rl.probe.readouts import (
    bootstrap_r2,
    fit_architecture,
    fit_architecture_views,
    fit_cnn,
    fit_linear_classifier,
    fit_mlp,
    fit_ridge,
    r2_score,
    silhouette_score,
)
from gqn_rl.probe.scenes import load_scenes

RNG = np.random.default_rng(0)


def split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Fit, validation and test parts (60 / 20 / 20)."""
    a, b = int(0.6 * len(x)), int(0.8 * len(x))
    return x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:]


@pytest.mark.parametrize("fit", [fit_ridge, fit_mlp])
def test_regressors_find_a_planted_signal_and_none_in_noise(fit) -> None:
    x = RNG.normal(size=(600, 40)).astype(np.float32)
    signal = np.tanh(x[:, :3] @ RNG.normal(size=(3, 2)))
    noise = RNG.normal(size=(600, 2))
    for y, low, high in ((signal, 0.8, 1.0), (noise, -0.3, 0.1)):
        x_fit, y_fit, x_val, y_val, x_test, y_test = split(x, y)
        score = r2_score(fit(x_fit, y_fit, x_val, y_val)(x_test), y_test)
        assert low <= score <= high, (fit.__name__, score)


def test_bootstrap_interval_brackets_the_score_and_narrows_with_more_scenes() -> None:
    def interval(scenes: int) -> tuple[float, float, float]:
        truth = RNG.normal(size=(scenes * 4, 2))
        predicted = truth + RNG.normal(scale=0.7, size=truth.shape)
        groups = np.repeat(np.arange(scenes), 4)  # four views per scene
        return (r2_score(predicted, truth), *bootstrap_r2(predicted, truth, groups, seed=0))

    score, low, high = interval(50)
    assert low < score < high
    big_score, big_low, big_high = interval(800)
    assert big_low < big_score < big_high and big_high - big_low < (high - low) / 2
    perfect = RNG.normal(size=(40, 3))
    assert bootstrap_r2(perfect, perfect, np.arange(40), seed=0) == (1.0, 1.0)


def test_r2_leaves_out_missing_targets() -> None:
    target = np.array([[1.0], [2.0], [np.nan], [4.0]])
    assert r2_score(np.array([[1.0], [2.0], [99.0], [4.0]]), target) == pytest.approx(1.0)


def test_cnn_reads_a_colour_from_images_and_not_noise() -> None:
    y = RNG.uniform(0, 1, (300, 1))
    images = np.broadcast_to((y * 255)[:, None, None, :], (300, 8, 8, 3)).astype(np.uint8)
    images = np.clip(images + RNG.integers(0, 20, images.shape), 0, 255).astype(np.uint8)
    extra = np.zeros((300, 1), np.float32)
    for target, low in ((y, 0.8), (RNG.normal(size=(300, 1)), None)):
        readout = fit_cnn(images[:180], extra[:180], target[:180], images[180:240],
                          extra[180:240], target[180:240], epochs=40)
        score = r2_score(readout.predict(images[240:], extra[240:]), target[240:])
        assert score >= low if low is not None else score < 0.15, score
        assert 1 <= len(readout.curve) <= 40 and all(np.isfinite(readout.curve))


def dot_images(n: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Grey images with one white 2x2 dot each, and the dot's (row, column) in [0, 1]."""
    corners = RNG.integers(0, size - 1, (n, 2))
    images = np.full((n, size, size, 3), 60, np.uint8)
    for image, (row, col) in zip(images, corners, strict=True):
        image[row:row + 2, col:col + 2] = 255
    return images, (corners / (size - 2)).astype(np.float32)


def test_architecture_ceiling_finds_where_a_dot_is_and_nothing_in_noise() -> None:
    """A representation network supervised end to end (the probe's architecture ceiling)
    reads where a small dot is, and finds nothing in targets that are noise."""
    images, where = dot_images(1000)
    viewpoints = np.zeros((1000, 7), np.float32)
    config = GQNConfig(image_size=16, representation="spatial", r_dim=8, h_dim=4, z_dim=2, L=1)
    for target, planted in ((where, True), (RNG.normal(size=(1000, 2)).astype(np.float32), False)):
        readout = fit_architecture(config, images[:700], viewpoints[:700], target[:700],
                                   images[700:850], viewpoints[700:850], target[700:850],
                                   epochs=25, patience=4)
        score = r2_score(readout.predict(images[850:], viewpoints[850:]), target[850:])
        assert score > 0.6 if planted else score < 0.2, (planted, score)


def test_a_ceiling_from_several_views_sums_what_each_view_holds() -> None:
    """Each view shows the scene's grey level with its own noise: the K-view ceiling, whose
    representations are summed over K views, reads the level better than from one view.
    The best any readout can do here is R^2 0.41 from one view and 0.74 from four (signal
    s.d. 37.5 against noise s.d. 45 per view); the bounds leave room for a short fit."""
    rng = np.random.default_rng(7)  # its own draws: the scores do not depend on test order
    scenes, views = 600, 4
    level = rng.uniform(0, 1, (scenes, 1)).astype(np.float32)
    grey = 60 + 130 * level[:, None] + rng.normal(0, 45, (scenes, views, 1))   # [S, V, 1]
    images = np.broadcast_to(grey[..., None, None], (scenes, views, 8, 8, 3))
    images = np.clip(images, 0, 255).astype(np.uint8)
    viewpoints = np.zeros((scenes, views, 7), np.float32)
    config = GQNConfig(image_size=8, representation="world", r_dim=8, h_dim=4, z_dim=2, L=1)
    fit, val, test = np.arange(400), np.arange(400, 500), np.arange(500, 600)
    scores = {}
    for k in (1, views):
        readout = fit_architecture_views(config, k, images, viewpoints, level, fit, val,
                                         samples=2, epochs=80, patience=10)
        predicted = readout.predict(images, viewpoints, test, 7)
        assert predicted.shape == (2 * len(test), 1)
        scores[k] = r2_score(predicted, np.repeat(level[test], 2, 0))
    assert scores[views] > scores[1] + 0.1 and scores[views] > 0.5, scores
    with pytest.raises(ValueError, match="at least 5 views, these have 4"):
        fit_architecture_views(config, 5, images, viewpoints, level, fit, val)


def test_linear_classifier_and_silhouette() -> None:
    labels = RNG.integers(0, 4, 800)
    x = RNG.normal(size=(800, 10)) + 3 * np.eye(10)[labels]
    predict = fit_linear_classifier(x[:500], labels[:500], x[500:650], labels[500:650], 4)
    assert (predict(x[650:]) == labels[650:]).mean() > 0.9
    shuffled = RNG.permutation(labels)
    predict = fit_linear_classifier(x[:500], shuffled[:500], x[500:650], shuffled[500:650], 4)
    assert (predict(x[650:]) == shuffled[650:]).mean() < 0.4
    assert silhouette_score(x, labels) > 0.15 > 0.05 > abs(silhouette_score(x, shuffled))


def test_silhouette_matches_its_definition() -> None:
    x = RNG.normal(size=(30, 3)) + 2 * np.eye(3)[np.arange(30) % 3]
    labels = np.arange(30) % 3
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    expected = []
    for i in range(30):
        same = (labels == labels[i]) & (np.arange(30) != i)
        a = d[i, same].mean()
        b = min(d[i, labels == g].mean() for g in range(3) if g != labels[i])
        expected.append((b - a) / max(a, b))
    assert silhouette_score(x, labels) == pytest.approx(np.mean(expected), abs=1e-9)


def write_arm_like_dataset(path: Path, scenes: int = 60, views: int = 4, size: int = 16,
                           train: str = "same") -> Path:
    """Scenes in the ``arm`` truth format, seen by the same cameras, whose wall colour fills
    the image (planted) while the hand position is noise nothing shows. The train split
    (``train``) holds the same scenes (``"same"``), is left out (``"none"``), or holds
    ``2 * scenes`` other scenes whose recorded wall colour is the opposite of the one they show
    (``"backwards"``: a readout that learns from them reads the test scenes backwards)."""
    writer = DatasetWriter(path, image_size=size, views=views, meta={"scene": "arm-like"})
    rng = np.random.default_rng(1)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:  # wall colours and images
        wall = rng.uniform(0.1, 0.9, (n, 3))
        images = np.broadcast_to((wall * 255)[:, None, None, None, :], (n, views, size, size, 3))
        return wall, np.clip(images + rng.integers(0, 8, images.shape), 0, 255).astype(np.uint8)

    def truths(wall: np.ndarray) -> list[dict]:
        return [{"family": "arm", "hand_position": rng.normal(size=3).tolist(),
                 "target_position": rng.normal(size=3).tolist(),
                 "joint_angles": rng.uniform(-3, 3, 4).tolist(), "wall_colour": w.tolist(),
                 "floor_colour": rng.uniform(0, 1, 3).tolist()} for w in wall]

    wall, images = draw(scenes)
    poses = rng.uniform(-1, 1, (1, views, 5)).astype(np.float32)  # fixed cameras, so r
    truth = truths(wall)                                           # varies with the images only
    writer.write_shard("test", 0, images, np.repeat(poses, scenes, 0), truth)
    if train == "same":
        writer.write_shard("train", 0, images, np.repeat(poses, scenes, 0), truth)
    elif train == "backwards":
        wall, images = draw(2 * scenes)
        writer.write_shard("train", 0, images, np.repeat(poses, 2 * scenes, 0), truths(1 - wall))
    return path


TINY_MODEL = GQNConfig(image_size=16, representation="pool", r_dim=16, h_dim=8, z_dim=2, L=2)
TINY_PROBE = ProbeConfig(scenes=60, views_per_scene=2, context_views=2, prediction_scenes=8,
                         embedding_scenes=4)


def test_probe_finds_the_planted_colour_and_not_the_noise(tmp_path: Path) -> None:
    """Without train scenes the readouts learn from the probed scenes' fit part."""
    dataset = SceneDataset(write_arm_like_dataset(tmp_path / "data", train="none"), "test")
    results = probe(GQN(TINY_MODEL), dataset, TINY_PROBE, progress=False)
    assert results["scenes"] == {"fit": 36, "val": 12, "test": 12}
    assert results["readout_data"]["learnt_from"] == "the train split has 0 scenes, fewer than 10"
    state = results["state"]
    assert set(state) == {"hand_position", "target_position", "joint_angles", "wall_colour",
                          "floor_colour"}
    assert state["wall_colour"]["pixels 1 view, ridge"] > 0.8
    assert state["wall_colour"]["gqn 1 view, ridge"] > 0.5  # a random CNN keeps the colour
    assert state["wall_colour"]["supervised CNN 1 view"] > 0.5
    assert all(v < 0.3 for v in state["hand_position"].values())
    low, high = results["state_interval"]["wall_colour"]["pixels 1 view, ridge"]
    assert low <= state["wall_colour"]["pixels 1 view, ridge"] <= high
    assert results["state_interval"]["hand_position"].keys() == state["hand_position"].keys()
    error = results["prediction_error"]
    assert error["K"] == [1, 2, 3] and all(np.isfinite(error["gqn"] + error["mean_view"]))
    assert error["mean_view"][0] == pytest.approx(error["nearest_view"][0])  # K = 1: the view
    assert error["mean_view"][-1] < error["nearest_view"][-1]  # the mean averages the noise out
    assert results["surprise"]["own_scene_nats"] >= 0
    assert len(results["surprise"]["by_views_nats"]) == dataset.views  # K = 0 .. views - 1
    count = results["context_count"]  # planted: r is a sum, so it grows with the count
    assert count["chance"] == pytest.approx(1 / 3) and count["gqn_accuracy"] > 0.6
    assert -1 <= results["embedding"]["gqn_silhouette"] <= 1


def test_readouts_and_ceilings_learn_from_the_train_split(tmp_path: Path) -> None:
    """The train scenes record the opposite wall colour to the one they show: readouts and
    ceilings that learn from them read the probed test scenes backwards (R² far below 0)."""
    data = write_arm_like_dataset(tmp_path / "data", scenes=40, train="backwards")
    config = ProbeConfig(readout_scenes=60, context_views=2, prediction_scenes=8,
                         embedding_scenes=4, ceiling_patience=3, resamples=0)
    results = probe(GQN(TINY_MODEL), SceneDataset(data, "test"), config, progress=False)
    assert results["scenes"] == {"fit": 57, "val": 3, "test": 40}  # 5% of 60 held out
    assert results["readout_data"] == {
        "learnt_from": "train split", "fit_scenes": 57, "val_scenes": 3, "test_scenes": 40,
        "views": 4, "summed_views": 2, "summed_samples": 2}  # every view; 4 / 2 sums a scene
    wall = results["state"]["wall_colour"]
    assert wall["pixels 1 view, ridge"] < -1 and "pixels 1 view, mlp" not in wall
    for column in ("gqn 1 view, ridge", "gqn 1 view, mlp", "fresh 2 views, ridge",
                   "supervised CNN 1 view", "supervised architecture 1 view"):
        assert wall[column] < 0, (column, wall[column])
    report = report_markdown(results)
    assert "learn from 57 scenes x 4 views of the dataset's train split" in report
    assert "scored on 40 probed scenes x 4 views" in report
    assert "The ceilings learn from the same scenes and views." in report
    assert "| mean of context views |" in report


def test_state_targets_of_every_family() -> None:
    rooms = state_targets({"family": "rooms_free", "wall_colour": [0, 0, 0],
                           "floor_colour": [1, 1, 1],
                           "objects": [{"position": [1, 2, 0], "colour": [1, 0, 0]},
                                       {"position": [-1, 3, 0], "colour": [0, 1, 0]}]})
    assert rooms["object_0_position"].tolist() == [-1, 3]  # numbered west to east
    assert rooms["object_1_colour"].tolist() == [1, 0, 0]
    assert np.isnan(rooms["object_2_colour"]).all()
    chain = [{"position": [x, 0, 0], "colour": [1, 0, 0]} for x in (-1, 0, 1)]
    cubes = state_targets({"family": "shepard_metzler_7", "cubes": chain})
    reversed_chain = state_targets({"family": "shepard_metzler_7", "cubes": chain[::-1]})
    np.testing.assert_allclose(cubes["shape_moments"], [2 / 3, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(cubes["shape_moments"], reversed_chain["shape_moments"])
    assert cubes["mean_colour"].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="no probe targets for scene family 'synthetic'"):
        state_targets({"family": "synthetic"})


def test_cli_probe_writes_json_report_and_plots(tmp_path: Path) -> None:
    data = write_arm_like_dataset(tmp_path / "data")
    model = GQN(TINY_MODEL)
    checkpoint = tmp_path / "gqn.pt"
    save_checkpoint(checkpoint, model, __import__("torch").optim.Adam(model.parameters()), 0,
                    TrainConfig(), rng={}, data={"scene": "arm"})
    out = tmp_path / "probe"
    assert main(["probe", "--checkpoint", str(checkpoint), "--data", str(data), "--out",
                 str(out), "--scenes", "40", "--no-mlp", "--no-cnn", "--no-progress"]) == 0
    results = json.loads((out / "probe.json").read_text())
    assert results["scenes"] == {"fit": 57, "val": 3, "test": 40}  # learnt from 60 train scenes
    report = (out / "report.md").read_text()
    assert "## State probes" in report and "wall_colour" in report
    for name in ("state_probes.png", "prediction_error.png", "embedding.png"):
        assert (out / name).stat().st_size > 0
    assert main(["probe", "--checkpoint", str(checkpoint), "--data", str(data), "--out",
                 str(tmp_path / "two"), "--scenes", "40", "--no-mlp", "--no-cnn", "--no-fresh",
                 "--targets", "target_position", "--no-progress"]) == 0
    two = json.loads((tmp_path / "two" / "probe.json").read_text())
    assert list(two["state"]) == ["target_position"]
    assert "fresh_silhouette" not in two["embedding"]
    assert "fresh not probed" in (tmp_path / "two" / "report.md").read_text()


def test_foreground_masks_cover_the_objects_of_generated_scenes(tmp_path: Path) -> None:
    from gqn_rl.foreground import foreground_masks

    data = generate(GenerateConfig(scene="arm", scenes=2, test_scenes=2, size=32, views=3),
                    tmp_path / "arm", progress=False)
    dataset = SceneDataset(data, "test")
    masks = foreground_masks(dataset, [0, 1])
    assert masks.shape == (2, 3, 32, 32) and 0.005 < masks.mean() < 0.5
    images = np.stack([dataset.scene(i)[0] for i in (0, 1)])
    target = np.asarray(dataset.truth(0)["target_colour"]) * 255
    near_target = (np.abs(images[0].astype(float) - target) < 30).all(-1)
    assert masks[0][near_target].mean() > 0.9, "the target's pixels are foreground"
    assert foreground_masks(SceneDataset(write_arm_like_dataset(tmp_path / "x"), "test"),
                            [0]) is None  # not rendered by gqn-rl: no masks


@pytest.mark.slow  # 11 s: renders masks, then pretrains with them
def test_data_masks_writes_what_the_dataset_reads_and_pretraining_weighs(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from gqn_rl.foreground import foreground_masks

    data = generate(GenerateConfig(scene="arm", scenes=3, test_scenes=2, size=32, views=3,
                                   shard_size=2), tmp_path / "arm", progress=False)
    run = ["pretrain", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2",
           "--batch-size", "2", "--no-progress", "--no-probe", "--object-weight", "5"]
    assert main([*run, "--preset", "cpu-small"]) == 2  # no masks yet: named, nothing trained
    assert "gqn-rl data masks" in capsys.readouterr().err
    assert main(["data", "masks", str(data), "--workers", "2", "--no-progress"]) == 0
    for split, n in (("train", 3), ("test", 2)):
        dataset = SceneDataset(data, split)
        np.testing.assert_array_equal(dataset.masks(), foreground_masks(dataset, range(n)))
    stamp = (data / "train.masks.npy").stat().st_mtime_ns
    assert main(["data", "masks", str(data), "--no-progress"]) == 0  # whole: skipped
    assert (data / "train.masks.npy").stat().st_mtime_ns == stamp
    batch = SceneDataset(data, "train").sample_batch(4, np.random.default_rng(0))
    assert batch.query_mask.shape == (4, 32, 32) and batch.query_mask.dtype == torch.bool
    assert main([*run, "--preset", "cpu-small"]) == 0  # the weighted likelihood trains
    assert "step 2: checkpoint" in capsys.readouterr().out


def test_foreground_masks_refuse_images_that_do_not_match(tmp_path: Path) -> None:
    from gqn_rl.foreground import foreground_masks

    data = generate(GenerateConfig(scene="rooms_free", scenes=1, test_scenes=1, size=16,
                                   views=2), tmp_path / "rooms", progress=False)
    images = np.load(data / "test" / "00000.images.npy", mmap_mode="r+")
    images[0, 0] = 255 - images[0, 0]
    images.flush()
    with pytest.raises(ValueError, match="scene 0 of the test split renders differently"):
        foreground_masks(SceneDataset(data, "test"), [0])


def test_foreground_masks_accept_scenes_loaded_out_of_order(tmp_path: Path) -> None:
    """Scene 0 written into the model compiled from scene 59 rounds a few pixels differently
    (regression: the probe's shuffled scenes were refused)."""
    from gqn_rl.foreground import foreground_masks

    data = generate(GenerateConfig(scene="shepard_metzler_7", scenes=1, test_scenes=60, size=32),
                    tmp_path / "sm", progress=False)
    masks = foreground_masks(SceneDataset(data, "test"), [59, 0])
    assert masks.shape == (2, 15, 32, 32) and masks.any(axis=(2, 3)).all()


def test_pretraining_logs_quick_probes_without_changing_the_run(tmp_path: Path) -> None:
    from gqn.train import METRICS_NAME, pretrain
    from gqn_rl.probe import QuickProbe

    data = write_arm_like_dataset(tmp_path / "data")
    train = TrainConfig(steps=4, batch_size=4, log_every=1, eval_every=2, eval_batches=1,
                        checkpoint_every=2)
    quick = QuickProbe(SceneDataset(data, "test"), TINY_PROBE)
    assert not quick.data.from_train  # cheap: the probed split's own scenes
    probed = pretrain(data, tmp_path / "a", TINY_MODEL, train, progress=False, probe=quick)
    plain = pretrain(data, tmp_path / "b", TINY_MODEL, train, progress=False)
    assert [h["loss"] for h in probed.history] == [h["loss"] for h in plain.history]
    lines = [json.loads(line) for line in (tmp_path / "a" / METRICS_NAME).read_text().splitlines()]
    logged = [line for line in lines if "probe/r2_wall_colour" in line]
    assert [line["step"] for line in logged] == [2, 4]
    assert {"probe/mse_gqn_K1", "probe/mse_mean_view_K1", "probe/surprise_other_scene"
            } <= set(logged[0])


@pytest.mark.slow  # 40 s beside other jobs; the ceiling itself: test_architecture_ceiling_...
def test_cli_ceiling_writes_each_architecture_and_the_cnn(tmp_path: Path, capsys) -> None:
    data = write_arm_like_dataset(tmp_path / "data", scenes=120)  # 6 validation scenes
    out = tmp_path / "ceiling"
    assert main(["ceiling", "--data", str(data), "--out", str(out), "--representation", "pool",
                 "world", "--scenes", "120", "--patience", "2", "--views", "3",
                 "--no-progress"]) == 0
    results = json.loads((out / "ceiling.json").read_text())
    columns = {"supervised CNN 1 view", "supervised pool 1 view", "supervised world 1 view",
               "supervised pool 3 views", "supervised world 3 views"}
    assert set(results["state"]["wall_colour"]) == columns == set(results["ceiling_curves"])
    assert results["state"]["wall_colour"]["supervised CNN 1 view"] > 0.5  # planted
    assert "| wall_colour |" in (out / "report.md").read_text()
    assert "sum the network's `r` over 3 random views" in (out / "report.md").read_text()
    assert (out / "ceiling_curves.png").is_file() and "wall_colour" in capsys.readouterr().out
    (tmp_path / "file").write_text("")
    # a file as --out is refused before any fit
    assert main(["ceiling", "--data", str(data), "--out", str(tmp_path / "file")]) == 2
    assert "is a file: --out takes a directory" in capsys.readouterr().err


def test_fit_steps_finds_where_a_log_line_reaches_the_goal() -> None:
    from gqn_rl.probe.curve import fit_steps

    exact = [(s, 0.1 + 0.05 * np.log(s), 0.005) for s in (1000, 2000, 4000, 8000)]
    assert fit_steps(exact, goal=0.1 + 0.05 * np.log(50_000))["steps"] == pytest.approx(50_000)
    errors = (4e-3, -3e-3, 2e-3, -4e-3)
    noisy = [(s, r2 + e, sd) for (s, r2, sd), e in zip(exact, errors, strict=True)]
    fit = fit_steps(noisy, goal=0.1 + 0.05 * np.log(50_000))
    assert fit["steps"] == pytest.approx(50_000, rel=0.3)
    assert fit["steps_90"][0] < fit["steps"] < fit["steps_90"][1]
    flat = fit_steps([(1000, 0.3, 0.01), (2000, 0.3, 0.01), (4000, 0.29, 0.01)], goal=0.7)
    assert flat["steps"] == float("inf")
    assert fit_steps([(1000, 0.1, 0.0), (2000, 0.2, 0.0)], goal=0.3)["steps_90"] is None
    with pytest.raises(ValueError, match="step 1 or later"):
        fit_steps([(0, 0.1, 0.01), (2000, 0.2, 0.01)], goal=0.3)


@pytest.mark.slow
def test_cli_curve_probes_each_snapshot_once_and_fits_the_ceiling(tmp_path: Path) -> None:
    data = write_arm_like_dataset(tmp_path / "data")
    (tmp_path / "run" / "snapshots").mkdir(parents=True)
    for step in (10, 20):
        model = GQN(TINY_MODEL)
        save_checkpoint(tmp_path / "run" / "snapshots" / f"step-{step}.pt", model,
                        torch.optim.Adam(model.parameters()), step, TrainConfig(), rng={},
                        data={"scene": "arm"})
    ceiling = tmp_path / "ceiling.pt"
    state = torch.load(tmp_path / "run" / "snapshots" / "step-10.pt", weights_only=False)
    state["ceiling"] = {"r2": {"target_position": 0.8, "hand_position": 0.9},
                        "r2_interval": {"target_position": (0.78, 0.82),
                                        "hand_position": (0.88, 0.92)}}
    torch.save(state, ceiling)
    out = tmp_path / "curve"
    args = ["curve", "--run", str(tmp_path / "run"), "--data", str(data), "--out", str(out),
            "--ceiling", str(ceiling), "--step-seconds", "0.4", "--scenes", "40",
            "--no-progress"]
    assert main(args) == 0
    curve = json.loads((out / "curve.json").read_text())
    assert [p["step"] for p in curve["points"]] == [10, 20]
    assert curve["points"][1]["cpu_hours"] == pytest.approx(20 * 0.4 / 3600)
    assert set(curve["fits"]) == {"target_position", "hand_position"}
    assert curve["ceiling"]["hand_position"]["r2"] == 0.9
    assert (out / "curve.png").stat().st_size > 0 and "| 20 |" in (out / "curve.md").read_text()
    one = json.loads((out / "step-10" / "probe.json").read_text())
    assert set(one["state"]) == {"target_position", "hand_position"}  # the curve's two targets
    assert not any(k.startswith("fresh") for k in one["state"]["target_position"])
    probed = (out / "step-10" / "probe.json").stat().st_mtime_ns
    assert main(args) == 0  # resumed: the snapshots already probed are not probed again
    assert (out / "step-10" / "probe.json").stat().st_mtime_ns == probed
    assert main([*args, "--scenes", "30"]) == 2  # other settings: refused, not mixed in


def test_probe_targets_must_be_the_scenes_own(tmp_path: Path) -> None:
    data = write_arm_like_dataset(tmp_path / "data")
    config = ProbeConfig(scenes=20, targets=("target_position", "elbow"))
    with pytest.raises(ValueError, match=r"ProbeConfig.targets: .* have no \['elbow'\]"):
        load_scenes(SceneDataset(data, "test"), config)
    with pytest.raises(ValueError, match="name at least one target"):
        ProbeConfig(targets=())
