"""GQN pretraining: Adam with the paper's annealing, checkpoints, resume, logging, DDP,
precision (:mod:`gqn.precision`).

The same function runs on one process or under ``torchrun`` (DistributedDataParallel, gloo on
CPU, nccl on GPU): each process samples ``batch_size / world_size`` scenes from its own seeded
stream, gradients are averaged, and process 0 writes logs and checkpoints.

A run directory holds ``checkpoint.pt`` (the latest good state), ``metrics.jsonl`` (one line
per logged step) and ``tensorboard/`` (scalars under ``train/`` and ``eval/``, image grids).
"""

from __future__ import annotations

import errno
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from gqn.checkpoint import (
    check_same_data,
    continue_from,
    dataset_record,
    load_checkpoint,
    save_checkpoint,
)
from gqn.config import (
    BOOKKEEPING,
    PRESETS,
    GQNConfig,
    TrainConfig,
    config_diff,
)
from gqn.data import Batch, SceneDataset
from gqn.distributed import Process, gather, mean_over_processes, start_process
from gqn.fileio import atomic_write, check_output
from gqn.model import GQN, GQNOutput
from gqn.objectives import Geco, training_loss
from gqn.precision import autocast, resolved_precision
from gqn.schedules import learning_rate, pixel_sigma
from gqn.seeding import derive_rng, derive_seed

CHECKPOINT_NAME = "checkpoint.pt"
SNAPSHOTS = "snapshots"
"""Subfolder of the copies kept at ``TrainConfig.snapshot_at``."""
METRICS_NAME = "metrics.jsonl"
SCALARS = ("loss", "nll", "kl", "mse", "bits_per_dim")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass
class PretrainResult:
    """What :func:`pretrain` did."""

    step: int
    """Optimiser steps done, in total, when it returned."""
    history: list[dict[str, float]]
    """Scalars of every step this call ran (``step``, ``loss``, ``nll``, ``kl``, ...)."""
    checkpoint: Path
    """The checkpoint written last."""
    rank: int = 0
    """This process's rank (0 alone writes files and should print)."""


