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


ARM = "gqn_rl/ArmReach-v1"


def test_the_ceiling_camera_and_blurred_variants_and_how_they_resolve(tmp_path: Path) -> None:
    from agents.grid import CAMERAS, BenchmarkConfig, Cell, get_contender
    from agents.runs import resolve_run

    assert {"gqn-ceiling", "gqn-ceiling-cameras", "gqn-frozen-cameras",
            "pixels-context-aug"} <= set(contenders())
    config = BenchmarkConfig((ARM,), ("gqn-frozen-cameras", "pixels-context-aug",
                                      "perfect-encoder-r2-0.77", "gqn-ceiling-standardised"),
                             seeds=1)
    cameras = resolve_run(config.run_config(Cell(ARM, "gqn-frozen-cameras", "rl", 0)))
    assert cameras.hyperparams["env_kwargs"]["context_cameras"] == 2
    assert cameras.hyperparams["encoder_kwargs"]["context"] == "cameras"
    assert cameras.checkpoint.endswith("arm_near/checkpoint.pt")  # the pretrained GQN
    aug = resolve_run(config.run_config(Cell(ARM, "pixels-context-aug", "rl", 0)))
    assert aug.hyperparams["augment"] == "shift"
    assert aug.hyperparams["env_kwargs"]["context_cameras"] == 2
    blurred = resolve_run(config.run_config(Cell(ARM, "perfect-encoder-r2-0.77", "rl", 0)))
    assert blurred.hyperparams["env_kwargs"] == {"obs_mode": "scene", "target_r2": 0.77,
                                                 "proprioception": True}
    assert get_contender("gqn-ceiling").ceiling == 1
    assert get_contender("gqn-ceiling-keypoints").overrides == {"reading": "keypoints"}
    assert get_contender("gqn-ceiling-trunk").ceiling == 1
    both = get_contender("gqn-ceiling-cameras-keypoints")
    assert both.ceiling == 3 and both.overrides == {**CAMERAS, "reading": "keypoints"}
    standardised = resolve_run(config.run_config(Cell(ARM, "gqn-ceiling-standardised", "rl", 0)))
    assert standardised.hyperparams["normalize"] == {"norm_obs": True, "norm_reward": False}
    for bad in ("perfect-encoder-r2-1.5", "gqn-nope"):
        with pytest.raises(ValueError, match="perfect-encoder-r2-R"):
            get_contender(bad)


def test_a_ceiling_contender_reads_the_family_s_shipped_ceiling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gqn_rl.encoders
    from agents.grid import BenchmarkConfig, Cell

    monkeypatch.setattr(gqn_rl.encoders, "SHIPPED_CHECKPOINTS", tmp_path)
    with pytest.raises(ValueError, match="no shipped ceiling checkpoints/arm_near/ceiling.pt"):
        BenchmarkConfig((ARM,), ("gqn-ceiling",), seeds=1)
    (tmp_path / "arm_near").mkdir()
    (tmp_path / "arm_near" / "ceiling.pt").write_bytes(
        (Path(__file__).parents[2] / "checkpoints/arm_near/checkpoint.pt").read_bytes())
    config = BenchmarkConfig((ARM,), ("gqn-ceiling",), seeds=1)
    run = config.run_config(Cell(ARM, "gqn-ceiling", "rl", 0, steps=100))
    assert run.checkpoint == str(tmp_path / "arm_near" / "ceiling.pt")


def test_blurred_perfect_encoder_is_refused_on_images() -> None:
    import gymnasium as gym

    with pytest.raises(ValueError, match="target_r2 blurs the perfect encoder's target"):
        gym.make(ARM, target_r2=0.5)
