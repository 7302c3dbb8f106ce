"""`gqn-rl demo` end to end at a tiny size, and that it finishes an interrupted run."""

from pathlib import Path

import imageio.v3 as iio

from agents.demo import DemoConfig, run_demo

TINY = DemoConfig(scenes=12, pretrain_steps=4, agent_steps=256, eval_episodes=1,
                  final_episodes=2)


def test_demo_writes_a_report_with_both_agents(tmp_path: Path) -> None:
    report = run_demo(tmp_path, TINY, progress=False)
    text = report.read_text()
    assert "| gqn-frozen |" in text and "| pixels |" in text
    for name in ("learning_curves.png", "gqn_samples.png", "episode_gqn-frozen.gif"):
        assert (tmp_path / name).stat().st_size > 0, name
    grid = iio.imread(tmp_path / "gqn_samples.png")
    assert grid.shape[1] == 5 * 32 * 3  # 3 context views, truth, sample; 3x enlarged
    model = (tmp_path / "pixels" / "final_model.zip").stat().st_mtime
    run_demo(tmp_path, TINY, progress=False)  # again: every stage is already done
    assert (tmp_path / "pixels" / "final_model.zip").stat().st_mtime >= model
