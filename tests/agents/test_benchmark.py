"""``gqn-rl benchmark`` and ``gqn-rl report`` on tiny grids: results rows, normalised scores,
skipping finished runs, resuming an interrupted one, extending finished ones, both tracks,
workers, every report section."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.benchmark import (
    COLUMNS,
    LOCK_NAME,
    normalized_score,
    results,
    rows,
    run_benchmark,
    scales,
)
from agents.cli import main
from agents.grid import RESULT_FILE, BenchmarkConfig, Cell
from agents.hyperparams import RECIPES
from agents.report import UNDEFINED_SCORE, improvement, interval, write_report
from gqn import GQN, GQNConfig, TrainConfig
from gqn.checkpoint import save_checkpoint
from gqn.fileio import DirectoryBusyError, lock_directory
from gqn_rl.encoders import SHIPPED_CHECKPOINTS, open_checkpoint

ROTATION = "gqn_rl/MentalRotation-v0"  # true-state runs render nothing: fast
ROOM = "gqn_rl/RoomNavigation-v0"
ARM = "gqn_rl/ArmReach-v0"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # 30 s; the default run's grid path: tests/agents/test_kinds.py
def test_rl_grid_normalises_skips_finished_runs_and_resumes_an_interrupted_one(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = BenchmarkConfig((ROTATION,), ("random", "scripted", "state"), seeds=2,
                             steps=2048, eval_episodes=2, final_episodes=3)
    rows = read_rows(run_benchmark(config, tmp_path, progress=False))
    for encoder in ("random", "state"):  # the final evaluation's episodes, not the periodic
        result = Cell(ROTATION, encoder, "rl", 0, 0, 0 if encoder == "random" else 2048)
        assert json.loads((result.directory(tmp_path) / RESULT_FILE).read_text())["episodes"] == 3
    assert len(rows) == 6 and tuple(rows[0]) == COLUMNS
    # 0 is the random policy's mean return, 100 the oracle's; undefined where the oracle's
    # 2,048 steps are not clear of random
    scale = scales(results(tmp_path))[ROTATION, "rl", 0]
    for r in rows:
        score = normalized_score(float(r["return"]), scale.random, scale.oracle)
        assert r["normalized_score"] == ("" if scale.undefined else f"{score:.4g}")
    assert {r["steps"] for r in rows if r["encoder"] == "state"} == {"2048"}

    written = sorted(tmp_path.glob(f"runs/*/*/*/seed*/{RESULT_FILE}"))
    stamps = {p: p.stat().st_mtime_ns for p in written}
    run_benchmark(config, tmp_path, progress=False)  # everything finished: nothing reruns
    assert {p: p.stat().st_mtime_ns for p in written} == stamps

    interrupted = Cell(ROTATION, "state", "rl", 1, 0, 2048).directory(tmp_path)
    walls = json.loads((interrupted / "wall.json").read_text())  # seconds by resume point
    assert json.loads((interrupted / RESULT_FILE).read_text())["wall_s"] == walls[
        max(walls, key=int)] > 0
    (interrupted / RESULT_FILE).unlink()  # as if killed after its last checkpoint
    (interrupted / "final_model.zip").unlink()
    capsys.readouterr()
    run_benchmark(config, tmp_path, progress=False)
    resumed = int(re.search(r"resuming from .* \((\d+) steps\)", capsys.readouterr().out)[1])
    after = json.loads((interrupted / "wall.json").read_text())
    assert {n: s for n, s in after.items() if int(n) <= resumed} == {
        n: s for n, s in walls.items() if int(n) <= resumed}  # the time before it is kept
    final = max(after, key=int)
    assert json.loads((interrupted / RESULT_FILE).read_text())["wall_s"] == after[final] >= after[
        str(resumed)]
    assert len(read_rows(tmp_path / "results.csv")) == 6

    text = write_report(tmp_path).read_text()
    assert "normalised score, IQM [95% CI]" in text
    assert_scores_defined_as_the_returns_say(rows, text)
    for png in tmp_path.glob("*.png"):
        assert png.stat().st_size > 0
    pngs = set() if scale.undefined else {"scores_MentalRotation-v0_rl.png",
                                          "curves_MentalRotation-v0_rl.png"}
    assert {p.name for p in tmp_path.glob("*.png")} == pngs

    # published: the report and each run's light records; a copy resumes with nothing to run
    published = tmp_path.parent / "published"
    assert main(["report", str(tmp_path), "--publish", str(published)]) == 0
    assert {p.name for p in published.iterdir()} == {"report.md", "results.csv", "runs", *pngs}
    assert {p.name for p in published.glob("runs/*/*/*/seed*/*")} == {
        "result.json", "wall.json", "eval"}
    assert not list(published.glob("runs/**/*.zip"))  # models stay behind
    fresh = tmp_path.parent / "fresh-machine"
    shutil.copytree(published, fresh)
    run_benchmark(config, fresh, progress=False)
    assert len(read_rows(fresh / "results.csv")) == 6
    assert not list(fresh.glob("runs/**/*.zip")), "a published run was trained again"

    # a raised budget continues each finished run from its last resume point, when asked to
    with pytest.raises(ValueError, match="pass --extend"):
        run_benchmark(dataclasses.replace(config, steps=3072), tmp_path, progress=False)
    capsys.readouterr()
    run_benchmark(dataclasses.replace(config, steps=3072, extend=True), tmp_path, progress=False)
    assert re.findall(r"resuming from .* \((\d+) steps\)", capsys.readouterr().out) == [
        "2048", "2048"]
    extended = Cell(ROTATION, "state", "rl", 0, 0, 3072).directory(tmp_path)
    assert json.loads((extended / RESULT_FILE).read_text())["cell"]["steps"] == 3072
    curve = np.load(extended / "eval" / "evaluations.npz")["timesteps"]
    assert curve[-1] == 3072 and 2048 in curve  # the evaluations before it are kept
    assert {r["steps"] for r in read_rows(tmp_path / "results.csv")
            if r["encoder"] == "state"} == {"3072"}


@pytest.mark.slow  # 17 s: two worker processes start
def test_bc_track_clones_the_scripted_policy_in_parallel_workers(tmp_path: Path) -> None:
    config = BenchmarkConfig((ROOM,), ("random", "state"), seeds=2, track="bc",
                             demos=(1, 20), workers=2, bc_episodes=5)
    rows = read_rows(run_benchmark(config, tmp_path, progress=False))
    assert sorted((r["encoder"], r["demos"]) for r in rows) == sorted(
        [("random", "0")] * 2 + [("state", "1")] * 2 + [("state", "20")] * 2)
    success = {d: np.mean([float(r["success"]) for r in rows
                           if r["encoder"] == "state" and r["demos"] == d]) for d in ("1", "20")}
    assert success["20"] >= 0.8  # walking to the goal is easy to clone from the state
    text = write_report(tmp_path).read_text()
    assert "bc, 1 demonstrations" in text and "bc, 20 demonstrations" in text


def test_report_statistics_come_from_rliable() -> None:
    point, low, high = interval(np.array([10.0, 20, 30, 40, 50]))
    assert point == 30 and low < point < high
    assert interval(np.array([3.0]))[0] == 3 and np.isnan(interval(np.array([3.0]))[1])
    p, low, high = improvement(np.array([10.0, 20, 30]), np.array([0.0, 1, 2]))
    assert p == 1.0 and low <= p <= high
    # The same scores give the same interval (a republished report keeps its figures), and the
    # caller's NumPy random state is left as it was.
    scores, other = np.array([1.0, 5, 3, 8, 2]), np.array([2.0, 6, 1, 4, 3])
    np.random.seed(7)  # noqa: NPY002
    expected = np.random.random()  # noqa: NPY002
    np.random.seed(7)  # noqa: NPY002
    assert interval(scores) == interval(scores)
    assert improvement(scores, other) == improvement(scores, other)
    assert np.random.random() == expected  # noqa: NPY002


def test_a_grid_s_seeds_run_in_pieces_from_its_first_seed() -> None:
    later = BenchmarkConfig((ARM,), ("state",), seeds=2, first_seed=3)
    assert [c.seed for c in later.cells()] == [3, 4]
    with pytest.raises(ValueError, match="--first-seed must be >= 0"):
        BenchmarkConfig((ARM,), ("state",), seeds=1, first_seed=-1)


def test_bad_grids_are_refused_with_the_flag_at_fault(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="--encoder: unknown"):
        BenchmarkConfig((ARM,), ("gqn-frozen-ish",), seeds=1)
    with pytest.raises(ValueError, match="--track bc clones on frozen features"):
        BenchmarkConfig((ARM,), ("gqn-joint",), seeds=1, track="bc")
    with pytest.raises(ValueError, match="--env Pendulum-v1: the benchmark has recipes for"):
        BenchmarkConfig(("Pendulum-v1",), ("state",), seeds=1)
    with pytest.raises(ValueError, match="--hyperparams: unknown setting"):
        BenchmarkConfig((ARM,), ("state",), seeds=1, overrides={"batch_sise": 64})
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished benchmark runs" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--steps sets the rl track's budget"):
        BenchmarkConfig((ROOM,), ("state",), seeds=1, track="bc", steps=100)
    with pytest.raises(ValueError, match="none of the encoders .* reads a GQN checkpoint"):
        BenchmarkConfig((ARM,), ("state", "gqn-frozen-fresh"), seeds=1, checkpoint="x.pt")
    grid = ["benchmark", "--env", ROTATION, "--encoder", "random", "--seeds", "1",
            "--no-progress", "--final-episodes", "1"]
    assert main([*grid, "--out", str(tmp_path / "g"), "--demos", "5"]) == 2
    assert "--demos sets the bc track's" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("mine")
    assert main([*grid, "--out", str(tmp_path / "a-file")]) == 2
    assert "is a file: it takes a benchmark directory" in capsys.readouterr().err
    assert main([*grid, "--out", str(tmp_path / "g"), "--workers", "999"]) == 0
    assert "--workers 999 capped at this machine's" in capsys.readouterr().err


@pytest.mark.slow
def test_image_encoders_camera_shift_and_every_report_section(tmp_path: Path) -> None:
    rl = BenchmarkConfig((ARM,), ("random", "state", "pixels", "pixels-aug", "gqn-frozen",
                                  "gqn-frozen-fresh"), seeds=2, steps=1024, eval_episodes=1,
                         overrides={"buffer_size": 2000})  # the recipe's 30k: 0.7 GB of images
    rows = read_rows(run_benchmark(rl, tmp_path / "rl", progress=False))
    buffers = list((tmp_path / "rl").glob("runs/*/pixels/rl/seed0/checkpoints/*buffer*.pkl"))
    assert len(buffers) == 1  # only the newest replay buffer is kept
    shifted = [r for r in rows if r["encoder"] in ("pixels", "pixels-aug", "gqn-frozen")]
    assert all(r["success_moving_camera"] != "" and r["success_outside_ring"] != ""
               for r in shifted)
    text = write_report(tmp_path / "rl").read_text()
    for section in ("P(improvement over pixels-aug)", "Camera shift"):
        assert section in text
    assert_scores_defined_as_the_returns_say(rows, text)
    bc = BenchmarkConfig((ARM,), ("random", "state", "gqn-frozen", "pixels"), seeds=1,
                         track="bc", demos=(2,), bc_episodes=2)
    rows = read_rows(run_benchmark(bc, tmp_path / "bc", progress=False))
    assert {r["encoder"] for r in rows} == {"random", "state", "gqn-frozen", "pixels"}
    assert "bc, 2 demonstrations" in write_report(tmp_path / "bc").read_text()


def write_result(root: Path, cell: Cell, mean_return: float, **extra) -> Path:
    """A finished run's ``result.json``, written by hand."""
    path = cell.directory(root) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cell": dataclasses.asdict(cell), "mean_return": mean_return,
                                "success_rate": 0.0, "wall_s": 1.0, **extra}))
    return path


