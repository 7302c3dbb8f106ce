"""Bad inputs over the commands, as a new user on a fresh clone would give them: each ends in
the right behaviour or in one line naming the file, field or cause, before any work, and
never in a silently wrong result (the numbered cases of issue 50, one test or more each)."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from agents.cli import main
from gqn.checkpoint import load_checkpoint, load_model, save_checkpoint
from gqn.config import GQNConfig, TrainConfig
from gqn.model import GQN
from gqn_rl.encoders import open_checkpoint, resolve_checkpoint
from gqn_rl.wrappers import GQNObservation
from tests.agents.test_reliability import generate_arm, one_line_error

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints"
TINY = GQNConfig(image_size=32, representation="pool", r_dim=8, h_dim=4, z_dim=2, L=1)


def tiny_checkpoint(path: Path, scene: str | None) -> Path:
    model = GQN(TINY)
    save_checkpoint(path, model, torch.optim.Adam(model.parameters()), 0, TrainConfig(), rng={},
                    data=None if scene is None else {"scene": scene})
    return path


# -- 8: every checkpoint records its scene family, and every reader checks it -----------------


@pytest.mark.parametrize("name", sorted(str(p.parent.relative_to(SHIPPED))
                                        for p in SHIPPED.glob("**/checkpoint.pt")))
def test_each_shipped_checkpoint_records_its_family_and_its_card_its_digest(name: str) -> None:
    path = SHIPPED / name / "checkpoint.pt"  # a family's, or another beside it (arm_near/long)
    handle = open_checkpoint(path)
    assert handle.family == Path(name).parts[0]
    assert handle.sha256 in (SHIPPED / name / "MODEL_CARD.md").read_text()
    assert "path" not in load_checkpoint(path)["data"]  # a checkpoint names no machine


@pytest.mark.parametrize("name", sorted(str(p.relative_to(SHIPPED))
                                        for p in SHIPPED.glob("*/ceiling*.pt")))
def test_each_shipped_ceiling_loads_beside_its_base_and_its_card_gives_its_digest(name: str
                                                                                  ) -> None:
    path = SHIPPED / name
    handle = open_checkpoint(path)  # completes itself from checkpoint.pt: its digest matches
    assert handle.family == path.parent.name
    card = path.with_name(path.stem.replace("ceiling", "CEILING") + ".md")
    assert handle.sha256 in card.read_text()
    assert open_checkpoint(path.parent / "checkpoint.pt").sha256 in card.read_text()


def test_a_shepard_metzler_gqn_is_refused_on_the_arm(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    sm7 = SHIPPED / "shepard_metzler_7" / "checkpoint.pt"
    one_line_error(capsys, ["benchmark", "--env", "gqn_rl/ArmReach-v0", "--encoder",
                            "gqn-frozen", "--seeds", "1", "--steps", "300", "--checkpoint",
                            str(sm7), "--out", str(tmp_path / "grid")],
                   "pretrained on shepard_metzler_7 scenes", "arm scenes")
    assert not (tmp_path / "grid").exists()


def test_a_model_object_is_checked_like_a_path() -> None:
    """README's snippet wrapped MentalRotation in the rooms_free GQN and it ran."""
    rooms = load_model(SHIPPED / "rooms_free" / "checkpoint.pt")
    assert rooms.scene_family == "rooms_free"
    with pytest.raises(ValueError, match="the GQN given was pretrained on rooms_free scenes; "
                                         "the environment shows shepard_metzler_7"):
        GQNObservation(gym.make("gqn_rl/MentalRotation-v0"), rooms)
    sm7 = load_model(SHIPPED / "shepard_metzler_7" / "checkpoint.pt")
    wrapped = GQNObservation(gym.make("gqn_rl/MentalRotation-v0", image_size=32), sm7)
    assert wrapped.reset(seed=0)[0]["r"].size
    fresh = GQN(sm7.config)  # a fresh model knows no family: any environment takes it
    assert fresh.scene_family is None
    GQNObservation(gym.make("gqn_rl/RoomNavigation-v0"), fresh)


