"""``gqn-rl demo``: the whole pipeline, small, with a report.

Renders an ``arm`` dataset, pretrains a ``cpu-small`` GQN on it, trains PPO on
``gqn_rl/ArmReach-v0`` with the frozen encoder and on pixels for the same number of steps,
evaluates both and writes ``report.md`` with a learning-curve PNG, a GQN sample grid and an
episode GIF. Every stage resumes: run it again after an interruption.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import imageio.v3 as iio
import matplotlib
import numpy as np
import torch

from agents.train import RUN_FILE, RunConfig, evaluate, train
from gqn import PRESETS
from gqn.checkpoint import load_model
from gqn.data import SceneDataset
from gqn.fileio import atomic_write
from gqn.train import pretrain
from gqn.viewpoint import pose_to_viewpoint
from gqn_rl.datagen import GenerateConfig, default_workers, generate

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ENV = "gqn_rl/ArmReach-v0"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo's stages (the defaults take about 15 minutes on two CPU cores)."""

    scenes: int = 2000
    """``arm`` scenes rendered (32x32, 11 views each)."""
    pretrain_steps: int = 3000
    """cpu-small optimiser steps."""
    agent_steps: int = 100_000
    """Environment steps of each PPO agent."""
    eval_every: int = 10_000
    eval_episodes: int = 10
    final_episodes: int = 50
    seed: int = 0


def run_demo(out: Path, config: DemoConfig = DemoConfig(), progress: bool = True) -> Path:
    """Runs (or finishes) every stage into ``out``; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        timings[name] = time.perf_counter()
        print(f"== {name}", flush=True)

    preset = PRESETS["cpu-small"]
    stage("render the arm dataset")
    data = generate(GenerateConfig(scene="arm", scenes=config.scenes,
                                   size=preset.model.image_size, seed=config.seed),
                    out / "data", workers=default_workers(), progress=progress)
    stage("pretrain the GQN")
    gqn_dir = out / "gqn"
    train_config = dataclasses.replace(preset.train, steps=config.pretrain_steps,
                                       seed=config.seed, eval_every=500, checkpoint_every=500)
    checkpoint = gqn_dir / "checkpoint.pt"
    pretrain(data, gqn_dir, preset.model, train_config, resume=checkpoint.exists(),
             progress=progress)
    reports = {}
    for encoder in ("gqn-frozen", "pixels"):
        stage(f"train PPO, {encoder}")
        run_dir = out / encoder
        evaluation = run_dir / "evaluation.json"
        if evaluation.is_file():  # trained and evaluated by an earlier call
            reports[encoder] = json.loads(evaluation.read_text())
            continue
        run = RunConfig(ENV, encoder, "ppo", config.agent_steps, config.seed,
                        checkpoint=str(checkpoint) if encoder == "gqn-frozen" else None,
                        eval_every=min(config.eval_every, max(1, config.agent_steps // 4)),
                        eval_episodes=config.eval_episodes)
        train(run, run_dir, resume=(run_dir / RUN_FILE).exists(), progress=progress)
        stage(f"evaluate {encoder}")
        reports[encoder] = evaluate(run_dir, config.final_episodes,
                                    gif=out / f"episode_{encoder}.gif")
    stage("report")
    plot_curves({k: out / k for k in reports}, out / "learning_curves.png")
    sample_grid(checkpoint, data, out / "gqn_samples.png")
    timings["end"] = time.perf_counter()
    return write_report(out, config, reports, timings)


def plot_curves(runs: dict[str, Path], path: Path) -> None:
    """Mean evaluation return against environment steps, one line per run."""
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, run_dir in runs.items():
        log = np.load(run_dir / "eval" / "evaluations.npz")
        returns = log["results"]  # [evaluations, episodes]
        axes.plot(log["timesteps"], returns.mean(1), marker="o", label=name)
        axes.fill_between(log["timesteps"], returns.mean(1) - returns.std(1),
                          returns.mean(1) + returns.std(1), alpha=0.2)
    axes.set_xlabel("environment steps")
    axes.set_ylabel("evaluation return")
    axes.set_title(ENV)
    axes.legend()
    figure.tight_layout()
    atomic_write(path, lambda f: figure.savefig(f, format="png"))
    plt.close(figure)


def sample_grid(checkpoint: Path, data: Path, path: Path, scenes: int = 6,
                context: int = 3) -> None:
    """Rows of test scenes: ``context`` views, the true query view, a GQN sample of it."""
    model = load_model(checkpoint)
    dataset = SceneDataset(data, "test")
    rows = []
    torch.manual_seed(0)
    for i in range(min(scenes, len(dataset))):
        images, poses = dataset.scene(i)  # [V, H, W, 3], [V, 5]
        x = torch.as_tensor(images[:context + 1]).permute(0, 3, 1, 2)
        v = pose_to_viewpoint(torch.as_tensor(poses[:context + 1]))
        sample = model.generate(x[None, :context], v[None, :context], v[None, context])[0]
        generated = (sample.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        rows.append(np.concatenate([*images[:context + 1], generated], axis=1))
    grid = np.concatenate(rows, axis=0).repeat(3, axis=0).repeat(3, axis=1)
    atomic_write(path, lambda f: f.write(iio.imwrite("<bytes>", grid, extension=".png")))


def write_report(out: Path, config: DemoConfig, reports: dict[str, dict],
                 timings: dict[str, float]) -> Path:
    names = list(timings)
    minutes = {names[i]: (timings[names[i + 1]] - timings[names[i]]) / 60
               for i in range(len(names) - 1)}
    gqn_log = [json.loads(line) for line in (out / "gqn" / "metrics.jsonl").read_text()
               .splitlines() if line.strip()]
    evals = [m for m in gqn_log if any(k.startswith("eval/") for k in m)]
    lines = [
        "# gqn-rl demo",
        "",
        f"`gqn-rl demo`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{config.scenes} `arm` scenes at 32x32, `cpu-small` GQN for {config.pretrain_steps} "
        f"steps, then PPO on `{ENV}` for {config.agent_steps} steps with the frozen GQN "
        f"encoder and with pixels (NatureCNN, 64x64), the same hyperparameters "
        f"(`agents/hyperparams.py`).",
        "",
        "| agent | return (mean +- std) | success rate | episodes |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {name} | {r['mean_return']:.1f} +- {r['std_return']:.1f} | "
          f"{r['success_rate']:.2f} | {r['episodes']} |" for name, r in reports.items()],
        "",
        "![learning curves](learning_curves.png)",
        "",
        "GQN samples on test scenes: three context views, the true query view, a sample "
        "from the prior at the query viewpoint.",
        "",
        "![GQN samples](gqn_samples.png)",
        "",
        "The frozen-encoder agent's first evaluation episode: ![episode](episode_gqn-frozen.gif)",
        "",
    ]
    if evals:
        last = evals[-1]
        lines += [f"GQN at step {last.get('step')}: "
                  + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k.startswith("eval/")),
                  ""]
    lines += ["Minutes per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items()), ""]
    path = out / "report.md"
    atomic_write(path, lambda f: f.write("\n".join(lines).encode()))
    return path
