"""The project's SAC: SB3's updates exactly, without the critic gradients SB3 discards."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
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


def test_speed_sac_times_both_classes_per_kind(capsys) -> None:
    from agents.cli import main

    assert main(["speed", "sac", "--encoder", "perfect-encoder", "--steps", "2",
                 "--repeats", "1"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[0] == "perfect-encoder" and float(row[1]) > 0 and float(row[2]) > 0
    assert row[-1] == "(40k)"  # ArmReach-v1's budget