def test_normalised_scores_are_undefined_when_the_oracle_is_not_above_random(
        tmp_path: Path) -> None:
    for seed in range(2):
        write_result(tmp_path, Cell(ROTATION, "random", "rl", seed), -10.0)
        write_result(tmp_path, Cell(ROTATION, "state", "rl", seed, steps=64), -12.0)
        write_result(tmp_path, Cell(ROTATION, "pixels", "rl", seed, steps=64), -30.0)
    assert all(r["normalized_score"] is None for r in rows(results(tmp_path)))
    text = write_report(tmp_path).read_text()
    assert "undefined (oracle not clear of random)" in text
    assert "steps to 80%" not in text and "1744" not in text


def test_the_report_separates_the_encoder_from_the_task_with_the_perfect_encoder(
        tmp_path: Path) -> None:
    for seed, (perfect, pixels) in enumerate([(-40.0, -70.0), (-40.0, -70.0)]):
        write_result(tmp_path, Cell(ARM, "random", "rl", seed), -100.0)
        write_result(tmp_path, Cell(ARM, "state", "rl", seed, steps=64), 0.0)
        write_result(tmp_path, Cell(ARM, "perfect-encoder", "rl", seed, steps=64), perfect)
        write_result(tmp_path, Cell(ARM, "pixels", "rl", seed, steps=64), pixels)
    text = write_report(tmp_path).read_text()
    assert "the task reaches 60.0 of the oracle's 100" in text  # perfect: 60, pixels: 30
    assert "`pixels` 0.50" in text
    for seed in range(2):  # a perfect encoder at the random policy's score has no shares
        write_result(tmp_path, Cell(ARM, "perfect-encoder", "rl", seed, steps=64), -105.0)
    text = write_report(tmp_path).read_text()
    assert "does not pass the random policy in this budget (-5.0 of the oracle's 100)" in text
    assert "`pixels` 0.50" not in text


