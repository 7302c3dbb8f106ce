"""`gqn-rl demo` end to end at a tiny size (slow): the benchmark report with its extras, that a
rerun redoes nothing, and the pretraining option."""

import json
from pathlib import Path

import imageio.v3 as iio
import pytest

from agents.demo import ENV, FAMILY, DemoConfig, run_demo
from agents.grid import Cell
from agents.report import UNDEFINED_SCORE
from gqn_rl.encoders import shipped_checkpoint
from tests.agents.test_benchmark import assert_scores_defined_as_the_returns_say, read_rows

TINY = DemoConfig(steps=256, seeds=1, eval_every=128, eval_episodes=1, final_episodes=2,
                  workers=1,
                  overrides={"n_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 1})


def run_json(out: Path, encoder: str, steps: int) -> dict:
    return json.loads((Cell(ENV, encoder, "rl", 0, 0, steps).directory(out) / "run.json")
                      .read_text())


@pytest.mark.slow
def test_demo_reports_every_agent_against_the_references(tmp_path: Path) -> None:
    report = run_demo(tmp_path, TINY, progress=False)
    text = report.read_text()
    for encoder in ("random", "scripted", "state", "gqn-frozen", "pixels", "pixels-aug"):
        assert f"| {encoder} |" in text, encoder
    assert "normalised score, IQM [95% CI]" in text
    assert_scores_defined_as_the_returns_say(read_rows(tmp_path / "results.csv"), text)
    assert "![GQN samples](gqn_samples.png)" in text
    for name in ("gqn_samples.png", "episode_gqn-frozen.gif"):
        assert (tmp_path / name).stat().st_size > 0, name
    defined = UNDEFINED_SCORE not in text  # the oracle above random in 256 steps, or not
    for name in ("scores_RoomNavigation-v0_rl.png", "curves_RoomNavigation-v0_rl.png"):
        assert (tmp_path / name).is_file() == defined, name
    grid = iio.imread(tmp_path / "gqn_samples.png")
    assert grid.shape[1] == 5 * 32 * 3  # 3 context views, truth, sample; 3x enlarged
    assert run_json(tmp_path, "gqn-frozen", 256)["checkpoint"] == str(shipped_checkpoint(FAMILY))
    assert not (tmp_path / "gqn").exists(), "without --pretrain the shipped GQN is used"

    done = sorted(tmp_path.glob("runs/*/*/rl/seed0/*.json")) + [tmp_path / "episode_gqn-frozen.gif"]
    written = {path: path.stat().st_mtime_ns for path in done}
    rerun = run_demo(tmp_path, TINY, progress=False).read_text()
    assert rerun.count("| pixels |") == text.count("| pixels |")
    assert {path: path.stat().st_mtime_ns for path in done} == written, \
        "a rerun of a finished demo trained or evaluated again"


@pytest.mark.slow
def test_demo_can_pretrain_its_own_gqn(tmp_path: Path) -> None:
    config = DemoConfig(steps=128, seeds=1, eval_every=64, eval_episodes=1, final_episodes=1,
                        workers=1, encoders=("random", "state", "gqn-frozen"), pretrain=True,
                        scenes=12, pretrain_steps=4, overrides=TINY.overrides)
    text = run_demo(tmp_path, config, progress=False).read_text()
    checkpoint = tmp_path / "gqn" / "checkpoint.pt"
    assert checkpoint.is_file() and str(checkpoint) in text
    assert run_json(tmp_path, "gqn-frozen", 128)["checkpoint"] == str(checkpoint)
