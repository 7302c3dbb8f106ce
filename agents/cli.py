"""The ``gqn-rl`` command line: a thin layer over functions callable from Python."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from pathlib import Path
from typing import Any

from gqn import PRESETS, GQNConfig
from gqn.config import PRECISIONS, REPRESENTATIONS
from gqn_rl.allocator import keep_freed_memory


def _with_given(config: Any, **overrides: Any) -> Any:
    """``config`` with the fields given on the command line (not None) replaced."""
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def _int_at_least(low: int) -> Any:
    """An argparse type: an integer of at least ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


# -- pretrain ------------------------------------------------------------------------------

def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE a Python literal (a bare word stays a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _pretrain(args: argparse.Namespace) -> int:
    from gqn.checkpoint import load_checkpoint
    from gqn.train import CHECKPOINT_NAME, pretrain

    checkpoint = args.out / CHECKPOINT_NAME
    if args.preset is None and args.resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        model_config, train_config = state["model_config"], state["train_config"]
    else:
        preset = PRESETS[args.preset or "cpu-small"]
        model_config, train_config = preset.model, preset.train
    train_config = _with_given(train_config, steps=args.steps, batch_size=args.batch_size,
                               seed=args.seed, max_context=args.max_context,
                               checkpoint_every=args.checkpoint_every,
                               precision=args.precision, kl_weight=args.kl_weight,
                               sigma_end=args.sigma_end, object_weight=args.object_weight)
    probe = None
    if not args.no_probe:
        from gqn.data import SceneDataset
        from gqn_rl.probe import QuickProbe

        test_set = SceneDataset(args.data, "test")
        try:
            probe = QuickProbe(test_set)
        except ValueError as error:  # e.g. too few test scenes: train without probes
            print(f"no quick probes while pretraining: {error}", file=sys.stderr)
    result = pretrain(args.data, args.out, model_config, train_config, resume=args.resume,
                      until=args.until, device=args.device, progress=not args.no_progress,
                      probe=probe)
    last = result.history[-1] if result.history else {}
    print(f"step {result.step}: checkpoint {result.checkpoint}"
          + (f", loss {last['loss']:.2f} nats, kl {last['kl']:.2f}, mse {last['mse']:.4f}"
             if last else " (nothing left to train)"))
    return 0


def _export(args: argparse.Namespace) -> int:
    from gqn.checkpoint import export_weights

    export_weights(args.checkpoint, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from gqn_rl.probe import REPORT_FILE, ProbeConfig, run_probe

    config = _with_given(ProbeConfig(), scenes=args.scenes, seed=args.seed,
                         views_per_scene=args.views_per_scene)
    config = dataclasses.replace(config, mlp=not args.no_mlp, cnn=not args.no_cnn)
    results = run_probe(args.checkpoint, args.data, args.out, config, split=args.split,
                        progress=not args.no_progress)
    for target, row in (results["state"] or {}).items():
        print(f"{target:<18} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()
                                            if k.endswith("1 view, ridge")
                                            or k.endswith("1 view, mlp")
                                            or k.startswith("supervised")))
    s = results["surprise"]
    print(f"surprise {s['own_scene_nats']:.3f} nats (own scene) vs {s['other_scene_nats']:.3f} "
          f"(another); report {args.out / REPORT_FILE}")
    return 0


def _ceiling(args: argparse.Namespace) -> int:
    from gqn_rl.probe import REPORT_FILE, ProbeConfig, run_ceilings

    config = _with_given(ProbeConfig(), scenes=args.scenes, seed=args.seed,
                         ceiling_patience=args.patience)
    results = run_ceilings(args.data, args.out, args.representation, PRESETS[args.preset].model,
                           config, split=args.split, progress=not args.no_progress)
    for target, row in results["state"].items():
        names = (k.removeprefix("supervised ").removesuffix(" 1 view") for k in row)
        print(f"{target:<18} " + "  ".join(f"{name} {v:.2f}"
                                            for name, v in zip(names, row.values(), strict=True)))
    print(f"report {args.out / REPORT_FILE}")
    return 0


def _add_ceiling(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "ceiling", help="what a representation network could hold at best, before pretraining",
        description="Tier 0 of judging a representation: a CNN and each named representation "
                    "network (at a preset's sizes), freshly initialised and supervised end to "
                    "end from one view to the scenes' ground truth, each until its validation "
                    "loss stops improving; R² on test scenes with intervals, and the curves. "
                    "Writes OUT/ceiling.json, OUT/report.md and PNGs.")
    p.add_argument("--data", type=Path, required=True, help="dataset directory (with truth)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--representation", nargs="+", choices=REPRESENTATIONS,
                   default=list(REPRESENTATIONS), help="networks to supervise (default: all)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small",
                   help="sizes (r_dim) of the networks (default cpu-small); the image size is "
                        "the data's")
    p.add_argument("--scenes", type=_positive_int, help="scenes used (default 1000)")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--patience", type=_positive_int,
                   help="epochs without improvement before a fit stops (default 10)")
    p.add_argument("--seed", type=_non_negative_int, help="seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_ceiling)


def _add_probe(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "probe", help="measure what a GQN's representation holds, next to baselines",
        description="State probes (ridge and MLP from r of one and of K views to the scenes' "
                    "ground truth, next to a fresh encoder, raw pixels and two ceilings: a CNN "
                    "and the GQN's own representation network, supervised), "
                    "held-out view error against context views, surprise, context-count "
                    "probe and a 2-D embedding; writes OUT/probe.json, OUT/report.md and PNGs.")
    p.add_argument("--checkpoint", type=Path, required=True, help="GQN checkpoint")
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--scenes", type=_positive_int, help="scenes probed (default 1000)")
    p.add_argument("--views-per-scene", type=_positive_int,
                   help="views of each scene used as one-view samples (default 4)")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--seed", type=_non_negative_int, help="seed (default 0)")
    p.add_argument("--no-mlp", action="store_true", help="ridge probes only")
    p.add_argument("--no-cnn", action="store_true",
                   help="no ceilings (supervised CNN and supervised architecture)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_probe)


def _add_pretrain(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("pretrain", help="train a GQN on a dataset directory",
                            description="Train a GQN; --resume continues a run exactly.")
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="model and training preset (default cpu-small; on --resume the run's)")
    p.add_argument("--steps", type=_positive_int, help="total optimiser steps of the run")
    p.add_argument("--batch-size", type=_positive_int, help="scenes per step")
    p.add_argument("--max-context", type=_positive_int, help="largest context size per batch")
    p.add_argument("--seed", type=_non_negative_int, help="seed of weights, batches and latents")
    p.add_argument("--checkpoint-every", type=_positive_int,
                   help="steps between checkpoints (default: the preset's; may change on "
                        "--resume)")
    p.add_argument("--until", type=_positive_int,
                   help="stop after this many total steps (schedules still follow --steps)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    p.add_argument("--kl-weight", type=float,
                   help="weight of the KL term in the training loss (default: the preset's, 1)")
    p.add_argument("--object-weight", type=float,
                   help="weight of the objects' pixels in the likelihood (default 1; needs "
                        "gqn-rl data masks DATA)")
    p.add_argument("--sigma-end", type=float,
                   help="final pixel standard deviation (default: the preset's)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="forward-pass arithmetic (default: the preset's, fp32); bf16 needs a "
                        "CPU with AVX512-BF16 or AMX, or a GPU")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: GPU when present")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-probe", action="store_true",
                   help="no quick probes (probe/... in TensorBoard) at evaluation steps")
    p.set_defaults(run=_pretrain)
    e = commands.add_parser(
        "export", help="a pretraining checkpoint's weights only, e.g. to ship under checkpoints/",
        description="Write CHECKPOINT without optimiser and RNG state: loads as an encoder "
                    "(gqn-rl train --checkpoint), cannot be resumed.")
    e.add_argument("--checkpoint", type=Path, required=True, help="RUN/checkpoint.pt")
    e.add_argument("--out", type=Path, required=True, help="file to write")
    e.set_defaults(run=_export)


# -- data --------------------------------------------------------------------------------

def _data_generate(args: argparse.Namespace) -> int:
    import imageio.v3 as iio

    from gqn_rl.datagen import GenerateConfig, contact_sheet, default_workers, generate

    config = GenerateConfig(scene=args.scene, scenes=args.scenes, test_scenes=args.test_scenes,
                            views=args.views, size=args.size, seed=args.seed,
                            shard_size=args.shard_size)
    out = generate(config, args.out, workers=args.workers or default_workers(),
                   progress=not args.no_progress)
    sheet = out / "contact_sheet.png"
    iio.imwrite(sheet, contact_sheet(out))
    print(f"{config.scenes} train and {config.split_scenes('test')} test scenes of "
          f"{config.scene} in {out}; contact sheet {sheet}")
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from gqn_rl.deepmind import import_deepmind

    report = import_deepmind(args.src, args.out, skip_corrupt=args.skip_corrupt,
                             workers=args.workers, scenes_per_shard=args.scenes_per_shard,
                             progress=not args.no_progress)
    print(f"imported {report.scenes} scenes from {report.files} files into {args.out} "
          f"({report.shards_written} shards written, {report.shards_kept} already there)")
    for path, count in report.skipped_per_file.items():
        print(f"skipped {count} corrupt records of {path}")
    return 0


def _data_masks(args: argparse.Namespace) -> int:
    from gqn_rl.datagen import default_workers
    from gqn_rl.foreground import write_masks

    for path in write_masks(args.data, workers=args.workers or default_workers(),
                            progress=not args.no_progress):
        print(f"wrote {path}")
    return 0


def _add_data(commands: argparse._SubParsersAction) -> None:
    from envs.scenes import FAMILIES

    p = commands.add_parser("data", help="render or import multi-view datasets")
    which = p.add_subparsers(dest="data_command", required=True)
    g = which.add_parser(
        "generate", help="render a dataset of a scene family",
        description="Render train and test splits with MuJoCo; deterministic for a seed "
                    "whatever --workers, and resumable: run again to finish an interrupted run.")
    g.add_argument("--scene", required=True, choices=sorted(FAMILIES), help="scene family")
    g.add_argument("--out", type=Path, required=True, help="dataset directory")
    g.add_argument("--scenes", type=_positive_int, required=True, help="train scenes")
    g.add_argument("--test-scenes", type=_non_negative_int,
                   help="test scenes (default: scenes / 10)")
    g.add_argument("--views", type=_positive_int, help="views per scene (default: family's)")
    g.add_argument("--size", type=_positive_int, default=64, help="image size (default 64)")
    g.add_argument("--workers", type=_positive_int, help="processes (default: all cores)")
    g.add_argument("--seed", type=_non_negative_int, default=0, help="seed (default 0)")
    g.add_argument("--shard-size", type=_positive_int, default=100, help="scenes per shard")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(run=_data_generate)
    i = which.add_parser(
        "import-deepmind", help="import DeepMind's gqn-datasets TFRecords",
        description="Read official *.tfrecord files (no TensorFlow needed), verify record "
                    "CRCs and write the gqn-rl dataset format; resumable.")
    i.add_argument("--src", type=Path, required=True,
                   help="a dataset folder with train/ and test/, or a folder of *.tfrecord")
    i.add_argument("--out", type=Path, required=True, help="dataset directory")
    i.add_argument("--skip-corrupt", action="store_true",
                   help="skip and count corrupt records instead of stopping")
    i.add_argument("--workers", type=_positive_int, default=1, help="processes")
    i.add_argument("--scenes-per-shard", type=_positive_int,
                   help="split each file into shards of this many scenes")
    i.add_argument("--no-progress", action="store_true", help="no progress bar")
    i.set_defaults(run=_data_import)
    m = which.add_parser(
        "masks", help="mask the objects' pixels of a rendered dataset",
        description="Render every view again with the scene's objects hidden and write "
                    "DIR/<split>.masks.npy (bool [N, V, H, W]): what gqn-rl pretrain "
                    "--object-weight weighs. A split whose masks are whole is skipped.")
    m.add_argument("data", type=Path, metavar="DIR", help="a dataset of gqn-rl data generate")
    m.add_argument("--workers", type=_positive_int, help="processes (default: all cores)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(run=_data_masks)


# -- bench ---------------------------------------------------------------------------------

def _bench_train_step(args: argparse.Namespace) -> int:
    import torch

    from gqn_rl.bench import describe_machine, matmul_gflops, time_gqn_step, time_wohlert_step

    if args.threads:
        torch.set_num_threads(args.threads)
    base = PRESETS[args.preset].model if args.preset else GQNConfig()
    config = _with_given(base, image_size=args.image_size, representation=args.representation,
                         r_dim=args.r_dim, h_dim=args.h_dim, z_dim=args.z_dim, L=args.L,
                         shared_core=args.shared_core)
    print(f"machine: {describe_machine()}")
    print(f"config: {config}, batch {args.batch}, context {args.context}")
    peak = matmul_gflops()
    print(f"matmul (2048x2048 float32): {peak:.0f} GFLOP/s")
    results = [time_gqn_step(config, args.batch, args.context, args.repeats,
                             precision=precision) for precision in args.precision]
    if args.compile:
        results.append(time_gqn_step(config, args.batch, args.context, args.repeats,
                                     compile=True, precision=args.precision[-1]))
    if args.channels_last:
        results.append(time_gqn_step(config, args.batch, args.context, args.repeats,
                                     channels_last=True, precision=args.precision[-1]))
    if args.wohlert:
        results.append(time_wohlert_step(args.wohlert, config, args.batch, args.context,
                                         args.repeats))
        results.append(time_wohlert_step(args.wohlert, config, args.batch, args.context,
                                         args.repeats, hidden_state=True))
    print(f"{'implementation':<28}{'s/step':>9}{'scenes/s':>10}{'GFLOP':>8}{'GFLOP/s':>9}"
          f"{'vs gqn-rl':>11}")
    for result in results:
        print(f"{result.name:<28}{result.seconds:>9.3f}{result.scenes_per_s:>10.2f}"
              f"{result.gflop:>8.0f}{result.gflops:>9.0f}"
              f"{results[0].seconds / result.seconds:>10.2f}x")
    if args.wohlert:
        print(f"gqn-rl is {results[-2].seconds / results[0].seconds:.2f}x as fast as wohlert, "
              f"{results[-1].seconds / results[0].seconds:.2f}x as fast as wohlert with cells "
              f"that read their hidden state (the paper's architecture, gqn-rl's)")
    return 0


def _bench_render(args: argparse.Namespace) -> int:
    import tempfile

    from gqn_rl.bench import (
        describe_machine,
        generate_rate,
        raw_render_rate,
        reader_rate,
        time_gqn_step,
    )
    from gqn_rl.datagen import GenerateConfig, default_workers, generate

    workers = args.workers or default_workers()
    print(f"machine: {describe_machine()}; images {args.size}x{args.size}")
    generate_rate(args.scene[0], args.size, scenes=workers, workers=workers)  # start the pool
    print(f"{'family':<22}{'raw views/s':>12}{'1 worker':>10}{'/raw':>7}"
          f"{f'{workers} workers':>12}{'/1 worker':>10}")
    for family in args.scene:
        raw = raw_render_rate(family, args.size)
        one = generate_rate(family, args.size, args.scenes, workers=1)
        many = generate_rate(family, args.size, args.scenes, workers=workers)
        print(f"{family:<22}{raw:>12.0f}{one:>10.0f}{one / raw:>7.2f}{many:>12.0f}"
              f"{many / one:>10.2f}")
    small = PRESETS["cpu-small"]
    with tempfile.TemporaryDirectory() as data:
        generate(GenerateConfig(scene=args.scene[0], scenes=64, test_scenes=0,
                                size=small.model.image_size, shard_size=32), data,
                 progress=False)
        batches = reader_rate(Path(data), small.train.batch_size)
    step = time_gqn_step(small.model, small.train.batch_size, context=5)
    print(f"reader: {batches:.0f} batches/s of {small.train.batch_size} scenes; cpu-small "
          f"trains {1 / step.seconds:.1f} steps/s: reader {batches * step.seconds:.0f}x faster")
    return 0


def _bench_env(args: argparse.Namespace) -> int:
    import os

    from gqn_rl.bench import describe_machine, env_rate

    if args.one_core:  # Mesa rasterises in the calling thread (envs.rendering)
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cores = "one core" if args.one_core else f"{len(os.sched_getaffinity(0))} cores"
    print(f"machine: {describe_machine()}; {cores}; images {args.size}x{args.size}; "
          f"{args.steps} random steps each")
    print(f"{'environment':<28}{'steps/s':>9}{'state steps/s':>15}{'raw renders/s':>15}")
    for env_id in args.env:
        result = env_rate(env_id, args.size, args.steps)
        print(f"{env_id:<28}{result.image:>9.0f}{result.state:>15.0f}"
              f"{result.raw_render:>15.0f}")
    return 0


def _bench_wrapper(args: argparse.Namespace) -> int:
    from agents.bench import wrapper_rates
    from gqn_rl.bench import describe_machine

    print(f"machine: {describe_machine()}; {args.env}, {args.envs} envs (DummyVecEnv), "
          f"{args.steps} env-steps each, fresh cpu-small GQN (32x32), pixels at 64x64")
    overrides = dict(args.hyperparams or [])
    if overrides:
        print(f"PPO settings changed for both agents: {overrides}")
    rates = wrapper_rates(args.env, args.envs, args.steps, overrides=overrides)
    rows = [("bare environment (32x32, random actions)", rates.bare),
            ("frozen-GQN vector wrapper (random actions)", rates.wrapped),
            ("PPO training, gqn-frozen", rates.ppo_frozen),
            ("PPO training, pixels (NatureCNN)", rates.ppo_pixels)]
    for name, rate in rows:
        print(f"{name:<46}{rate:>10.0f} env-steps/s")
    print(f"gqn-frozen PPO / pixels PPO: {rates.ppo_frozen / rates.ppo_pixels:.2f}x (target 3x); "
          f"wrapper / bare: {rates.wrapped / rates.bare:.2f} (target at least 0.5)")
    return 0


def _add_bench(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("bench", help="benchmarks")
    which = p.add_subparsers(dest="benchmark", required=True)
    t = which.add_parser(
        "train-step", help="time one GQN training step (forward, backward, Adam)",
        description="Scenes/s and achieved GFLOP/s of one training step on synthetic data, "
                    "next to this machine's matmul GFLOP/s and, with --wohlert, the public "
                    "wohlert/generative-query-network-pytorch at identical hyperparameters.")
    t.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset's model")
    t.add_argument("--image-size", type=_positive_int)
    t.add_argument("--representation", choices=REPRESENTATIONS)
    t.add_argument("--r-dim", type=_positive_int)
    t.add_argument("--h-dim", type=_positive_int)
    t.add_argument("--z-dim", type=_positive_int)
    t.add_argument("--L", type=_positive_int)
    t.add_argument("--shared-core", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--batch", type=_positive_int, default=4, help="scenes per step")
    t.add_argument("--context", type=_positive_int, default=5, help="context views per scene")
    t.add_argument("--repeats", type=_positive_int, default=3, help="timed steps (best is kept)")
    t.add_argument("--threads", type=_positive_int, help="torch threads (default: all cores)")
    t.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"],
                   help="forward-pass arithmetic, each timed in turn (default fp32); bf16 "
                        "needs a CPU with AVX512-BF16 or AMX. --compile and --channels-last "
                        "use the last one")
    t.add_argument("--compile", action="store_true", help="also time torch.compile")
    t.add_argument("--channels-last", action="store_true", help="also time channels_last")
    t.add_argument("--wohlert", type=Path, metavar="CHECKOUT",
                   help="root of a wohlert/generative-query-network-pytorch checkout to time")
    t.set_defaults(run=_bench_train_step)
    from envs.scenes import FAMILIES

    r = which.add_parser(
        "render", help="views/s of dataset rendering next to the raw MuJoCo renderer",
        description="Per family: views/s of mujoco.Renderer on one compiled scene, of "
                    "`gqn-rl data generate` with one worker and with all workers; then the "
                    "dataset reader's batch rate next to the cpu-small preset's step rate.")
    r.add_argument("--scene", nargs="+", choices=sorted(FAMILIES), default=sorted(FAMILIES))
    r.add_argument("--size", type=_positive_int, default=64, help="image size")
    r.add_argument("--scenes", type=_positive_int, default=1000,
                   help="scenes rendered per run (default 1000)")
    r.add_argument("--workers", type=_positive_int, help="default: all cores")
    r.set_defaults(run=_bench_render)
    from envs import ENVIRONMENTS

    e = which.add_parser(
        "env", help="environment steps/s with one image per step",
        description="Per environment: steps/s with one image observation, next to the same "
                    "task without rendering (obs_mode=state) and the raw MuJoCo renderer on "
                    "its scene family.")
    e.add_argument("--env", nargs="+", choices=list(ENVIRONMENTS), default=list(ENVIRONMENTS))
    e.add_argument("--size", type=_positive_int, default=64, help="image size (default 64)")
    e.add_argument("--steps", type=_positive_int, default=2000, help="steps timed per mode")
    e.add_argument("--one-core", action=argparse.BooleanOptionalAction, default=True,
                   help="pin the process to one core (default)")
    e.set_defaults(run=_bench_env)
    w = which.add_parser(
        "wrapper", help="PPO env-steps/s: frozen GQN vs pixels vs the bare environment",
        description="Env-steps/s of the bare vector environment, of it behind the batched "
                    "frozen-GQN wrapper, and of PPO training on the frozen encoder and on pixels, "
                    "in one run.")
    w.add_argument("--env", choices=list(ENVIRONMENTS), default="gqn_rl/ArmReach-v0")
    w.add_argument("--envs", type=_positive_int, default=8, help="environments (default 8)")
    w.add_argument("--steps", type=_positive_int, default=8192, help="env-steps timed per row")
    w.add_argument("--hyperparams", nargs="+", type=_key_value, metavar="KEY=VALUE",
                   help="override PPO settings of agents/hyperparams.py for both agents, "
                        "e.g. n_epochs=10")
    w.set_defaults(run=_bench_wrapper)


def _episode(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from gqn_rl.episodes import reference_policy, run_episode, save_gif, summarize

    env = gym.make(args.env, image_size=args.size, render_mode="rgb_array")
    env.action_space.seed(args.seed)
    policy = reference_policy(env, args.policy)
    episodes = [run_episode(env, policy, seed=args.seed + i, record=args.out is not None and i == 0)
                for i in range(args.episodes)]
    env.close()
    summary = summarize(episodes)
    print(f"{args.env} {args.policy}, {args.episodes} episodes from seed {args.seed}: return "
          f"{summary['mean_return']:.2f} +- {summary['std_return']:.2f}, success "
          f"{summary['success_rate']:.2f}, length {summary['mean_length']:.1f}")
    if args.out is not None:
        save_gif(episodes[0].frames, args.out, scale=args.scale)
        print(f"wrote {args.out} (seed {args.seed})")
    return 0


def _add_episode(commands: argparse._SubParsersAction) -> None:
    from envs import ENVIRONMENTS
    from gqn_rl.episodes import POLICIES

    p = commands.add_parser(
        "episode", help="play episodes with a reference policy, optionally saving a GIF",
        description="Episodes of an environment with its scripted (true-state) policy or a "
                    "random one: prints mean and std of return and the success rate, and can "
                    "save the first episode's frames as a GIF.")
    p.add_argument("--env", required=True, choices=list(ENVIRONMENTS))
    p.add_argument("--policy", choices=POLICIES, default="scripted")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the first episode (default 0)")
    p.add_argument("--episodes", type=_positive_int, default=1, help="episodes (default 1)")
    p.add_argument("--size", type=_positive_int, default=64, help="image size (default 64)")
    p.add_argument("--out", type=Path, help="GIF to write")
    p.add_argument("--scale", type=_positive_int, default=2, help="GIF pixel scale (default 2)")
    p.set_defaults(run=_episode)


def _train(args: argparse.Namespace) -> int:
    from agents.train import RunConfig, train

    run = RunConfig(env=args.env, encoder=args.encoder, algo=args.algo, steps=args.steps,
                    seed=args.seed, checkpoint=str(args.checkpoint) if args.checkpoint else None,
                    fresh_encoder=args.fresh_encoder, intrinsic_bonus=args.intrinsic_bonus,
                    eval_every=args.eval_every,
                    eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every,
                    overrides=dict(args.hyperparams or []))
    final = train(run, args.out, resume=args.resume or args.start_over,
                  progress=not args.no_progress, start_over=args.start_over)
    print(f"wrote {final}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from agents.train import evaluate

    report = evaluate(args.run_dir, args.episodes, args.gif)
    print(f"{report['env']} {report['encoder']} {report['algo']}, {report['train_steps']} steps: "
          f"return {report['mean_return']:.2f} +- {report['std_return']:.2f}, success "
          f"{report['success_rate']:.2f} over {report['episodes']} episodes "
          f"-> {args.run_dir / 'evaluation.json'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from agents.demo import DemoConfig, run_demo

    config = _with_given(DemoConfig(), steps=args.steps, seeds=args.seeds,
                         workers=args.workers, pretrain=args.pretrain or None,
                         scenes=args.scenes, pretrain_steps=args.pretrain_steps)
    print(f"report: {run_demo(args.out, config, progress=not args.no_progress)}")
    return 0


def _add_agents(commands: argparse._SubParsersAction) -> None:
    from agents.hyperparams import ALGOS, ENCODER_KINDS

    t = commands.add_parser(
        "train", help="train an SB3 agent on an encoder kind",
        description="Train PPO or SAC on a gymnasium environment (ours, or any MuJoCo one seen "
                    "through the camera adapter) with the chosen encoder; hyperparameters from "
                    "agents/hyperparams.py. GQN kinds use --checkpoint, else the shipped "
                    "checkpoint of the scene family, else a fresh encoder (the log says which).")
    t.add_argument("--env", required=True, help="gymnasium id, e.g. gqn_rl/ArmReach-v0")
    t.add_argument("--encoder", required=True, choices=ENCODER_KINDS)
    t.add_argument("--algo", choices=ALGOS, default="ppo")
    t.add_argument("--steps", type=_positive_int, required=True, help="environment steps")
    t.add_argument("--seed", type=_non_negative_int, default=0)
    t.add_argument("--out", type=Path, required=True, help="run directory")
    t.add_argument("--checkpoint", type=Path, help="GQN pretraining checkpoint")
    t.add_argument("--fresh-encoder", action="store_true",
                   help="a freshly initialised GQN (the random-encoder control)")
    t.add_argument("--intrinsic-bonus", action="store_true",
                   help="gqn-inference: add the normalised surprise to the training reward, "
                        "weighted by the recipe's beta (agents.hyperparams.INTRINSIC_BETA)")
    t.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    t.add_argument("--start-over", action="store_true",
                   help="with a run that has no resume point (killed before its first): train "
                        "it again from step 0")
    t.add_argument("--eval-every", type=_positive_int, default=5000, help="steps between evals")
    t.add_argument("--eval-episodes", type=_positive_int, default=10)
    t.add_argument("--checkpoint-every", type=_positive_int, default=10000,
                   help="steps between resume points")
    t.add_argument("--hyperparams", nargs="+", type=_key_value, metavar="KEY=VALUE",
                   help="override settings of agents/hyperparams.py, e.g. n_steps=64")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(run=_train)
    e = commands.add_parser("evaluate", help="evaluate a trained run",
                            description="Mean/std of return and success rate over N episodes "
                                        "(deterministic actions) into RUN/evaluation.json.")
    e.add_argument("run_dir", type=Path, metavar="RUN", help="run directory of gqn-rl train")
    e.add_argument("--episodes", type=_positive_int, default=20)
    e.add_argument("--gif", type=Path, help="save the first episode as a GIF")
    e.set_defaults(run=_evaluate)
    d = commands.add_parser(
        "demo", help="agents learning ArmReach, small: oracle, frozen GQN, pixels, report",
        description="A small benchmark on ArmReach: the random and scripted references, the "
                    "state oracle, the frozen GQN (the shipped arm checkpoint, or with "
                    "--pretrain one pretrained here) and pixels, trained with the recipe for "
                    "the same steps; OUT/report.md has normalised scores, learning curves, GQN "
                    "samples and an episode GIF (15-20 minutes on two cores). Run it again "
                    "to finish an interrupted demo.")
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="default runs/demo")
    d.add_argument("--steps", type=_positive_int, help="steps of each agent (default 10000)")
    d.add_argument("--seeds", type=_positive_int, help="seeds of each agent (default 1)")
    d.add_argument("--workers", type=_positive_int, help="agents at once (default 2)")
    d.add_argument("--pretrain", action="store_true",
                   help="render arm scenes and pretrain the GQN first (a new OUT: a directory "
                        "keeps the agents of the GQN it started with)")
    d.add_argument("--scenes", type=_positive_int,
                   help="with --pretrain: arm scenes to render (default 2000)")
    d.add_argument("--pretrain-steps", type=_positive_int,
                   help="with --pretrain: GQN steps (default 3000)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(run=_demo)


def _benchmark(args: argparse.Namespace) -> int:
    from agents.benchmark import BenchmarkConfig, run_benchmark

    if args.track == "rl" and args.demos is not None:
        raise ValueError("--demos sets the bc track's demonstration counts: the rl track "
                         "takes --steps")
    demos = BenchmarkConfig.demos if args.demos is None else tuple(args.demos)
    config = BenchmarkConfig(tuple(args.env), tuple(args.encoder), args.seeds, args.track,
                             args.steps, demos, args.workers,
                             eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                             final_episodes=args.final_episodes,
                             overrides=dict(args.hyperparams or []),
                             checkpoint=None if args.checkpoint is None else str(args.checkpoint))
    path = run_benchmark(config, args.out, progress=not args.no_progress)
    print(f"wrote {path}; gqn-rl report {args.out} writes the report")
    return 0


def _report(args: argparse.Namespace) -> int:
    from agents.report import publish, write_report

    print(f"wrote {write_report(args.out)}")
    if args.publish:
        written = publish(args.out, args.publish)
        print(f"published {len(written)} files to {args.publish}")
    return 0


def _add_benchmark(commands: argparse._SubParsersAction) -> None:
    from agents.benchmark import CONTENDERS, TRACKS

    b = commands.add_parser(
        "benchmark", help="agents on a grid of environments, encoders, seeds and a track",
        description="Run every (env, encoder, seed) of the grid on the rl track (each "
                    "environment's recipe: agents/hyperparams.py RECIPES) or the bc track "
                    "(behaviour cloning from scripted demonstrations) into OUT; finished runs "
                    "are skipped and an interrupted one resumes. OUT/results.csv has a row "
                    "per run; gqn-rl report OUT writes the report.")
    b.add_argument("--env", nargs="+", required=True, help="gymnasium ids")
    b.add_argument("--encoder", nargs="+", required=True, choices=list(CONTENDERS),
                   metavar="KIND", help=f"some of: {', '.join(CONTENDERS)}")
    b.add_argument("--seeds", type=_positive_int, required=True, help="seeds 0..N-1")
    b.add_argument("--track", choices=TRACKS, default="rl")
    b.add_argument("--out", type=Path, required=True, help="benchmark directory")
    b.add_argument("--steps", type=_positive_int,
                   help="RL steps per run (default: each environment's recipe budget)")
    b.add_argument("--demos", type=_positive_int, nargs="+",
                   help="demonstration counts of the bc track (default 10 50 200)")
    b.add_argument("--workers", type=_positive_int, default=1,
                   help="processes, one torch thread each (default 1; at most the cores)")
    b.add_argument("--eval-every", type=_positive_int,
                   help="RL steps between evaluations (default: a tenth of the budget)")
    b.add_argument("--eval-episodes", type=_positive_int, default=20,
                   help="episodes per periodic RL evaluation (default 20)")
    b.add_argument("--final-episodes", type=_positive_int,
                   help="episodes of the final RL evaluation and of the references "
                        "(default: --eval-episodes)")
    b.add_argument("--checkpoint", type=Path,
                   help="GQN checkpoint of the gqn-* encoders (default: the shipped one)")
    b.add_argument("--hyperparams", nargs="+", type=_key_value, metavar="KEY=VALUE",
                   help="override settings of agents/hyperparams.py in every RL run")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(run=_benchmark)
    r = commands.add_parser(
        "report", help="the benchmark's report.md and PNGs",
        description="Normalised scores (random 0, state oracle 100), IQM with stratified-"
                    "bootstrap CIs and probability of improvement over pixels (rliable), "
                    "sample-efficiency curves, steps and wall time to 50% and 80% of the "
                    "oracle's score, camera shift: OUT/report.md.")
    r.add_argument("out", type=Path, metavar="DIR", help="directory of gqn-rl benchmark")
    r.add_argument("--publish", type=Path, metavar="DEST",
                   help="also copy the report, results.csv, PNGs and each finished run's "
                        "light records (result.json, eval/evaluations.npz, wall.json) to DEST: "
                        "a copy of DEST resumes with gqn-rl benchmark --out on a fresh machine")
    r.set_defaults(run=_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gqn-rl", description="Generative Query Networks as scene encoders for RL agents.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_data(commands)
    _add_pretrain(commands)
    _add_probe(commands)
    _add_ceiling(commands)
    _add_bench(commands)
    _add_episode(commands)
    _add_agents(commands)
    _add_benchmark(commands)
    return parser


EXPECTED_ERRORS = (ValueError, OSError, FloatingPointError)
"""Refusals with a message of their own: bad input, a missing or unwritable file, a loss
that became NaN. Anything else is reported with its type (a bug: --debug shows where)."""


def error_line(error: BaseException) -> str:
    """One line saying what went wrong."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, EXPECTED_ERRORS):
        return message
    return f"{type(error).__name__}: {message} (gqn-rl --debug ... shows the traceback)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        return args.run(args)
    except Exception as error:  # noqa: BLE001 - every failure becomes one line (or --debug)
        if args.debug:
            raise
        print(f"gqn-rl {args.command}: error: {error_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
