"""The downstream ceiling: a representation network supervised on the truth, saved as a GQN
checkpoint that the frozen wrappers load like any other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.cli import main
from gqn.checkpoint import load_checkpoint
from gqn_rl.ceiling import CeilingConfig, save_ceiling, train_ceiling
from gqn_rl.encoders import open_checkpoint
from tests.gqn_rl.test_probe import TINY_MODEL, write_arm_like_dataset

TINY = CeilingConfig(epochs=30, patience=10, batch_size=32, test_scenes=30, val_fraction=0.2)


def test_a_ceiling_learns_the_planted_colour_and_saves_as_a_gqn(tmp_path: Path) -> None:
    data = write_arm_like_dataset(tmp_path / "data")
    seen = []
    ceiling = train_ceiling(data, TINY_MODEL, TINY, on_epoch=lambda e, loss: seen.append(e))
    record = ceiling.record
    assert seen == list(range(1, record["epochs"] + 1)) and len(record["curve"]) == len(seen)
    assert record["r2"]["wall_colour"] > 0.6 > record["r2"]["hand_position"]  # planted, noise
    assert record["data"]["train_scenes"] == 60 and record["data"]["val_scenes"] == 12
    path = tmp_path / "ceiling.pt"
    save_ceiling(path, ceiling, None, TINY_MODEL)
    handle = open_checkpoint(path)
    assert handle.family == "arm-like" and load_checkpoint(path)["ceiling"]["curve"]
    x, v = torch.rand(2, 3, 16, 16), torch.rand(2, 7)
    torch.testing.assert_close(handle.new_model().representation(x, v),
                               ceiling.representation(x, v))


def test_a_ceiling_over_several_views_sums_them(tmp_path: Path) -> None:
    data = write_arm_like_dataset(tmp_path / "data")
    ceiling = train_ceiling(data, TINY_MODEL, CeilingConfig(**{**TINY.__dict__, "views": 3}))
    assert ceiling.record["config"]["views"] == 3 and np.isfinite(ceiling.record["curve"]).all()
    with pytest.raises(ValueError, match="--views 5: .* has 4 views a scene"):
        train_ceiling(data, TINY_MODEL, CeilingConfig(views=5))


def test_a_ceiling_through_a_linear_head_puts_the_truth_linearly_into_r(tmp_path: Path
                                                                         ) -> None:
    data = write_arm_like_dataset(tmp_path / "data")
    ceiling = train_ceiling(data, TINY_MODEL, CeilingConfig(**{**TINY.__dict__, "head": "linear"}))
    assert ceiling.record["config"]["head"] == "linear"
    assert ceiling.record["r2"]["wall_colour"] > 0.5  # the planted colour, read linearly
    with pytest.raises(ValueError, match="ceiling head must be one of"):
        CeilingConfig(head="deep")


def test_a_ceiling_refuses_another_family_or_image_size(tmp_path: Path) -> None:
    data = write_arm_like_dataset(tmp_path / "data")
    with pytest.raises(ValueError, match="holds arm-like scenes, the ceiling is for arm_near"):
        train_ceiling(data, TINY_MODEL, TINY, family="arm_near")
    with pytest.raises(ValueError, match="16x16 images, the architecture reads 32x32"):
        train_ceiling(data, TINY_MODEL.__class__(**{**TINY_MODEL.__dict__, "image_size": 32}),
                      TINY)


def test_cli_ceiling_save_checkpoint_writes_checkpoint_record_and_card(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_arm_like_dataset(tmp_path / "data")
    out, save = tmp_path / "out", tmp_path / "ceiling.pt"
    args = ["ceiling", "--data", str(data), "--out", str(out), "--save-checkpoint", str(save),
            "--representation", "pool", "--epochs", "3", "--patience", "1"]
    assert main(args) == 2  # the preset's architecture reads 32x32: refused by name
    assert "16x16 images, the architecture reads 32x32" in capsys.readouterr().err
    unsaved = [a for a in args if a not in ("--save-checkpoint", str(save))]
    assert main([*unsaved, "--head", "linear"]) == 2  # meaningless without a checkpoint
    assert "--epochs --head: only with --save-checkpoint" in capsys.readouterr().err
    base = tmp_path / "base.pt"
    save_ceiling(base, train_ceiling(data, TINY_MODEL, TINY), None, TINY_MODEL)
    assert main([*args, "--checkpoint", str(base), "--no-progress"]) == 0
    record = json.loads((out / "ceiling.json").read_text())
    assert record["epochs"] == len(record["curve"]) <= 3 and "--save-checkpoint" in \
        record["command"]
    assert open_checkpoint(save).config == TINY_MODEL
    assert record["base"] == {"file": "base.pt", "sha256": open_checkpoint(base).sha256}
    assert "| wall_colour |" in (out / "CEILING.md").read_text()
    printed = capsys.readouterr().out
    assert (out / "ceiling_curve.png").is_file() and "wall_colour" in printed
    assert "epoch 1: validation loss" in printed and not (out / "ceiling-state.pt").exists()


def test_a_ceiling_saved_beside_its_base_holds_its_representation_only(tmp_path: Path) -> None:
    data = write_arm_like_dataset(tmp_path / "data")
    ceiling = train_ceiling(data, TINY_MODEL, CeilingConfig(epochs=2, patience=2, test_scenes=20))
    shipped = tmp_path / "shipped"
    save_ceiling(shipped / "checkpoint.pt", ceiling, None, TINY_MODEL, seed=3)  # a base GQN
    base = open_checkpoint(shipped / "checkpoint.pt")
    save_ceiling(shipped / "ceiling.pt", ceiling, base, TINY_MODEL)
    save_ceiling(tmp_path / "whole.pt", ceiling, base, TINY_MODEL)
    slim = load_checkpoint(shipped / "ceiling.pt")
    assert set(slim["model"]) == {k for k in base.new_model().state_dict()
                                  if k.startswith("representation.")}
    assert (shipped / "ceiling.pt").stat().st_size < (tmp_path / "whole.pt").stat().st_size
    for path in (shipped / "ceiling.pt", tmp_path / "whole.pt"):
        model, reference = open_checkpoint(path).new_model(), base.new_model()
        for key, value in model.state_dict().items():
            expected = (ceiling.representation.state_dict()[key.removeprefix("representation.")]
                        if key.startswith("representation.") else reference.state_dict()[key])
            torch.testing.assert_close(value, expected)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "ceiling.pt").write_bytes((shipped / "ceiling.pt").read_bytes())
    with pytest.raises(ValueError, match="holds a representation network only: it needs its base"):
        open_checkpoint(alone / "ceiling.pt")


def test_early_stopping_drops_the_learning_rate_on_a_plateau_before_it_stops() -> None:
    from gqn_rl.probe.fitting import train_early_stopped

    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(200, 4)), dtype=torch.float32)
    y = x[:, :1] + 0.3 * torch.as_tensor(rng.normal(size=(200, 1)), dtype=torch.float32)

    def fit(drops: int) -> list[float]:
        model = torch.nn.Linear(4, 1)
        return train_early_stopped(model, x[:150], y[:150], x[150:], y[150:], epochs=200,
                                   patience=2, batch_size=8, lr=0.3, seed=0,
                                   loss_fn=torch.nn.functional.mse_loss, lr_drops=drops)

    plain, dropped = fit(0), fit(2)
    assert len(dropped) > len(plain) and min(dropped) < min(plain)


def test_an_interrupted_fit_resumes_where_it_stopped(tmp_path: Path) -> None:
    """Killed after its third epoch and started again, the fit goes on from that epoch and
    ends as an uninterrupted one does; other settings are refused by name."""
    from gqn_rl.probe.fitting import train_early_stopped

    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(200, 4)), dtype=torch.float32)
    y = x[:, :1] + 0.3 * torch.as_tensor(rng.normal(size=(200, 1)), dtype=torch.float32)

    def fit(resume: Path | None, on_epoch=None, lr: float = 0.3) -> tuple[list[float], dict]:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        curve = train_early_stopped(model, x[:150], y[:150], x[150:], y[150:], epochs=40,
                                    patience=2, batch_size=8, lr=lr, seed=0,
                                    loss_fn=torch.nn.functional.mse_loss, lr_drops=2,
                                    on_epoch=on_epoch, resume=resume, settings={"lr": lr})
        return curve, model.state_dict()

    whole, weights = fit(None)

    def stop_at_3(epoch: int, loss: float) -> None:
        if epoch == 3:
            raise KeyboardInterrupt

    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(state, stop_at_3)
    seen = []
    resumed, resumed_weights = fit(state, lambda e, loss: seen.append(e))
    assert seen[0] == 3  # the interrupted epoch runs again; the two before it do not
    assert resumed == whole
    torch.testing.assert_close(resumed_weights, weights)
    with pytest.raises(ValueError, match=r"state.pt: .*lr 0.3 -> 0.1"):
        fit(state, lr=0.1)


def test_a_saved_ceiling_holds_no_subnormal_weights(tmp_path: Path) -> None:
    """Subnormal weights (weight decay's leftovers) make a CPU's forward pass tens of times
    slower: the saved ceiling sets them to zero."""
    data = write_arm_like_dataset(tmp_path / "data")
    ceiling = train_ceiling(data, TINY_MODEL, CeilingConfig(epochs=1, patience=1, test_scenes=20))
    weight = next(ceiling.representation.parameters())
    with torch.no_grad():
        weight.view(-1)[:3] = torch.tensor([1e-40, -1e-41, 0.5])
    save_ceiling(tmp_path / "ceiling.pt", ceiling, None, TINY_MODEL)
    saved = next(open_checkpoint(tmp_path / "ceiling.pt").new_model().representation.parameters())
    assert saved.view(-1)[:3].tolist() == [0.0, 0.0, 0.5]