def test_the_report_places_each_gqn_kind_between_pixels_aug_and_its_ceiling(
        tmp_path: Path) -> None:
    scores = {"pixels-aug": -80.0, "gqn-ceiling": -40.0, "gqn-frozen": -70.0,
              "gqn-frozen-cameras": -60.0, "gqn-ceiling-cameras": -20.0,
              "gqn-ceiling-trunk": -30.0, "perfect-encoder-r2-0.5": -10.0}
    ARM_V1 = "gqn_rl/ArmReach-v1"  # the family with a shipped ceiling
    for seed in range(2):
        write_result(tmp_path, Cell(ARM_V1, "random", "rl", seed), -100.0)
        write_result(tmp_path, Cell(ARM_V1, "state", "rl", seed, steps=64), 0.0)
        for encoder, score in scores.items():
            write_result(tmp_path, Cell(ARM_V1, encoder, "rl", seed, steps=64), score)
    text = write_report(tmp_path).read_text()
    assert ("Place between `pixels-aug` (0, 20.0) and the downstream ceiling `gqn-ceiling` "
            "(1, 60.0), by IQM: `gqn-frozen` 0.25.") in text
    assert "`gqn-ceiling-cameras` (1, 80.0), by IQM: `gqn-frozen-cameras` 0.33." in text
    assert "| perfect-encoder-r2-0.5 |" in text  # a blurred reference's name reads too
    from agents.pages import Pages, write_pages
    from agents.report import compose_report

    [page] = write_pages(compose_report(tmp_path), Pages(tmp_path / "pages", tmp_path,
                                                         published=False))
    assert "perfect-encoder-r2-0.5" in page.read_text()  # in the grid's command too