def test_a_checkpoint_without_a_family_is_refused_with_the_command_that_adds_it(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old = tiny_checkpoint(tmp_path / "old.pt", None)
    with pytest.raises(ValueError, match="does not record the scene family") as info:
        resolve_checkpoint(old, "arm")
    command = str(info.value).split("record it with ")[1].split()
    assert command[:2] == ["gqn-rl", "export"] and "--scene" in command
    assert resolve_checkpoint(old, None) is not None  # no family known: nothing to check
    mended = tmp_path / "NEW.pt"
    assert main([*command[1:-1], str(mended)]) == 0
    assert resolve_checkpoint(mended, "arm").family == "arm"
    assert "path" not in load_checkpoint(mended)["data"]
    one_line_error(capsys, ["export", "--checkpoint", str(mended), "--scene", "rooms_free",
                            "--out", str(tmp_path / "other.pt")],
                   "pretrained on arm scenes, not rooms_free")
    assert main(["export", "--checkpoint", str(mended), "--out", str(mended)]) == 0  # in place
    one_line_error(capsys, ["export", "--checkpoint", str(old), "--out", str(old)],
                   "it would replace a resumable checkpoint")
    one_line_error(capsys, ["export", "--checkpoint", str(mended), "--out", str(tmp_path)],
                   "is a directory")


def test_probe_refuses_a_checkpoint_without_a_family_on_data_that_has_one(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    generate_arm(tmp_path / "arm")
    one_line_error(capsys, ["probe", "--checkpoint", str(tiny_checkpoint(tmp_path / "old.pt",
                                                                         None)),
                            "--data", str(tmp_path / "arm"), "--out", str(tmp_path / "p")],
                   "does not record the scene family", "--scene arm")
    assert not (tmp_path / "p").exists()


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# -- 7: the probe's arguments are checked against the data ---------------------------------


def test_probe_refuses_more_views_per_scene_than_the_data_has(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from gqn_rl.probe import ProbeConfig

    generate_arm(tmp_path / "arm")  # 3 views
    arm = SHIPPED / "arm" / "checkpoint.pt"
    one_line_error(capsys, ["probe", "--checkpoint", str(arm), "--data", str(tmp_path / "arm"),
                            "--out", str(tmp_path / "p"), "--views-per-scene", "99"],
                   "--views-per-scene 99", "3 views per scene")
    one_line_error(capsys, ["ceiling", "--data", str(tmp_path / "arm"), "--out",
                            str(tmp_path / "p"), "--views", "9"], "--views 9", "3 views")
    assert not (tmp_path / "p").exists()
    measured = ProbeConfig(views_per_scene=4, context_views=5).for_views(3)  # the defaults
    assert (measured.views_per_scene, measured.context_views) == (3, 2)  # recorded as measured


# -- 5, 6, 12: grids: budgets, workers on Ray, an address that does not answer ---------------

ROTATION = "gqn_rl/MentalRotation-v0"  # true-state runs render nothing


def test_a_grid_refuses_runs_of_another_budget_unless_told_to_extend_them(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A grid rerun with a smaller --steps resumed from the longer runs and left their rows
    at the longer budget, without a word."""
    import dataclasses

    from agents.benchmark import check_grid_budgets
    from agents.grid import BenchmarkConfig, Cell
    from tests.agents.test_benchmark import write_result

    write_result(tmp_path, Cell(ROTATION, "state", "rl", 0, steps=4096), -1.0)
    grid = ["benchmark", "--env", ROTATION, "--encoder", "random", "state", "--seeds", "1",
            "--out", str(tmp_path), "--no-progress"]
    result = tmp_path / "runs" / "gqn_rl_MentalRotation-v0" / "state" / "rl" / "seed0"
    one_line_error(capsys, [*grid, "--steps", "2048"], str(result / "result.json"),
                   "trained for 4096 steps, more than this grid's 2048")
    one_line_error(capsys, [*grid, "--steps", "8192"], "budget of 4096 steps", "--extend")
    one_line_error(capsys, [*grid, "--steps", "2048", "--extend"], "cannot be cut")
    config = BenchmarkConfig((ROTATION,), ("random", "state"), seeds=1, steps=8192)
    check_grid_budgets(tmp_path, dataclasses.replace(config, extend=True))  # passes
    check_grid_budgets(tmp_path, dataclasses.replace(config, steps=4096))  # the same budget
    assert not (result.parents[2] / "random").exists()  # nothing ran


def test_ray_runs_at_most_workers_cells_at_once(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """--executor ray --workers 1 ran two cells at once: every cell was submitted at once."""
    import sys
    import types

    import agents.executors as executors

    state = {"in_flight": 0, "most": 0}
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: True

    def remote(**options):
        def task(function):
            def submit(*args):
                state["in_flight"] += 1
                state["most"] = max(state["most"], state["in_flight"])
                return function(*args)  # the cell runs; its result is its reference
            return types.SimpleNamespace(remote=submit)
        return task

    def wait(refs, num_returns):
        state["in_flight"] -= 1
        return refs[:1], refs[1:]

    fake.remote, fake.wait, fake.get = remote, wait, lambda ref: ref
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(executors, "_check_shared", lambda ray, root: None)
    monkeypatch.setattr(executors, "_on_ray_worker", lambda work, cell: ("done", cell))
    for workers, most in ((1, 1), (2, 2), (None, 5)):
        ended = []
        state["most"] = 0
        executors.run_on_ray(list(range(5)), str, tmp_path, None,
                             lambda cell, failure, ended=ended: ended.append(cell), workers)
        assert sorted(ended) == list(range(5)) and state["most"] == most


def test_a_ray_address_that_does_not_answer_is_a_time_out_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--address 127.0.0.1:1 hung (still waiting after 166 s)."""
    import time

    start = time.monotonic()
    one_line_error(capsys, ["benchmark", "--env", ROTATION, "--encoder", "random", "--seeds",
                            "1", "--out", str(tmp_path / "grid"), "--executor", "ray",
                            "--address", "127.0.0.1:1", "--address-timeout", "2"],
                   "--address 127.0.0.1:1: no Ray cluster answered within 2 s")
    assert time.monotonic() - start < 10 and not (tmp_path / "grid").exists()


# -- 13: demo --pretrain against an existing demo folder -----------------------------------


def test_demo_refuses_a_folder_it_could_not_finish_before_rendering(tmp_path: Path) -> None:
    """demo --pretrain over an existing demo folder failed after rendering and pretraining
    (about ten minutes), leaving data behind."""
    from agents.demo import ENV, DemoConfig, run_demo
    from agents.grid import Cell
    from tests.agents.test_benchmark import write_result

    run = Cell(ENV, "gqn-frozen", "rl", 0, steps=2048).directory(tmp_path) / "run.json"
    run.parent.mkdir(parents=True)
    run.write_text("{}")  # a run of the shipped GQN
    with pytest.raises(ValueError, match="--pretrain would train a new one"):
        run_demo(tmp_path, DemoConfig(steps=2048, pretrain=True), progress=False)
    run.unlink()
    write_result(tmp_path, Cell(ENV, "state", "rl", 0, steps=4096), -1.0)
    with pytest.raises(ValueError, match="trained for 4096 steps, more than this grid's 2048"):
        run_demo(tmp_path, DemoConfig(steps=2048, pretrain=True), progress=False)
    assert {p.name for p in tmp_path.iterdir()} == {"runs"}  # nothing rendered


# -- 14, 16, 17, 18: errors that name the file and the cause, checks before work ------------


def test_a_full_disk_is_named_with_the_file(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import shutil

    import gqn.fileio
    from gqn.fileio import atomic_write

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gqn.fileio.os, "fsync", full)
    err = one_line_error(capsys, ["data", "generate", "--scene", "arm", "--out",
                                  str(tmp_path / "d"), "--scenes", "2", "--image-size", "16",
                                  "--workers", "1", "--no-progress"],
                         "No space left on device", str(tmp_path / "d"))
    assert "cannot write" in err
    monkeypatch.undo()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(gqn.fileio.shutil, "disk_usage", lambda path: usage._replace(free=0))

    def short_write(f) -> None:  # numpy's tofile on a full disk: no errno
        raise OSError("7864320 requested and 2088832 written")

    with pytest.raises(OSError, match=r"cannot write .*x\.npy: No space left on device \(78"):
        atomic_write(tmp_path / "x.npy", short_write)
    assert list(tmp_path.glob("x.npy*")) == []


def test_a_full_disk_while_an_agent_trains_names_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """SB3's and TensorBoard's own writes name no file: the run directory is named."""
    import errno

    from stable_baselines3 import PPO

    def full(*args, **kwargs) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PPO, "learn", full)
    out = tmp_path / "run"
    one_line_error(capsys, ["train", "--env", "gqn_rl/MentalRotation-v0", "--encoder", "state",
                            "--algo", "ppo", "--steps", "1024", "--out", str(out),
                            "--no-progress"],
                   f"cannot write the run under {out}: No space left on device")


def test_malformed_json_records_are_named(tmp_path: Path, capsys: pytest.CaptureFixture
                                          ) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"config": {"env": ')
    (run / "final_model.zip").write_bytes(b"")
    one_line_error(capsys, ["evaluate", str(run)], str(run / "run.json"), "not valid JSON")
    import gqn.train

    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not a metrics line"):
        gqn.train._read_metrics(run / "metrics.jsonl", 10)


@pytest.mark.parametrize("where", ["{file}/sub/x.gif", "{tmp}"])
def test_episode_checks_its_out_before_playing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch,
                                               where: str) -> None:
    import agents.episodes

    (tmp_path / "notes.txt").write_text("a file")
    out = where.format(file=tmp_path / "notes.txt", tmp=tmp_path)
    monkeypatch.setattr(agents.episodes, "run_episodes", lambda *a, **k: pytest.fail("played"))
    one_line_error(capsys, ["episode", "--env", "gqn_rl/ArmReach-v0", "--out", out], "--out")


def test_episode_makes_the_folders_of_its_out(tmp_path: Path) -> None:
    out = tmp_path / "new" / "sub" / "x.gif"
    assert main(["episode", "--env", "gqn_rl/MentalRotation-v0", "--image-size", "32",
                 "--out", str(out)]) == 0
    assert out.stat().st_size > 0


def test_only_rank_0_prints_under_ddp(tmp_path: Path, capsys: pytest.CaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import gqn.train

    for rank, printed in ((1, ""), (0, "step 3: checkpoint")):
        result = gqn.train.PretrainResult(3, [], tmp_path / "checkpoint.pt", rank)
        monkeypatch.setattr(gqn.train, "pretrain", lambda *a, result=result, **k: result)
        assert main(["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                     "--no-probe"]) == 0
        assert capsys.readouterr().out.startswith(printed)


# -- 3, 4: reports that match their runs, scores that do not explode ------------------------


def test_scores_are_undefined_when_the_oracle_is_within_random_s_spread(tmp_path: Path) -> None:
    """demo --steps 2048 --seeds 1 gave state -2.097 against random -2.128, then pixels 404.4
    and scripted 28572.0, and filled the steps-to-50% table."""
    from agents.benchmark import results, rows, scales
    from agents.grid import Cell
    from agents.report import write_report
    from tests.agents.test_benchmark import write_result

    spread = {"episodes": 50, "std_return": 0.5}
    write_result(tmp_path, Cell(ROTATION, "random", "rl", 0), -2.128, **spread)
    write_result(tmp_path, Cell(ROTATION, "scripted", "rl", 0), 6.0, **spread)
    write_result(tmp_path, Cell(ROTATION, "state", "rl", 0, steps=2048), -2.097, **spread)
    write_result(tmp_path, Cell(ROTATION, "pixels", "rl", 0, steps=2048), -2.0, **spread)
    scale = scales(results(tmp_path))[ROTATION, "rl", 0]
    assert "not clear of the `random` policy's -2.13 (+- 0.5)" in scale.undefined
    assert all(r["normalized_score"] is None for r in rows(results(tmp_path)))
    text = write_report(tmp_path).read_text()
    assert "undefined (oracle not clear of random)" in text and "| steps to 50%" not in text
    write_result(tmp_path, Cell(ROTATION, "state", "rl", 0, steps=2048), 4.0, **spread)
    scored = {r["encoder"]: r["normalized_score"] for r in rows(results(tmp_path))}
    assert scored["state"] == pytest.approx(100) and scored["random"] == pytest.approx(0)


def test_report_and_publish_rebuild_results_csv_from_the_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """After a run directory was deleted, report.md said 7 runs and the published
    results.csv held 8 rows; a corrupt results.csv was published as it was."""
    import csv
    import shutil

    from agents.grid import Cell
    from tests.agents.test_benchmark import write_result

    grid = tmp_path / "grid"
    for seed in range(2):
        write_result(grid, Cell(ROTATION, "random", "rl", seed), -1.0)
        write_result(grid, Cell(ROTATION, "state", "rl", seed, steps=64), 5.0)
    assert main(["report", str(grid)]) == 0
    shutil.rmtree(Cell(ROTATION, "state", "rl", 1, steps=64).directory(grid))
    (grid / "results.csv").write_text("garbage,,,\n")
    (tmp_path / "file").write_text("not a folder")
    before = (grid / "report.md").read_bytes()
    one_line_error(capsys, ["report", str(grid), "--publish", str(tmp_path / "file")],
                   "--publish", "is a file")
    assert (grid / "report.md").read_bytes() == before  # refused before it was rewritten
    published = tmp_path / "published"
    assert main(["report", str(grid), "--publish", str(published)]) == 0
    for folder in (grid, published):
        with open(folder / "results.csv") as f:
            table = list(csv.DictReader(f))
        assert len(table) == 3 and {r["encoder"] for r in table} == {"random", "state"}
        assert "3 runs" in (folder / "report.md").read_text()
    assert len(list(published.glob("runs/*/*/*/seed*/result.json"))) == 3


# -- the drill: bad inputs over every command, each one line, no traceback, nothing written --


@pytest.fixture(scope="module")
def drill_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What the drill's commands point at: a tiny arm dataset, the same left unfinished, a
    grid with a finished run, a text file, random bytes and the shipped checkpoints."""
    from agents.grid import Cell
    from tests.agents.test_benchmark import write_result

    root = tmp_path_factory.mktemp("drill")
    generate_arm(root / "arm")
    unfinished = root / "unfinished"
    generate_arm(unfinished)
    manifest = json.loads((unfinished / "manifest.json").read_text())
    manifest["planned_shards"]["train"] += 1  # as if its writer was killed
    (unfinished / "manifest.json").write_text(json.dumps(manifest))
    write_result(root / "grid", Cell(ROTATION, "random", "rl", 0), -1.0)
    (root / "notes.txt").write_text("not a checkpoint\n")
    (root / "random.bin").write_bytes(bytes(range(256)) * 4)
    return {"tmp": root, "arm": root / "arm", "unfinished": unfinished, "grid": root / "grid",
            "text": root / "notes.txt", "binary": root / "random.bin",
            "sm7": SHIPPED / "shepard_metzler_7" / "checkpoint.pt",
            "armgqn": SHIPPED / "arm" / "checkpoint.pt"}


PRETRAIN = ["pretrain", "--data", "{arm}", "--out", "{tmp}/new-run", "--no-progress",
            "--no-probe"]
TRAIN = ["train", "--env", "gqn_rl/ArmReach-v0", "--steps", "1024", "--out", "{tmp}/new-run"]
GRID = ["benchmark", "--env", ROTATION, "--encoder", "random", "--seeds", "1", "--out",
        "{tmp}/new-run"]
DRILL = [
    (["data", "generate", "--scene", "arm", "--out", "{tmp}/new-run", "--scenes", "2",
      "--views", "1"], ["views must be >= 2"]),
    (["data", "generate", "--scene", "arm", "--out", "{text}", "--scenes", "2"], ["{text}"]),
    (["data", "generate", "--scene", "arm", "--out", "{arm}", "--scenes", "4",
      "--test-scenes", "2", "--image-size", "32", "--views", "4", "--shard-size", "2"],
     ["disagrees with this writer on views", "views changed from 3 to 4"]),
    (["data", "generate", "--scene", "arm", "--out", "{arm}", "--scenes", "6",
      "--test-scenes", "2", "--image-size", "32", "--views", "3", "--shard-size", "2"],
     ["meta.scenes changed from 4 to 6"]),
    (["data", "import-deepmind", "--src", "{tmp}/missing", "--out", "{tmp}/new-run"],
     ["{tmp}/missing"]),
    (["data", "masks", "{tmp}"], ["no dataset manifest at"]),
    (["pretrain", "--data", "{tmp}", "--out", "{tmp}/new-run"], ["no dataset manifest at"]),
    (["pretrain", "--data", "{unfinished}", "--out", "{tmp}/new-run"],
     ["unfinished: 2 of the 3 shards of the train split"]),
    ([*PRETRAIN[:4], "{text}", *PRETRAIN[5:]], ["--out {text} is a file"]),
    ([*PRETRAIN, "--max-context", "3"], ["--max-context 3", "at most 2 context views"]),
    ([*PRETRAIN, "--preset", "paper"], ["images are 32x32, the GQN reads 64x64"]),
    ([*PRETRAIN, "--resume"], ["no checkpoint at"]),
    ([*PRETRAIN, "--kl-weight", "0"], ["kl_weight must be > 0"]),
    ([*PRETRAIN, "--sigma-end", "-1"], ["sigma_end must be > 0"]),
    ([*PRETRAIN, "--object-weight", "2"], ["gqn-rl data masks"]),
    ([*PRETRAIN, "--precision", "fp16"], ["fp16 needs a GPU"]),
    ([*PRETRAIN, "--steps", "5", "--until", "9"], ["until must be in 1..steps=5"]),
    (["export", "--checkpoint", "{text}", "--out", "{tmp}/x.pt"], ["not a gqn-rl checkpoint"]),
    (["export", "--checkpoint", "{tmp}/none.pt", "--out", "{tmp}/x.pt"], ["no checkpoint at"]),
    (["export", "--checkpoint", "{armgqn}", "--out", "{tmp}"], ["is a directory"]),
    (["export", "--checkpoint", "{armgqn}", "--out", "{text}/x.pt"], ["is a file"]),
    (["export", "--checkpoint", "{armgqn}", "--scene", "rooms_free", "--out", "{tmp}/x.pt"],
     ["pretrained on arm scenes, not rooms_free"]),
    (["probe", "--checkpoint", "{armgqn}", "--data", "{tmp}", "--out", "{tmp}/new-run"],
     ["no dataset manifest at"]),
    (["probe", "--checkpoint", "{armgqn}", "--data", "{arm}", "--out", "{text}"],
     ["is a file"]),
    (["probe", "--checkpoint", "{armgqn}", "--data", "{arm}", "--out", "{tmp}/new-run",
      "--split", "valid"], ["unknown split 'valid'"]),
    (["probe", "--checkpoint", "{sm7}", "--data", "{arm}", "--out", "{tmp}/new-run"],
     ["pretrained on shepard_metzler_7 scenes"]),
    (["probe", "--checkpoint", "{armgqn}", "--data", "{unfinished}", "--out",
      "{tmp}/new-run"], ["unfinished"]),
    (["ceiling", "--data", "{arm}", "--out", "{text}"], ["is a file"]),
    (["ceiling", "--data", "{arm}", "--out", "{tmp}/new-run", "--split", "valid"],
     ["unknown split 'valid'"]),
    ([*TRAIN, "--encoder", "state", "--hyperparams", "n_envs=0"], ["n_envs"]),
    ([*TRAIN, "--encoder", "state", "--resume"], ["nothing to resume"]),
    ([*TRAIN, "--encoder", "gqn-frozen", "--checkpoint", "{sm7}"],
     ["pretrained on shepard_metzler_7 scenes", "arm scenes"]),
    ([*TRAIN, "--encoder", "gqn-frozen", "--checkpoint", "{sm7}", "--fresh-encoder"],
     ["exclude each other"]),
    ([*TRAIN, "--encoder", "gqn-frozen", "--intrinsic-bonus"], ["--intrinsic-bonus"]),
    ([*TRAIN, "--encoder", "gqn-frozen", "--checkpoint", "{binary}"],
     ["not a gqn-rl checkpoint"]),
    (["evaluate", "{tmp}/missing"], ["not found", "finished gqn-rl train run"]),
    (["evaluate", "{tmp}/missing", "--gif", "{tmp}"], ["--gif {tmp} is a directory"]),
    ([*GRID[:2], "Pendulum-v1", *GRID[3:]], ["the benchmark has recipes for"]),
    ([*GRID, "--track", "bc", "--steps", "10"], ["--steps sets the rl track's budget"]),
    ([*GRID, "--demos", "3"], ["--demos sets the bc track"]),
    ([*GRID, "--checkpoint", "{armgqn}"], ["none of the encoders"]),
    ([*GRID[:-1], "{text}"], ["is a file"]),
    ([*GRID, "--address", "127.0.0.1:6379"], ["--address is the Ray cluster"]),
    ([*GRID, "--address-timeout", "3"], ["--address-timeout is the wait for --address"]),
    ([*GRID, "--executor", "ray", "--address", "127.0.0.1:1", "--address-timeout", "0"],
     ["--address-timeout must be > 0"]),
    (["report", "{tmp}/new-run"], ["no finished benchmark runs"]),
    (["report", "{grid}", "--publish", "{grid}"], ["is the grid directory itself"]),
    (["report", "{grid}", "--publish", "{text}"], ["--publish {text} is a file"]),
    (["episode", "--env", "gqn_rl/ArmReach-v0", "--out", "{text}/x.gif"], ["--out"]),
    (["episode", "--env", "gqn_rl/ArmReach-v0", "--out", "{tmp}"], ["is a directory"]),
]


@pytest.mark.parametrize(("argv", "needles"), DRILL,
                         ids=[f"{i:02d}-{' '.join(a[:2])}" for i, (a, _) in enumerate(DRILL)])
def test_the_drill_s_bad_inputs_are_one_line_before_any_work(
        drill_files: dict[str, Path], capsys: pytest.CaptureFixture, argv: list[str],
        needles: list[str]) -> None:
    def fill(text: str) -> str:
        return text.format(**{k: str(v) for k, v in drill_files.items()})

    before = sorted(p for p in drill_files["tmp"].rglob("*") if ".write-check" not in p.name)
    one_line_error(capsys, [fill(a) for a in argv], *(fill(n) for n in needles))
    assert not (drill_files["tmp"] / "new-run").exists()
    assert sorted(drill_files["tmp"].rglob("*")) == before  # nothing written, nothing lost


@pytest.mark.parametrize("argv", [
    ["data", "generate", "--scene", "nope", "--out", "x", "--scenes", "2"],
    ["data", "generate", "--scene", "arm", "--out", "x", "--scenes", "0"],
    ["pretrain", "--data", "x", "--out", "y", "--precision", "fp8"],
    ["pretrain", "--data", "x", "--out", "y", "--device", "tpu"],
    ["export", "--checkpoint", "x", "--out", "y", "--scene", "nope"],
    ["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "nope", "--steps", "8"],
    ["benchmark", "--env", ROTATION, "--encoder", "random", "--seeds", "0", "--out", "x"],
    ["benchmark", "--env", ROTATION, "--encoder", "random", "--seeds", "1", "--out", "x",
     "--address-timeout", "soon"],
])
def test_the_drill_s_malformed_flags_are_argparse_s_usage_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        argv: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "error: argument" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())
