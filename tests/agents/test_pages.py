"""``gqn-rl report --pages``: each environment's reference page, from hand-written run records."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from agents.cli import build_parser, main
from agents.grid import BenchmarkConfig, Cell
from agents.pages import GENERATED, Pages, write_pages
from agents.report import compose_report
from tests.agents.test_benchmark import ARM, ROTATION, write_result

KINDS = {"random": -100.0, "state": 0.0, "pixels-aug": -50.0, "gqn-frozen": -40.0}


def write_grid(root: Path, env: str = ARM, steps: int = 64, eval_episodes: int = 3,
               curves: bool = True, first_seed: int = 0) -> None:
    """Two seeds of ``KINDS`` from ``first_seed``, each trained run with its evaluations
    (``curves``); ArmReach's image kinds with their camera-shift successes."""
    for seed in range(first_seed, first_seed + 2):
        for encoder, mean in KINDS.items():
            trained = encoder != "random"
            cell = Cell(env, encoder, "rl", seed, steps=steps if trained else 0)
            shift = ({"success_moving_camera": 0.1 * seed, "success_outside_ring": 0.2}
                     if env == ARM and encoder in ("pixels-aug", "gqn-frozen") else {})
            path = write_result(root, cell, mean + seed, episodes=eval_episodes,
                                date=f"2026-01-0{seed + 1} 10:00 UTC", **shift)
            if trained and curves:
                (path.parent / "eval").mkdir()
                returns = np.linspace(-100, mean + seed, 2)[:, None].repeat(eval_episodes, 1)
                np.savez(path.parent / "eval" / "evaluations.npz",
                         timesteps=np.array([steps // 2, steps]), results=returns)


def links(page: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", page.read_text())


def test_pages_hold_how_the_grid_ran_and_its_tables_and_link_into_the_published_copy(
        tmp_path: Path) -> None:
    grid, published, pages = tmp_path / "grid", tmp_path / "docs/results/grid-arm", \
        tmp_path / "docs/results"
    write_grid(grid)
    write_grid(grid, ROTATION, curves=False)
    assert main(["report", str(grid), "--publish", str(published), "--pages", str(pages),
                 "--machine", "two CPU cores"]) == 0
    assert sorted(p.name for p in pages.glob("*.md")) == ["ArmReach-v0.md",
                                                          "MentalRotation-v0.md"]
    page = pages / "ArmReach-v0.md"
    text = page.read_text()
    assert text.startswith(GENERATED + "\n\n# ArmReach-v0\n")
    assert "8 runs, 4 kinds, seeds 0-1" in text
    assert "| runs finished | 2026-01-01 10:00 UTC to 2026-01-02 10:00 UTC |" in text
    assert "| machine | two CPU cores |" in text
    assert ("| report | `gqn-rl report runs/grid-arm --publish " + str(published) + " --pages "
            + str(pages) + " --machine 'two CPU cores'` |") in text
    # the report's sections for this environment only: scores, curves, steps, camera shift
    assert "| gqn-frozen | 2 | -39.5 |" in text and "curves_MentalRotation" not in text
    for section in ("P(improvement over pixels-aug)", "steps to 50% | ratio",
                    "Camera shift", "## RL track"):
        assert section in text
    for target in links(page):  # every link reaches the published copy
        assert (page.parent / target).exists(), target
    assert "](grid-arm/curves_ArmReach-v0_rl.png)" in text


@pytest.mark.parametrize("first_seed", [0, 3])
def test_the_page_s_command_makes_the_same_grid_again(tmp_path: Path, first_seed: int) -> None:
    grid = tmp_path / "grid"
    write_grid(grid, steps=64, eval_episodes=3, first_seed=first_seed)
    report = compose_report(grid)
    [page] = write_pages(report, Pages(tmp_path, grid, published=False))
    command = re.search(r"\| grid \| `(.*)` \|", page.read_text())[1]
    assert command.endswith(f"--out {grid}")  # not published: the grid itself
    args = build_parser().parse_args(shlex.split(command)[1:])
    config = BenchmarkConfig(tuple(args.env), tuple(args.encoder), args.seeds,
                             first_seed=args.first_seed, steps=args.steps,
                             eval_episodes=args.eval_episodes,
                             final_episodes=args.final_episodes)
    made = {Cell(**json.loads(path.read_text())["cell"])
            for path in grid.glob("runs/*/*/*/seed*/result.json")}
    assert set(config.cells()) == made
    assert (config.steps, config.eval_episodes, config.final) == (64, 3, 3)
    given = "gqn-rl benchmark --env X --workers 2"
    write_pages(report, Pages(tmp_path, grid, command=given, published=False))
    assert f"| grid | `{given}` |" in page.read_text()


def test_page_flags_need_pages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_grid(tmp_path)
    assert main(["report", str(tmp_path), "--machine", "two cores"]) == 2
    assert "add --pages" in capsys.readouterr().err