def _autocast(process: Process, config: TrainConfig) -> tuple[Any, torch.amp.GradScaler | None]:
    """The pretraining step's precision, ``config.precision`` on this process's device, and
    a gradient scaler for fp16 (None otherwise). Refuses early, naming what the device lacks."""
    precision = resolved_precision(process.device, config.precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return lambda: autocast(process.device, precision), scaler


def _check_room_for_checkpoints(out: Path, model: GQN) -> None:
    """Refuse, before the first step, a disk that cannot hold two checkpoints (the new one
    is written beside the last): weights and Adam's two moments, in fp32."""
    need = 2 * 3 * sum(p.numel() * 4 for p in model.parameters())
    folder = out
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < need:
        raise OSError(errno.ENOSPC, f"no space left for checkpoints under {out}: "
                                    f"{free / 1e6:.1f} MB free, two need "
                                    f"{need / 1e6:.1f} MB")


def _image_grid(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack rows of images ``[N, 3, H, W]`` into one ``[3, rows H, N W]`` grid."""
    return torch.cat([torch.cat(list(row.float().clamp(0, 1)), dim=2) for row in rows], dim=1)


@torch.no_grad()
def evaluate(model: GQN, dataset: SceneDataset, config: TrainConfig, sigma: float,
             device: torch.device, seed: int) -> tuple[dict[str, float], torch.Tensor]:
    """Mean scalars over ``config.eval_batches`` held-out batches, and an image grid.

    The batches and latent samples come from ``seed`` alone, so every evaluation of a run
    sees the same scenes, and evaluating does not disturb the training random streams.
    The grid's rows: first context view, true query view, reconstruction, prior sample.
    """
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    totals = dict.fromkeys(SCALARS, 0.0)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for _ in range(config.eval_batches):
            batch = dataset.sample_batch(config.batch_size, rng, config.max_context).to(device)
            out = model(batch.context_x, batch.context_v, batch.query_x, batch.query_v, sigma)
            for name in SCALARS:
                totals[name] += getattr(out, name).mean().item() / config.eval_batches
        shown = slice(0, min(8, batch.batch_size))
        sample = model.generate(batch.context_x[shown], batch.context_v[shown],
                                batch.query_v[shown])
        grid = _image_grid([batch.context_x[shown, 0].float() / 255,
                            batch.query_x[shown].float() / 255, out.mean[shown], sample])
    model.train(was_training)
    return totals, grid


def _keep_snapshot(checkpoint: Path, snapshot: Path) -> None:
    """A copy of ``checkpoint`` at ``snapshot``, written atomically."""
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(snapshot, lambda f: f.write(checkpoint.read_bytes()))


def _write_metrics(path: Path, lines: list[dict[str, float]]) -> None:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    atomic_write(path, lambda f: f.write(text.encode()))


def _read_metrics(path: Path, up_to_step: int) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            int(line["step"])
        except (ValueError, TypeError, KeyError) as error:  # JSONDecodeError is a ValueError
            raise ValueError(f"{path}: line {number} is not a metrics line ({error!r}); the "
                             "checkpoint holds the run: move the file away to resume") from None
        lines.append(line)
    return [line for line in lines if line["step"] <= up_to_step]


def starting_configs(out: Path | str, preset: str | None = None, resume: bool = False,
                     start_from: Path | str | None = None) -> tuple[GQNConfig, TrainConfig]:
    """The configs a pretraining run into ``out`` starts from: without a named preset, when
    resuming the run's own (from its checkpoint), when continuing another's
    (``start_from``) that one's; else ``preset``'s (default ``cpu-small``)."""
    checkpoint = Path(out) / CHECKPOINT_NAME
    if preset is None and resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        return state["model_config"], state["train_config"]
    if preset is None and start_from is not None:
        state = load_checkpoint(Path(start_from))
        return state["model_config"], state["train_config"]
    chosen = PRESETS[preset or "cpu-small"]
    return chosen.model, chosen.train


def pretrain(data: Path | str, out: Path | str, model_config: GQNConfig,
             train_config: TrainConfig, *, resume: bool = False, until: int | None = None,
             device: str | None = None, progress: bool = True,
             probe: Callable[[GQN], dict[str, float]] | None = None,
             start_from: Path | str | None = None) -> PretrainResult:
    """Train a GQN on a dataset directory, writing checkpoints and logs under ``out``.

    Args:
        data: dataset directory (``gqn.data`` format) with a ``train`` and ideally a ``test``
            split.
        out: run directory.
        model_config, train_config: what to train and how; checked against the checkpoint
            when resuming.
        resume: continue from ``out/checkpoint.pt`` exactly where it stopped.
        until: stop after this many total steps (default ``train_config.steps``); the
            schedules still follow ``train_config.steps``.
        device: ``"cpu"`` or ``"cuda"``; default: the GPU when there is one.
        progress: show a progress bar.
        probe: called with the model (in eval mode, no gradient) at every evaluation step;
            the figures it returns are logged under ``probe/`` (TensorBoard and
            ``metrics.jsonl``). It must leave the global random streams as it found them,
            so that a resumed run stays exact (e.g. :class:`gqn_rl.probe.QuickProbe`).
        start_from: a new run that continues another's checkpoint (its weights, optimiser
            state and step; :func:`gqn.checkpoint.continue_from`) with this run's configs,
            e.g. to measure an objective lever against a plain continuation. Ignored when
            resuming this run.
    """
    data, out = Path(data), Path(out)
    stop = train_config.steps if until is None else until
    if not 0 < stop <= train_config.steps:
        raise ValueError(f"until must be in 1..steps={train_config.steps}, got {until}")
    check_output(out, "--out")
    process = start_process(device)
    autocast, scaler = _autocast(process, train_config)  # refuses bf16 where it is emulated
    if train_config.batch_size % process.world_size:
        raise ValueError(f"TrainConfig.batch_size={train_config.batch_size} must be divisible "
                         f"by the number of processes ({process.world_size})")
    train_set = SceneDataset(data, "train", verify=True)  # SHA-256 of every shard file
    test_set = SceneDataset(data, "test", verify=True)
    if train_config.object_weight != 1 and train_set.masks() is None:
        raise ValueError(f"TrainConfig.object_weight {train_config.object_weight} weighs the "
                         f"objects' pixels, but {train_set.masks_path} does not exist: write "
                         f"it with gqn-rl data masks {data}")
    model_config.check_image_size(train_set.image_size, f"{data}")
    if train_config.max_context is not None and train_config.max_context >= train_set.views:
        raise ValueError(f"--max-context {train_config.max_context}: {data} has "
                         f"{train_set.views} views per scene, so at most "
                         f"{train_set.views - 1} context views beside the query")
    checkpoint_path = out / CHECKPOINT_NAME
    if checkpoint_path.exists() and not resume:
        raise FileExistsError(f"{checkpoint_path} exists: pass resume=True (--resume) to "
                              "continue that run, or choose another output directory")

    torch.manual_seed(train_config.seed)
    model = GQN(model_config).to(process.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr_start,
                                 fused=process.device.type in ("cpu", "cuda"))
    if process.is_main:
        _check_room_for_checkpoints(out, model)
    batch_rng = derive_rng(train_config.seed, "batches", process.rank)
    torch.manual_seed(derive_seed(train_config.seed, "latents", process.rank))
    step, start, objective = 0, None, None
    if resume:
        state = load_checkpoint(checkpoint_path, model_config)
        check_same_data(state.get("data") or {}, dataset_record(train_set, test_set), data,
                        checkpoint_path)
        if state["legacy_amp"] and process.device.type == "cuda" and process.is_main:
            print(f"note: {checkpoint_path} was trained with TrainConfig.amp (autocast on a GPU "
                  f"whatever the precision), which is gone: it continues in "
                  f"{train_config.precision}", file=sys.stderr)
        if not state["train_config"].same_training(train_config):
            raise ValueError(f"{checkpoint_path}: checkpoint train_config differs from the "
                             "requested one in "
                             f"{'; '.join(config_diff(state['train_config'], train_config))} "
                             f"(checkpoint != requested; only {', '.join(BOOKKEEPING)} "
                             "may change on resume)")
        if state["optimizer"] is None:
            raise ValueError(f"{checkpoint_path} holds weights only (exported): it cannot be "
                             "resumed")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        batch_rng.bit_generator.state = state["rng"]["batches"][process.rank]
        torch.set_rng_state(state["rng"]["torch"][process.rank])
        if process.device.type == "cuda" and state["rng"].get("cuda"):
            torch.cuda.set_rng_state(state["rng"]["cuda"][process.rank], process.device)
        start = state.get("start")
        objective = state.get("objective")
    elif start_from is not None:
        step, start, objective = continue_from(Path(start_from), model, optimizer,
                                               train_set.meta.get("scene"))
        if step >= stop:
            raise ValueError(f"--from {start_from} is at step {step}: --until (or --steps) "
                             f"{stop} leaves nothing to train")
    geco = (None if train_config.geco_target is None
            else Geco(train_config.geco_target, pixel_sigma(step, train_config),
                      train_config.sigma_start))
    if geco is not None and objective and objective.get("target") == geco.target:
        geco.load_state_dict(objective)  # resumed, or continued from a run with this target
    if step >= stop:
        return PretrainResult(step, [], checkpoint_path, process.rank)

    trained = (DistributedDataParallel(model) if process.world_size > 1 else model)
    local_batch = train_config.batch_size // process.world_size
    writer = metrics_lines = None
    if process.is_main:
        from torch.utils.tensorboard import SummaryWriter

        out.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(out / "tensorboard"), purge_step=step + 1 if step else None)
        metrics_lines = _read_metrics(out / METRICS_NAME, step)
    data_record = dataset_record(train_set, test_set)

    def checkpoint(metrics: dict[str, float]) -> None:
        rng = {"batches": gather(batch_rng.bit_generator.state, process),
               "torch": gather(torch.get_rng_state(), process),
               "cuda": (gather(torch.cuda.get_rng_state(process.device), process)
                        if process.device.type == "cuda" else None)}
        if process.is_main:
            save_checkpoint(checkpoint_path, model, optimizer, step, train_config, rng,
                            metrics, data_record, start=start,
                            objective=None if geco is None else geco.state_dict())
            _write_metrics(out / METRICS_NAME, metrics_lines)

    history: list[dict[str, float]] = []
    bar = tqdm(total=stop, initial=step, disable=not (progress and process.is_main),
               desc="pretrain", unit="step", dynamic_ncols=True)
    window_start, window_scenes = time.perf_counter(), 0
    model.train()
    while step < stop:
        lr = learning_rate(step, train_config)
        sigma = pixel_sigma(step, train_config) if geco is None else geco.sigma
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch: Batch = train_set.sample_batch(
            local_batch, batch_rng, train_config.max_context).to(process.device)
        with autocast():
            output: GQNOutput = trained(batch.context_x, batch.context_v, batch.query_x,
                                        batch.query_v, sigma,
                                        prior_pass=train_config.prior_weight > 0)
        loss = training_loss(output, batch, sigma, train_config)
        finite = torch.isfinite(loss.detach()).float()
        if process.world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1:
            bar.close()
            raise NonFiniteLossError(
                f"loss became {loss.item()} at step {step + 1}; stopped without "
                f"saving, the last good checkpoint is {checkpoint_path}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        step += 1
        window_scenes += train_config.batch_size

        scalars = {"step": step, "lr": lr, "sigma": sigma,
                   **{name: getattr(output, name).detach().float().mean().item()
                      for name in SCALARS}}
        history.append(scalars)
        if geco is not None:  # every process hears the same error, so keeps the same sigma
            geco.update(float(mean_over_processes(output.mse.detach().float().mean(), process)))
        bar.update(1)
        bar.set_postfix(loss=f"{scalars['loss']:.1f}", kl=f"{scalars['kl']:.1f}")
        if not process.is_main:
            if (step % train_config.checkpoint_every == 0 or step == stop
                    or step in train_config.snapshot_at):
                checkpoint(scalars)
            continue
        if step % train_config.log_every == 0 or step == stop:
            elapsed = time.perf_counter() - window_start
            scalars["scenes_per_s"] = window_scenes / max(elapsed, 1e-9)
            window_start, window_scenes = time.perf_counter(), 0
            for name in (*SCALARS, "lr", "sigma"):
                writer.add_scalar(f"train/{name}", scalars[name], step)
            writer.add_scalar("charts/scenes_per_s", scalars["scenes_per_s"], step)
            metrics_lines.append(scalars)
        if len(test_set) and (step % train_config.eval_every == 0 or step == stop):
            eval_scalars, grid = evaluate(model, test_set, train_config, sigma, process.device,
                                          seed=derive_seed(train_config.seed, "evaluation"))
            for name, value in eval_scalars.items():
                writer.add_scalar(f"eval/{name}", value, step)
            writer.add_image("eval/context_truth_reconstruction_sample", grid, step)
            metrics_lines.append({"step": step, **{f"eval/{k}": v
                                                   for k, v in eval_scalars.items()}})
            if probe is not None:
                model.eval()
                with torch.no_grad():
                    figures = {f"probe/{k}": float(v) for k, v in probe(model).items()}
                model.train()
                for name, value in figures.items():
                    writer.add_scalar(name, value, step)
                metrics_lines.append({"step": step, **figures})
        if (step % train_config.checkpoint_every == 0 or step == stop
                or step in train_config.snapshot_at):
            checkpoint(scalars)
            writer.flush()
            if step in train_config.snapshot_at:
                _keep_snapshot(checkpoint_path, out / SNAPSHOTS / f"step-{step}.pt")
    bar.close()
    if writer is not None:
        writer.close()
    return PretrainResult(step, history, checkpoint_path, process.rank)

