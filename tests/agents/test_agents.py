"""Agents: the GQN extractor and its auxiliary loss, hyperparameters, train / evaluate smoke
runs of every encoder kind, resume, and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.callbacks import training_seconds
from agents.cli import main
from agents.hyperparams import ALGOS, INTRINSIC_BETA, SAC_AUX_BATCH, hyperparams
from agents.kinds import KINDS, get_kind
from agents.runs import ResolvedRun, RunConfig, load_gqn, resolve_run
from agents.train import evaluate, train
from gqn import PRESETS, GQNConfig
from gqn.precision import missing_bf16_support
from gqn_rl.encoders import fresh_config, open_checkpoint, shipped_checkpoint
from gqn_rl.extractors import GQNExtractor, ScaledAdam, ShiftAugmentedExtractor, random_shift

CONFIG = GQNConfig(image_size=16, representation="pool", r_dim=8, h_dim=8, z_dim=2, L=2)
TINY = {"ppo": {"n_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 1},
        "sac": {"learning_starts": 40, "batch_size": 8, "buffer_size": 500}}
ENVS = {"gqn_rl/ArmReach-v0": ("ppo", "sac"), "gqn_rl/MentalRotation-v0": ("ppo", "sac"),
        "gqn_rl/RoomNavigation-v0": ("ppo", "sac")}  # SAC on the continuous variant


def torch_batch(env: gym.Env, n: int = 3) -> dict[str, torch.Tensor]:
    """``n`` observations as SB3 hands them to a policy: images CHW float in [0, 1]."""
    obs = [env.reset(seed=i)[0] for i in range(n)]
    batch = {}
    for key in obs[0]:
        value = torch.as_tensor(np.stack([o[key] for o in obs]))
        batch[key] = value.permute(0, 3, 1, 2).float() / 255 if value.dtype == torch.uint8 \
            else value
    return batch


def test_aux_loss_joins_the_rl_gradient_exactly() -> None:
    env = gym.make("gqn_rl/ArmReach-v0", image_size=16, context_cameras=2)
    obs = torch_batch(env)
    weight = 0.25

    def grads(inject: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        extractor = GQNExtractor(env.observation_space, vars(CONFIG),
                                 aux_weight=weight if inject else 0.0)
        torch.manual_seed(1)  # the same posterior samples in both
        features = extractor(obs)
        loss = features.pow(2).sum()
        if not inject:
            loss = loss + weight * extractor.aux_loss(obs)
        loss.backward()
        return [p.grad.clone() for p in extractor.gqn.parameters() if p.grad is not None]

    injected, summed = grads(True), grads(False)
    assert len(injected) == len(summed) > 10  # the generator gets gradients too
    for a, b in zip(injected, summed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_extractor_features_and_errors() -> None:
    env = gym.make("gqn_rl/MentalRotation-v0", image_size=16)
    extractor = GQNExtractor(env.observation_space, vars(CONFIG), freeze=True)
    features = extractor(torch_batch(env, 2))
    assert features.shape == (2, extractor.features_dim) and extractor.features_dim == 8 + 8 + 7
    assert not any(p.requires_grad for p in extractor.gqn.parameters())
    with pytest.raises(ValueError, match="context_cameras"):
        GQNExtractor(env.observation_space, vars(CONFIG), aux_weight=1.0)


def test_extractor_precision_native_is_bf16_where_the_cpu_has_it() -> None:
    env = gym.make("gqn_rl/ArmReach-v0", image_size=16, context_cameras=2)
    obs = torch_batch(env)
    native = "fp32" if missing_bf16_support() else "bf16"
    assert GQNExtractor(env.observation_space, vars(CONFIG), precision="native").precision == native
    with pytest.raises(ValueError, match="precision: expected one of"):
        GQNExtractor(env.observation_space, vars(CONFIG), precision="fp16")
    if native == "fp32":
        with pytest.raises(ValueError, match="precision bf16: this CPU"):
            GQNExtractor(env.observation_space, vars(CONFIG), precision="bf16")
        return

    def features_and_grads(precision: str) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        extractor = GQNExtractor(env.observation_space, vars(CONFIG), aux_weight=1.0,
                                 precision=precision)
        torch.manual_seed(1)
        features = extractor(obs)
        features.pow(2).sum().backward()
        return features, torch.cat([p.grad.flatten() for p in extractor.gqn.parameters()
                                    if p.grad is not None])

    (f32, g32), (f16, g16) = features_and_grads("fp32"), features_and_grads("bf16")
    assert f16.dtype == torch.float32  # the policy reads fp32 features either way
    torch.testing.assert_close(f16, f32, rtol=0.05, atol=0.05)
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.99


def test_random_shift_moves_each_image_by_at_most_pad_pixels() -> None:
    images = torch.rand(64, 3, 12, 12)
    shifted = random_shift(images, pad=2)
    assert shifted.shape == images.shape
    offsets = set()
    for original, moved in zip(images, shifted, strict=True):  # find each image's shift
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(moved[:, 2:-2, 2:-2],
                                original[:, 2 + dy:10 + dy, 2 + dx:10 + dx])]
        assert found
        offsets.add(found[0])
    assert len(offsets) > 5  # per image, not one shift for the batch


def test_pixels_aug_shifts_only_while_training() -> None:
    env = gym.make("gqn_rl/MentalRotation-v0", image_size=36)
    extractor = ShiftAugmentedExtractor(
        gym.spaces.Dict({k: (gym.spaces.Box(0, 255, (3, 36, 36), np.uint8) if k != "viewpoint"
                             else s) for k, s in env.observation_space.spaces.items()}))
    batch = torch_batch(env, 4)
    extractor.eval()
    torch.testing.assert_close(extractor(batch), extractor(batch))
    extractor.train()
    assert not torch.allclose(extractor(batch), extractor(batch))


def test_scaled_adam_keeps_each_parameters_fraction_of_the_rate() -> None:
    fast, slow = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    slow.lr_scale = 0.0
    optimizer = ScaledAdam([fast, slow], lr=0.1)
    (fast.sum() + slow.sum()).backward()
    optimizer.step()
    assert torch.all(fast < 1) and torch.all(slow == 1)
    assert all(group["lr"] == 0.1 for group in optimizer.param_groups)


def test_hyperparams_merge_encoder_and_environment() -> None:
    aux = hyperparams("gqn_rl/ArmReach-v0", "gqn-aux", "ppo")
    assert aux["env_kwargs"]["context_cameras"] == 2 and aux["encoder_kwargs"]["aux_weight"] > 0
    assert aux["env_kwargs"]["proprioception"]  # the arm's joints beside the image
    assert hyperparams("Reacher-v5", "pixels", "sac")["env_kwargs"] == {}
    state, pixels = (hyperparams("gqn_rl/ArmReach-v0", k, "sac") for k in ("state", "pixels"))
    assert pixels["batch_size"] < state["batch_size"]
    assert pixels["train_freq"] == state["train_freq"] == 1  # one update per step
    schedule = ("batch_size", "train_freq", "buffer_size")
    for kind in ("pixels-aug", "pixels-context", "gqn-frozen", "gqn-aux", "gqn-inference"):
        settings = hyperparams("gqn_rl/ArmReach-v1", kind, "sac")  # the agents compared
        assert [settings[k] for k in schedule] == [pixels[k] for k in schedule], kind
    perfect = hyperparams("gqn_rl/ArmReach-v1", "perfect-encoder", "sac")
    assert [perfect[k] for k in schedule] == [state[k] for k in schedule]
    for kind in KINDS:  # DrQ's encoder where the policy trains one; the environment's net kept
        policy = hyperparams("gqn_rl/ArmReach-v1", kind, "sac")["policy_kwargs"]
        assert policy.get("critic_encoder", False) == get_kind(kind).trains_image_encoder, kind
        assert policy["net_arch"] == [256, 256]
    assert "critic_encoder" not in hyperparams("gqn_rl/ArmReach-v1", "pixels", "ppo").get(
        "policy_kwargs", {})
    aux = {algo: hyperparams("gqn_rl/ArmReach-v1", "gqn-aux", algo)["encoder_kwargs"]
           for algo in ALGOS}  # SAC's auxiliary ELBO on fewer scenes; PPO's the extractor's
    assert aux["sac"]["aux_batch"] == SAC_AUX_BATCH and "aux_batch" not in aux["ppo"]
    assert aux["sac"]["aux_weight"] == aux["ppo"]["aux_weight"] > 0
    with pytest.raises(ValueError, match="unknown encoder"):
        hyperparams("gqn_rl/ArmReach-v0", "cnn", "ppo")


SMOKE = {("gqn_rl/RoomNavigation-v0", "ppo", "gqn-joint"),
         ("gqn_rl/MentalRotation-v0", "sac", "gqn-frozen")}
"""One cheap case per algorithm in the default run; the rest of the grid is marked slow."""


@pytest.mark.parametrize(("env_id", "algo", "encoder"), [
    pytest.param(e, a, k, marks=() if (e, a, k) in SMOKE else pytest.mark.slow)
    for e, algos in ENVS.items() for a in algos for k in KINDS])
def test_every_encoder_trains_and_evaluates(tmp_path: Path, env_id: str, algo: str,
                                            encoder: str) -> None:
    run = RunConfig(env_id, encoder, algo, steps=256 if algo == "ppo" else 160, eval_every=128,
                    eval_episodes=1, checkpoint_every=128, overrides=TINY[algo],
                    fresh_encoder=encoder.startswith("gqn"))
    train(run, tmp_path, progress=False)
    assert (tmp_path / "eval" / "evaluations.npz").is_file()
    report = evaluate(tmp_path, episodes=1)
    assert report["train_steps"] >= run.steps and np.isfinite(report["mean_return"])


@pytest.mark.parametrize(("env_id", "algo"), [
    pytest.param(e, a, marks=pytest.mark.slow) for e, algos in ENVS.items() for a in algos])
def test_gqn_inference_trains_with_the_surprise_bonus(tmp_path: Path, env_id: str,
                                                      algo: str) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunConfig(env_id, "gqn-inference", algo, steps=256 if algo == "ppo" else 160,
                    eval_every=128, eval_episodes=1, checkpoint_every=128,
                    overrides={**TINY[algo], "encoder_kwargs": {"beta": 0.1}},
                    fresh_encoder=True, intrinsic_bonus=True)
    train(run, tmp_path, progress=False)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["hyperparams"]["encoder_kwargs"]["beta"] == 0.1  # the override wins
    events = EventAccumulator(str(next((tmp_path / "tensorboard").iterdir()))).Reload()
    assert "charts/intrinsic_reward" in events.Tags()["scalars"]
    assert np.isfinite(evaluate(tmp_path, episodes=1)["mean_return"])


def test_intrinsic_bonus_takes_the_recipe_beta_and_only_gqn_inference() -> None:
    run = resolve_run(RunConfig("gqn_rl/RoomNavigation-v0", "gqn-inference", "ppo", 10,
                                fresh_encoder=True, intrinsic_bonus=True))
    assert run.hyperparams["encoder_kwargs"]["beta"] == INTRINSIC_BETA["gqn_rl/RoomNavigation-v0"]
    plain = resolve_run(RunConfig("gqn_rl/RoomNavigation-v0", "gqn-inference", "ppo", 10,
                                  fresh_encoder=True))
    assert plain.hyperparams["encoder_kwargs"]["beta"] == 0.0
    with pytest.raises(ValueError, match="--intrinsic-bonus"):
        resolve_run(RunConfig("gqn_rl/ArmReach-v0", "gqn-frozen", "sac", 10,
                              intrinsic_bonus=True))


def test_a_fresh_gqn_has_the_shipped_architecture_of_its_family(tmp_path: Path) -> None:
    shipped = open_checkpoint(shipped_checkpoint("arm_near")).config
    assert shipped.representation == "tower"  # not cpu-small's pool: the control must match
    run = resolve_run(RunConfig("gqn_rl/ArmReach-v1", "gqn-frozen", "sac", 10, seed=2,
                                fresh_encoder=True))
    assert run.fresh_gqn == dataclasses.asdict(shipped)
    assert f"(tower, r {shipped.r_dim}x8x8)" in run.encoder_source  # r's numbers, not r_dim
    model = load_gqn(run)
    assert model.config == shipped and not torch.equal(  # the architecture, not the weights
        model.state_dict()["representation.conv1.weight"],
        open_checkpoint(shipped_checkpoint("arm_near")).new_model().state_dict()[
            "representation.conv1.weight"])
    run.save(tmp_path / "run.json")
    assert ResolvedRun.load(tmp_path / "run.json") == run
    saved = json.loads((tmp_path / "run.json").read_text())  # as written before fresh_gqn
    del saved["fresh_gqn"]
    (tmp_path / "run.json").write_text(json.dumps(saved))
    assert load_gqn(ResolvedRun.load(tmp_path / "run.json")).config == PRESETS["cpu-small"].model
    assert fresh_config(None) == PRESETS["cpu-small"].model


def test_cli_train_resume_and_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    args = ["train", "--env", "gqn_rl/MentalRotation-v0", "--encoder", "gqn-frozen",
            "--fresh-encoder", "--out", str(run), "--checkpoint-every", "64", "--eval-every",
            "64", "--eval-episodes", "1", "--no-progress", "--hyperparams", "n_envs=2",
            "n_steps=32", "batch_size=32"]
    assert main([*args, "--steps", "128"]) == 0
    assert "freshly initialised" in capsys.readouterr().out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "model_128_steps.zip", "model_64_steps.zip"]
    assert main([*args, "--steps", "128"]) == 2  # the run exists: --resume or another --out
    assert "--resume" in capsys.readouterr().err
    (run / "checkpoints" / "model_192_steps.zip").write_bytes(b"cut short by a crash")
    assert main([*args, "--steps", "256", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "skipping" in out and "resuming from" in out and "model_128_steps.zip" in out
    assert (run / "checkpoints" / "model_256_steps.zip").is_file()
    # The resumed run continues its learning curve and its wall time, from the resume point.
    with np.load(run / "eval" / "evaluations.npz") as curve:
        assert curve["timesteps"].tolist() == [64, 128, 192, 256]
        assert curve["results"].shape == (4, 1)
    walls = {int(n): s for n, s in json.loads((run / "wall.json").read_text()).items()}
    assert sorted(walls) == [64, 128, 192, 256]
    assert 0 < walls[64] < walls[128] < walls[192] < walls[256] == training_seconds(run)
    assert main(["evaluate", str(run), "--episodes", "2", "--gif", str(tmp_path / "e.gif")]) == 0
    report = json.loads((run / "evaluation.json").read_text())
    assert report["train_steps"] == 256 and report["episodes"] == 2
    assert {"mean_return", "std_return", "success_rate"} <= set(report)
    assert (tmp_path / "e.gif").stat().st_size > 0
    assert main(["evaluate", str(tmp_path)]) == 2  # not a run directory
    (run / "eval" / "evaluations.npz").write_bytes(b"cut short by a crash")
    assert main([*args, "--steps", "320", "--resume"]) == 0  # the curve starts again
    assert "skipping" in capsys.readouterr().out
    with np.load(run / "eval" / "evaluations.npz") as curve:
        assert curve["timesteps"].tolist() == [320]


def test_bench_wrapper_times_every_row_with_changed_settings() -> None:
    from agents.speed import wrapper_rates

    rates = wrapper_rates(n_envs=2, steps=64, overrides={"n_steps": 32, "batch_size": 32,
                                                         "n_epochs": 1})
    assert all(np.isfinite(rate) and rate > 0 for rate in vars(rates).values())
