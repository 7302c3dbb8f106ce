"""How far perfect perception of the views takes SAC on ArmReach (an experiment, not the package).

The agent gets the arm's joints (8), the episode camera's viewpoint (7), and for the hand and
the target what a perfect 2D perception of the 32x32 view tells: whether it is visible, its
image centroid (u, v in [-1, 1]) and 100 x its area, from masks found by rendering the view
again with the object hidden. With ``--views K`` the env's K context cameras add their
viewpoints and the same four numbers for the target: what a multi-view encoder could
triangulate. SAC with ArmReach's state recipe (agents/hyperparams.py), observations normalised.

    MUJOCO_GL=egl python docs/experiments/perfect_view_ceiling.py runs/ceiling-v0 --views 0 --seed 0

writes ``OUT/evaluations.npz`` (every 4,000 steps, 20 episodes) and ``OUT/result.json`` (the
final 50 episodes). Results: docs/results.md, "How far perfect perception would take the
demo's agent".
"""

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import envs  # noqa: F401 - registers the gqn_rl/ environments
from agents.hyperparams import hyperparams
from gqn.viewpoint import pose_to_viewpoint

ENV_ID = "gqn_rl/ArmReach-v0"


class PerfectViewObservation(gym.Wrapper):
    """ArmReach observed through perfect 2D perception: a vector of 23 + 11 K floats."""

    def __init__(self, views: int):
        env = gym.make(ENV_ID, image_size=32, proprioception=True, context_cameras=views)
        super().__init__(env)
        model = env.unwrapped.model
        self.geom_ids = {name: model.geom(name).id for name in ("hand", "target")}
        size = 8 + 7 + 2 * 4 + views * (7 + 4)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)

    def _object_features(self, pose, names) -> list[float]:
        """Visible, u, v and 100 x area of each named object in the view from ``pose``."""
        renderer = self.env.unwrapped._renderer
        image = renderer.render(pose)
        features = []
        for name in names:
            rgba = renderer.model.geom_rgba[self.geom_ids[name]]
            alpha = rgba[3]
            rgba[3] = 0.0
            without = renderer.render(pose)
            rgba[3] = alpha
            mask = (image != without).any(-1)
            u = v = 0.0
            if mask.any():
                ys, xs = np.nonzero(mask)
                size = mask.shape[0]
                u, v = 2 * (xs.mean() + 0.5) / size - 1, 2 * (ys.mean() + 0.5) / size - 1
            features += [float(mask.any()), u, v, 100 * mask.mean()]
        return features

    def _observation(self, obs) -> np.ndarray:
        arm = self.env.unwrapped
        pose = arm._camera_pose()
        features = list(obs["joints"]) + list(pose_to_viewpoint(pose))
        features += self._object_features(pose, ("hand", "target"))
        for context_pose in arm._context_poses:
            features += list(pose_to_viewpoint(context_pose))
            features += self._object_features(context_pose, ("target",))
        return np.asarray(features, np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._observation(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(obs), reward, terminated, truncated, info


def make_venv(views: int, seed: int) -> VecNormalize:
    def make():
        return Monitor(PerfectViewObservation(views))

    venv = DummyVecEnv([make])
    venv.seed(seed)
    return VecNormalize(venv, norm_obs=True, norm_reward=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--views", type=int, default=0, help="context cameras (0: one view)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=40_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    recipe = hyperparams(ENV_ID, "state", "sac")
    for key in ("n_envs", "env_kwargs", "policy", "normalize"):
        recipe.pop(key, None)
    train_env = make_venv(args.views, args.seed)
    eval_env = make_venv(args.views, args.seed + 1000)
    eval_env.training = False
    model = SAC("MlpPolicy", train_env, seed=args.seed, verbose=0, **recipe)
    evaluations = EvalCallback(eval_env, eval_freq=4000, n_eval_episodes=20,
                               log_path=str(args.out), verbose=0)
    start = time.time()
    model.learn(args.steps, callback=evaluations)
    wall_s = time.time() - start

    eval_env.obs_rms = train_env.obs_rms
    returns, lengths = evaluate_policy(model, eval_env, n_eval_episodes=50,
                                       return_episode_rewards=True)
    curve = np.load(args.out / "evaluations.npz")["successes"].mean(1)
    result = dict(views=args.views, seed=args.seed, steps=args.steps,
                  ret=float(np.mean(returns)),
                  success=float(np.mean([n < gym.spec(ENV_ID).max_episode_steps
                                         for n in lengths])),
                  wall_s=wall_s, curve_success=curve.round(2).tolist())
    print(json.dumps(result))
    (args.out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
