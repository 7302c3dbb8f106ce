"""The ``gqn-rl`` command line: a thin layer over functions callable from Python."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from gqn import PRESETS, GQNConfig
from gqn_rl.allocator import keep_freed_memory


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# -- pretrain ------------------------------------------------------------------------------

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
    overrides = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
                 "max_context": args.max_context}
    train_config = dataclasses.replace(
        train_config, **{k: v for k, v in overrides.items() if v is not None})
    result = pretrain(args.data, args.out, model_config, train_config, resume=args.resume,
                      until=args.until, device=args.device, progress=not args.no_progress)
    last = result.history[-1] if result.history else {}
    print(f"step {result.step}: checkpoint {result.checkpoint}"
          + (f", loss {last['loss']:.2f} nats, kl {last['kl']:.2f}, mse {last['mse']:.4f}"
             if last else " (nothing left to train)"))
    return 0


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
    p.add_argument("--seed", type=int, help="seed of weights, batches and latents")
    p.add_argument("--until", type=_positive_int,
                   help="stop after this many total steps (schedules still follow --steps)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: GPU when present")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_pretrain)


# -- bench ---------------------------------------------------------------------------------

def _bench_train_step(args: argparse.Namespace) -> int:
    import torch

    from gqn_rl.bench import describe_machine, matmul_gflops, time_gqn_step, time_wohlert_step

    if args.threads:
        torch.set_num_threads(args.threads)
    base = PRESETS[args.preset].model if args.preset else GQNConfig()
    config = dataclasses.replace(base, **{k: v for k, v in {
        "image_size": args.image_size, "representation": args.representation,
        "r_dim": args.r_dim, "h_dim": args.h_dim, "z_dim": args.z_dim, "L": args.L,
        "shared_core": args.shared_core}.items() if v is not None})
    print(f"machine: {describe_machine()}")
    print(f"config: {config}, batch {args.batch}, context {args.context}")
    peak = matmul_gflops()
    print(f"matmul (2048x2048 float32): {peak:.0f} GFLOP/s")
    results = [time_gqn_step(config, args.batch, args.context, args.repeats)]
    if args.compile:
        results.append(time_gqn_step(config, args.batch, args.context, args.repeats,
                                     compile=True))
    if args.channels_last:
        results.append(time_gqn_step(config, args.batch, args.context, args.repeats,
                                     channels_last=True))
    if args.wohlert:
        results.append(time_wohlert_step(args.wohlert, config, args.batch, args.context,
                                         args.repeats))
    print(f"{'implementation':<28}{'s/step':>9}{'scenes/s':>10}{'GFLOP/s':>9}{'vs gqn-rl':>11}")
    for result in results:
        rate = f"{result.gflops:.0f}" if result.gflops is not None else "-"
        print(f"{result.name:<28}{result.seconds:>9.3f}{result.scenes_per_s:>10.2f}{rate:>9}"
              f"{results[0].seconds / result.seconds:>10.2f}x")
    if args.wohlert:
        print(f"gqn-rl is {results[-1].seconds / results[0].seconds:.2f}x as fast as wohlert")
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
    t.add_argument("--representation", choices=["pool", "tower", "pyramid"])
    t.add_argument("--r-dim", type=_positive_int)
    t.add_argument("--h-dim", type=_positive_int)
    t.add_argument("--z-dim", type=_positive_int)
    t.add_argument("--L", type=_positive_int)
    t.add_argument("--shared-core", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--batch", type=_positive_int, default=4, help="scenes per step")
    t.add_argument("--context", type=_positive_int, default=5, help="context views per scene")
    t.add_argument("--repeats", type=_positive_int, default=3, help="timed steps (best is kept)")
    t.add_argument("--threads", type=_positive_int, help="torch threads (default: all cores)")
    t.add_argument("--compile", action="store_true", help="also time torch.compile")
    t.add_argument("--channels-last", action="store_true", help="also time channels_last")
    t.add_argument("--wohlert", type=Path, metavar="CHECKOUT",
                   help="root of a wohlert/generative-query-network-pytorch checkout to time")
    t.set_defaults(run=_bench_train_step)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gqn-rl", description="Generative Query Networks as scene encoders for RL agents.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_pretrain(commands)
    _add_bench(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as error:
        print(f"gqn-rl {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