def test_the_camera_shift_table_compares_each_kind_with_pixels_aug_under_each_camera(
        tmp_path: Path) -> None:
    for seed in range(2):
        write_result(tmp_path, Cell(ARM, "random", "rl", seed), -100.0)
        write_result(tmp_path, Cell(ARM, "state", "rl", seed, steps=64), 0.0)
        for encoder, moving in (("pixels-aug", 0.1), ("gqn-frozen", 0.5 + 0.1 * seed)):
            write_result(tmp_path, Cell(ARM, encoder, "rl", seed, steps=64), -50.0,
                         success_moving_camera=moving, success_outside_ring=0.2)
    text = write_report(tmp_path).read_text()
    # Moving: both gqn-frozen runs above both pixels-aug runs; outside: ties count a half.
    assert "| gqn-frozen | 0.00 | 0.55 | 0.20 | 1.00 [1.00, 1.00] | 0.50 [0.50, 0.50] |" in text
    assert "| pixels-aug | 0.00 | 0.10 | 0.20 |  |  |" in text


@pytest.mark.parametrize("content", [b"{}", b"[]", b"\x80\x81binary", b'"a string"',
                                     b'{"cell": {}, "mean_return": NaN, "success_rate": 0, '
                                     b'"wall_s": 1}', b'{"cell": {}, "mean_return": null}'])
