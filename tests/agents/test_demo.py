"""`gqn-rl demo` end to end at a tiny size (slow): the benchmark report with its extras, that a
rerun redoes nothing, and the pretraining option; and (fast) that the demo and the commands'
defaults run the newest version of each environment, which gymnasium does not warn about."""

import json
import warnings
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import pytest

import envs
from agents.cli import build_parser
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


SHIPPED = shipped_checkpoint(FAMILY)
NOT_SHIPPED = (f"no GQN checkpoint is shipped for {FAMILY} yet (checkpoints/{FAMILY}/"
               f"checkpoint.pt): the demo on {ENV} uses it")


def test_the_demo_and_the_commands_default_to_the_newest_environments() -> None:
    assert ENV in envs.CURRENT and FAMILY == "rooms_near"
    parser = build_parser()
    assert parser.parse_args(["speed", "env"]).env == list(envs.CURRENT)
    assert parser.parse_args(["speed", "wrapper"]).env in envs.CURRENT
    assert parser.parse_args(["speed", "sac"]).env in envs.CURRENT
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for env_id in envs.CURRENT:
            gym.make(env_id, obs_mode="state").close()
    with pytest.warns(DeprecationWarning, match="out of date"):  # where the warning comes from
        gym.make("gqn_rl/RoomNavigation-v0", obs_mode="state").close()


@pytest.mark.slow
@pytest.mark.skipif(SHIPPED is None, reason=NOT_SHIPPED)
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
    env_name = ENV.split("/")[1]
    for name in (f"scores_{env_name}_rl.png", f"curves_{env_name}_rl.png"):
        assert (tmp_path / name).is_file() == defined, name
    grid = iio.imread(tmp_path / "gqn_samples.png")
    assert grid.shape[1] == 5 * 32 * 3  # 3 context views, truth, sample; 3x enlarged
    assert run_json(tmp_path, "gqn-frozen", 256)["checkpoint"] == str(SHIPPED)
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
