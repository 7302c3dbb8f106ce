"""A grid's progress bar counts environment steps across its runs: each run writes its steps
while it trains, and the bar reads them, finished runs whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.callbacks import PROGRESS_FILE
from agents.grid import Cell
from agents.progress import GridProgress, steps_trained
from agents.runs import RunConfig
from agents.train import train

ENV = "gqn_rl/MentalRotation-v0"


def write_steps(cell: Cell, root: Path, steps: object) -> None:
    directory = cell.directory(root)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PROGRESS_FILE).write_text(json.dumps({"steps": steps}))


def test_a_run_writes_the_steps_it_has_trained(tmp_path: Path) -> None:
    run = RunConfig(ENV, "state", "ppo", 128, eval_every=64, eval_episodes=1,
                    checkpoint_every=64,
                    overrides={"n_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 1})
    train(run, tmp_path, progress=False)
    assert json.loads((tmp_path / PROGRESS_FILE).read_text()) == {"steps": 128}


def test_the_bar_counts_steps_of_running_and_finished_runs(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    reference = Cell(ENV, "random", "rl", 0)
    done, running, waiting = (Cell(ENV, e, "rl", 0, steps=1000)
                              for e in ("state", "pixels", "gqn-frozen"))
    cells = [reference, done, running, waiting]
    write_steps(running, tmp_path, 250)
    write_steps(waiting, tmp_path, "not a number")  # a file being written: counts 0
    assert steps_trained(running, tmp_path) == 250 and steps_trained(waiting, tmp_path) == 0
    with GridProgress(cells, {reference, done}, tmp_path, every=0.01) as progress:
        assert (progress.unit, progress.bar.total, progress.bar.n) == ("step", 3000, 1250)
        write_steps(running, tmp_path, 5000)  # past its budget: counts the budget
        progress.refresh()
        assert progress.bar.n == 2000
        progress.finished(running)
        write_steps(waiting, tmp_path, 400)
        progress.refresh()
        assert progress.bar.n == 2400
    shown = capsys.readouterr().err
    assert "2.40k/3.00k" in shown and "3/4 runs" in shown


def test_a_grid_that_trains_nothing_counts_runs(tmp_path: Path) -> None:
    cells = [Cell(ENV, "random", "rl", seed) for seed in range(3)]
    with GridProgress(cells, {cells[0]}, tmp_path) as progress:
        assert (progress.unit, progress.bar.total, progress.bar.n) == ("run", 3, 1)
        progress.finished(cells[1])
        assert progress.bar.n == 2
