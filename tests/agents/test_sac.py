"""The project's SAC: SB3's updates exactly, without the critic gradients SB3 discards."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
import stable_baselines3
import torch

from agents.runs import ALGORITHM_CLASSES
from agents.sac import SAC
from gqn_rl.extractors import GQNExtractor, ScaledAdam
from tests.agents.test_agents import CONFIG, torch_batch

SETTINGS = dict(learning_starts=64, batch_size=32, buffer_size=1_000, seed=3, device="cpu",
                policy_kwargs=dict(net_arch=[32, 32]))


def trained(algorithm: type[stable_baselines3.SAC], **settings) -> stable_baselines3.SAC:
    model = algorithm("MlpPolicy", "Pendulum-v1", **{**SETTINGS, **settings})
    return model.learn(160)


def test_the_agent_learns_sb3s_parameters_exactly() -> None:
    ours = trained(SAC, policy_kwargs=dict(net_arch=[32, 32], optimizer_kwargs={"fused": False}))
    theirs = trained(stable_baselines3.SAC)
    assert ours._n_updates == theirs._n_updates == 96
    for (name, a), b in zip(ours.policy.state_dict().items(),
                            theirs.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # ... while the critic's gradients differ: SB3's actor update added to them, ours did not
    left = [not torch.equal(a.grad, b.grad)
            for a, b in zip(ours.critic.parameters(), theirs.critic.parameters(), strict=True)]
    assert any(left)
    assert all(p.requires_grad for p in ours.critic.parameters())  # thawed after each update
    assert not ours.critic.optimizer.defaults["fused"]


def test_adam_is_fused_and_saved_agents_load_either_way(tmp_path: Path) -> None:
    assert ALGORITHM_CLASSES["sac"] is SAC
    model = trained(SAC)
    assert model.actor.optimizer.defaults["fused"] and model.critic.optimizer.defaults["fused"]
    model.save(tmp_path / "agent.zip")
    stable_baselines3.SAC("MlpPolicy", "Pendulum-v1", **SETTINGS).save(tmp_path / "sb3.zip")
    for path in ("agent.zip", "sb3.zip"):
        loaded = SAC.load(tmp_path / path, device="cpu")
        assert loaded.critic.optimizer.defaults["fused"]
        loaded.set_env(gym.make("Pendulum-v1"))
        loaded.learn(8, reset_num_timesteps=False)
    assert stable_baselines3.SAC.load(tmp_path / "agent.zip", device="cpu").num_timesteps == 160


def test_the_critic_trains_again_under_an_adam_subclass() -> None:
    # ScaledAdam's step calls Adam's: each step runs the optimiser's hooks twice
    model = trained(SAC, policy_kwargs=dict(net_arch=[32, 32], optimizer_class=ScaledAdam))
    assert all(p.requires_grad for p in model.critic.parameters())
    assert model._n_updates == 96


def test_a_frozen_extractor_takes_no_auxiliary_loss() -> None:
    env = gym.make("gqn_rl/ArmReach-v0", image_size=16, context_cameras=2)
    extractor = GQNExtractor(env.observation_space, vars(CONFIG), aux_weight=1.0)
    extractor.gqn.requires_grad_(False)  # as SAC's critic during the actor's update
    extractor(torch_batch(env))
    assert extractor.last_aux_loss is None
    extractor.gqn.requires_grad_(True)
    extractor(torch_batch(env))
    assert extractor.last_aux_loss is not None


def test_drqs_encoder_is_the_critics_and_the_actor_reads_it_without_training_it(
        tmp_path: Path) -> None:
    env = gym.make("gqn_rl/ArmReach-v0", image_size=16, context_cameras=2)
    policy = dict(net_arch=[8], critic_encoder=True, features_extractor_class=GQNExtractor,
                  optimizer_class=ScaledAdam,
                  features_extractor_kwargs={"gqn_config": vars(CONFIG), "aux_weight": 1.0})
    model = SAC("MultiInputPolicy", env,
                **{**SETTINGS, "learning_starts": 16, "batch_size": 8, "policy_kwargs": policy})
    encoder = model.critic.features_extractor
    assert model.actor.features_extractor is encoder
    assert model.critic_target.features_extractor is not encoder
    trained_by_actor = {id(p) for group in model.actor.optimizer.param_groups
                        for p in group["params"]}
    assert not trained_by_actor & {id(p) for p in encoder.parameters()}
    before = [p.detach().clone() for p in encoder.parameters()]
    model.learn(24)  # 8 updates: the critic's loss and the auxiliary ELBO train the encoder
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters(), strict=True))
    assert encoder.last_aux_loss is not None
    assert all(p.requires_grad for p in model.critic.parameters())
    model.save(tmp_path / "agent.zip")
    loaded = stable_baselines3.SAC.load(tmp_path / "agent.zip", device="cpu")
    assert loaded.actor.features_extractor is loaded.critic.features_extractor
    for (name, a), b in zip(model.policy.state_dict().items(),
                            loaded.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_drqs_encoder_refuses_sb3s_sharing() -> None:
    with pytest.raises(ValueError, match="share_features_extractor"):
        SAC("MlpPolicy", "Pendulum-v1", **{**SETTINGS, "policy_kwargs": dict(
            critic_encoder=True, share_features_extractor=True)})


def test_speed_sac_times_both_classes_per_kind(capsys) -> None:
    from agents.cli import main

    assert main(["speed", "sac", "--encoder", "perfect-encoder", "pixels-aug", "--steps", "2",
                 "--repeats", "1"]) == 0
    for row, encoder in zip(capsys.readouterr().out.splitlines()[-2:],
                            ("perfect-encoder", "pixels-aug"), strict=True):
        row = row.split()  # pixels-aug: SB3's policy beside the project's DrQ encoder
        assert row[0] == encoder and float(row[1]) > 0 and float(row[2]) > 0
        assert row[-1] == "(40k)"  # ArmReach-v1's budget
