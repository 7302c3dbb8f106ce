"""`gqn-rl demo` end to end at a tiny size (slow), that a rerun redoes nothing, and its
learning-curve plot (fast)."""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from agents.demo import DemoConfig, plot_curves, run_demo

TINY = DemoConfig(scenes=12, pretrain_steps=4, agent_steps=256, eval_episodes=1,
                  final_episodes=2)


def test_learning_curves_plot_every_run(tmp_path: Path) -> None:
    runs = {}
    for name in ("a", "b"):
        (tmp_path / name / "eval").mkdir(parents=True)
        np.savez(tmp_path / name / "eval" / "evaluations.npz", timesteps=np.array([10, 20]),
                 results=np.array([[0.0, 1.0], [2.0, 3.0]]))
        runs[name] = tmp_path / name
    plot_curves(runs, tmp_path / "curves.png")
    image = iio.imread(tmp_path / "curves.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0
    assert not list(tmp_path.glob("*.tmp")), "the plot is written atomically"


@pytest.mark.slow
def test_demo_writes_a_report_with_both_agents(tmp_path: Path) -> None:
    report = run_demo(tmp_path, TINY, progress=False)
    text = report.read_text()
    assert "| gqn-frozen |" in text and "| pixels |" in text
    for name in ("learning_curves.png", "gqn_samples.png", "episode_gqn-frozen.gif"):
        assert (tmp_path / name).stat().st_size > 0, name
    grid = iio.imread(tmp_path / "gqn_samples.png")
    assert grid.shape[1] == 5 * 32 * 3  # 3 context views, truth, sample; 3x enlarged
    done = ["gqn/checkpoint.pt", "pixels/final_model.zip", "pixels/evaluation.json",
            "gqn-frozen/final_model.zip", "episode_pixels.gif"]
    written = {name: (tmp_path / name).stat().st_mtime_ns for name in done}
    assert run_demo(tmp_path, TINY, progress=False).read_text().count("| pixels |") == 1
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in done} == written, \
        "a rerun of a finished demo wrote its stages again"
