"""The registry of encoder kinds: every table derives from it, and a new kind declared in a few
lines runs through ``train``, ``benchmark`` and ``report``."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.cli import main
from agents.grid import contenders
from agents.hyperparams import hyperparams
from agents.kinds import KINDS, EncoderKind, get_kind, register
from gqn_rl.extractors import GQNExtractor

ROTATION = "gqn_rl/MentalRotation-v0"
ROOM = "gqn_rl/RoomNavigation-v0"


@pytest.fixture
def narrow_state() -> Iterator[EncoderKind]:
    """A user's kind: the true state through a narrow MLP."""
    kind = register(EncoderKind("state-narrow", {"env_kwargs": {"obs_mode": "state"},
                                                 "policy": "MlpPolicy",
                                                 "policy_kwargs": {"net_arch": [8]}},
                                imitation=True, reads_images=False))
    yield kind
    del KINDS[kind.name]


def test_the_built_in_kinds_and_what_derives_from_them() -> None:
    assert list(KINDS) == ["pixels", "pixels-aug", "pixels-context", "state", "perfect-encoder",
                           "gqn-frozen", "gqn-joint", "gqn-aux", "gqn-inference"]
    assert (hyperparams(ROOM, "pixels-context", "ppo")["env_kwargs"]["context_cameras"]
            == hyperparams(ROOM, "gqn-aux", "ppo")["env_kwargs"]["context_cameras"])
    assert [k for k, v in KINDS.items() if v.gqn] == ["gqn-frozen", "gqn-joint", "gqn-aux",
                                                      "gqn-inference"]
    assert [k for k, v in KINDS.items() if v.extractor is GQNExtractor] == ["gqn-joint",
                                                                           "gqn-aux"]
    assert {"random", "scripted", "gqn-frozen-fresh", *KINDS} <= set(contenders())
    assert hyperparams(ROTATION, "pixels", "sac")["buffer_size"] == 30_000  # reads images
    assert hyperparams(ROTATION, "gqn-frozen", "sac")["buffer_size"] == 30_000
    assert hyperparams(ROTATION, "state", "sac")["buffer_size"] == 100_000


def test_kinds_are_checked_when_declared() -> None:
    with pytest.raises(ValueError, match="exists already"):
        register(EncoderKind("state"))
    with pytest.raises(ValueError, match="sits in a wrapper or an extractor"):
        EncoderKind("gqn-nowhere", gqn=True)
    with pytest.raises(ValueError, match="unknown encoder 'nope'.*gqn-frozen"):
        get_kind("nope")


def test_a_new_kind_runs_through_train_benchmark_and_report(
        narrow_state: EncoderKind, tmp_path: Path) -> None:
    assert hyperparams(ROTATION, narrow_state.name, "ppo")["policy_kwargs"] == {"net_arch": [8]}
    main(["train", "--env", ROTATION, "--encoder", narrow_state.name, "--algo", "ppo",
          "--steps", "1024", "--eval-every", "1024", "--eval-episodes", "2",
          "--out", str(tmp_path / "run"), "--no-progress"])
    assert (tmp_path / "run" / "final_model.zip").is_file()
    grid = tmp_path / "grid"
    main(["benchmark", "--env", ROTATION, "--encoder", "random", "state", narrow_state.name,
          "--seeds", "1", "--steps", "1024", "--eval-episodes", "2", "--out", str(grid),
          "--no-progress"])
    with open(grid / "results.csv") as f:
        encoders = {row["encoder"] for row in csv.DictReader(f)}
    assert encoders == {"random", "state", narrow_state.name}
    main(["report", str(grid)])
    assert narrow_state.name in (grid / "report.md").read_text()