def test_a_malformed_result_is_named_and_runs_again(tmp_path: Path, content: bytes) -> None:
    cell = Cell(ROTATION, "random", "rl", 0)
    path = write_result(tmp_path, cell, -10.0)
    path.write_bytes(content)
    with pytest.warns(UserWarning, match=f"{path}: malformed result"):
        assert not cell.finished(tmp_path)
    with pytest.warns(UserWarning, match="runs again"):
        assert results(tmp_path) == []


def tiny_checkpoint(path: Path, scene: str | None) -> Path:
    """A tiny GQN checkpoint whose data record names the scene family it trained on."""
    model = GQN(GQNConfig(image_size=16, representation="pool", r_dim=8, h_dim=8, z_dim=2, L=2))
    save_checkpoint(path, model, torch.optim.Adam(model.parameters()), 0, TrainConfig(), rng={},
                    data={"scene": scene})
    return path


def test_checkpoints_are_checked_before_anything_trains_and_key_the_grid(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    grid = ["benchmark", "--env", ARM, "--encoder", "random", "gqn-frozen", "--seeds", "1",
            "--out", str(tmp_path / "grid"), "--no-progress"]
    other = tiny_checkpoint(tmp_path / "sm7.pt", "shepard_metzler_7")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for checkpoint, message in ((other, "was pretrained on shepard_metzler_7 scenes; the "
                                 "environment shows arm scenes"),
                                (tmp_path / "text.pt", "not a gqn-rl checkpoint"),
                                (tmp_path, "is a directory, not a checkpoint file"),
                                (tmp_path / "missing.pt", "no checkpoint at")):
        assert main([*grid, "--checkpoint", str(checkpoint)]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "grid").exists(), "refused before anything was written"

    ours = tiny_checkpoint(tmp_path / "arm.pt", "arm")
    config = BenchmarkConfig((ARM,), ("random", "gqn-frozen"), seeds=1, checkpoint=str(ours))
    digest = config.checkpoint_sha256(ARM)
    cell = Cell(ARM, "gqn-frozen", "rl", 0, 0, config.budget(ARM, "gqn-frozen"))
    write_result(tmp_path / "grid", cell, -5.0, checkpoint_sha256="0" * 64)
    with pytest.raises(ValueError, match="made with GQN checkpoint 000000000000..., this grid "
                                         f"asks for {digest[:12]}"):
        run_benchmark(config, tmp_path / "grid", progress=False)
    write_result(tmp_path / "grid", cell, -5.0, checkpoint_sha256=digest)  # ours: finished
    csv_rows = read_rows(run_benchmark(config, tmp_path / "grid", progress=False))
    assert {r["encoder"]: r["checkpoint_sha256"] for r in csv_rows} == {
        "random": "", "gqn-frozen": digest}
    assert f"{ARM} `{digest[:16]}`" in write_report(tmp_path / "grid").read_text()


def test_a_ceiling_run_is_keyed_on_its_ceiling_file(tmp_path: Path) -> None:
    """A gqn-ceiling run reads the shipped ceiling, not the grid's checkpoint: its result
    records the ceiling's digest, and a run made with another ceiling file is refused."""
    config = BenchmarkConfig(("gqn_rl/ArmReach-v1",), ("gqn-ceiling",), seeds=1)
    cell = config.cells()[0]
    digest = config.cell_checkpoint_sha256(cell)
    assert digest == open_checkpoint(SHIPPED_CHECKPOINTS / "arm_near" / "ceiling.pt").sha256
    assert config.checkpoint_sha256("gqn_rl/ArmReach-v1") is None  # no kind reads the grid's
    write_result(tmp_path / "grid", cell, -5.0, checkpoint_sha256="0" * 64)
    with pytest.raises(ValueError, match=f"asks for {digest[:12]}"):
        run_benchmark(config, tmp_path / "grid", progress=False)


def test_image_agents_get_the_recipe_s_image_budget() -> None:
    config = BenchmarkConfig((ROTATION, ROOM), ("random", "state", "perfect-encoder", "pixels",
                                               "gqn-frozen"), seeds=1)
    steps = {(c.env, c.encoder): c.steps for c in config.cells()}
    assert steps[ROTATION, "random"] == 0
    assert steps[ROTATION, "state"] == steps[ROTATION, "perfect-encoder"] == \
        RECIPES[ROTATION].steps
    assert steps[ROTATION, "pixels"] == steps[ROTATION, "gqn-frozen"] == \
        RECIPES[ROTATION].image_steps
    assert RECIPES[ROTATION].image_steps <= 3 * RECIPES[ROTATION].steps
    assert steps[ROOM, "pixels"] == steps[ROOM, "state"] == RECIPES[ROOM].steps
    same = dataclasses.replace(config, steps=2048)
    assert {c.steps for c in same.cells() if c.encoder != "random"} == {2048}


def test_one_grid_per_directory_and_none_over_a_users_files(tmp_path: Path) -> None:
    config = BenchmarkConfig((ROTATION,), ("random",), seeds=1, final_episodes=1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "results.csv").write_text("my,own,table\n1,2,3\n")
    with pytest.raises(ValueError, match="is not a benchmark directory"):
        run_benchmark(config, tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "results.csv").read_text() == "my,own,table\n1,2,3\n"
    grid = tmp_path / "grid"
    grid.mkdir()
    held = lock_directory(grid, LOCK_NAME)  # as a running gqn-rl benchmark holds it
    try:
        with pytest.raises(DirectoryBusyError, match=f"is being written by pid {os.getpid()}"):
            run_benchmark(config, grid, progress=False)
    finally:
        held.close()
    assert len(read_rows(run_benchmark(config, grid, progress=False))) == 1


def assert_scores_defined_as_the_returns_say(rows: list[dict], text: str) -> None:
    """A report whose oracle is clear of random (its ``results.csv`` rows scored) has the
    steps-to-score sections; one whose oracle is not (a tiny budget) says its normalised
    scores are undefined."""
    if all(r["normalized_score"] != "" for r in rows):
        assert "steps to 50% | ratio" in text and "sample efficiency" in text
    else:
        assert UNDEFINED_SCORE in text and "steps to 50% | ratio" not in text


def test_drop_buffers_deletes_finished_sac_runs_buffers_and_keeps_their_models(
        tmp_path: Path) -> None:
    config = BenchmarkConfig((ARM,), ("state",), seeds=1, steps=200, eval_every=100,
                             eval_episodes=1, camera_shift=False)
    run_benchmark(config, tmp_path, progress=False)
    run = Cell(ARM, "state", "rl", 0, 0, 200).directory(tmp_path)
    assert list((run / "checkpoints").glob("model_replay_buffer_*.pkl"))  # kept by default
    result = (run / RESULT_FILE).read_bytes()

    # finished runs are swept when the grid starts, new ones once their result is written
    run_benchmark(dataclasses.replace(config, seeds=2, keep_buffers=False), tmp_path,
                  progress=False)
    for seed in (0, 1):
        run = Cell(ARM, "state", "rl", seed, 0, 200).directory(tmp_path)
        assert not list((run / "checkpoints").glob("model_replay_buffer_*.pkl"))
        assert list((run / "checkpoints").glob("model_*_steps.zip"))
    assert (Cell(ARM, "state", "rl", 0, 0, 200).directory(tmp_path) / RESULT_FILE
            ).read_bytes() == result  # not trained again
