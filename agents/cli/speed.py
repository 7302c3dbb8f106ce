"""``gqn-rl speed`` (``bench``, its old name): how fast the parts run on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.cli.args import add_image_size, key_value, positive_int, with_given
from gqn import PRESETS, GQNConfig
from gqn.config import PRECISIONS, REPRESENTATIONS


def _bench_train_step(args: argparse.Namespace) -> int:
    import torch

    from gqn_rl.speed import describe_machine, matmul_gflops, time_gqn_step, time_wohlert_step

    if args.threads:
        torch.set_num_threads(args.threads)
    base = PRESETS[args.preset].model if args.preset else GQNConfig()
    config = with_given(base, image_size=args.image_size, representation=args.representation,
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

    from gqn_rl.datagen import default_workers
    from gqn_rl.speed import (
        describe_machine,
        generate_rate,
        raw_render_rate,
        reader_versus_training,
    )

    workers = args.workers or default_workers()
    print(f"machine: {describe_machine()}; images {args.image_size}x{args.image_size}")
    generate_rate(args.scene[0], args.image_size, scenes=workers, workers=workers)  # start the pool
    print(f"{'family':<22}{'raw views/s':>12}{'1 worker':>10}{'/raw':>7}"
          f"{f'{workers} workers':>12}{'/1 worker':>10}")
    for family in args.scene:
        raw = raw_render_rate(family, args.image_size)
        one = generate_rate(family, args.image_size, args.scenes, workers=1)
        many = generate_rate(family, args.image_size, args.scenes, workers=workers)
        print(f"{family:<22}{raw:>12.0f}{one:>10.0f}{one / raw:>7.2f}{many:>12.0f}"
              f"{many / one:>10.2f}")
    batches, steps = reader_versus_training(args.scene[0])
    print(f"reader: {batches:.0f} batches/s of {PRESETS['cpu-small'].train.batch_size} scenes; "
          f"cpu-small trains {steps:.1f} steps/s: reader {batches / steps:.0f}x faster")
    return 0


def _bench_env(args: argparse.Namespace) -> int:
    import os

    from gqn_rl.speed import describe_machine, env_rate

    if args.one_core:  # Mesa rasterises in the calling thread (envs.rendering)
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cores = "one core" if args.one_core else f"{len(os.sched_getaffinity(0))} cores"
    print(f"machine: {describe_machine()}; {cores}; images {args.image_size}x{args.image_size}; "
          f"{args.steps} random steps each")
    print(f"{'environment':<28}{'steps/s':>9}{'state steps/s':>15}{'raw renders/s':>15}")
    for env_id in args.env:
        result = env_rate(env_id, args.image_size, args.steps)
        print(f"{env_id:<28}{result.image:>9.0f}{result.state:>15.0f}"
              f"{result.raw_render:>15.0f}")
    return 0


def _bench_wrapper(args: argparse.Namespace) -> int:
    from agents.speed import wrapper_rates
    from gqn_rl.speed import describe_machine

    print(f"machine: {describe_machine()}; {args.env}, {args.envs} envs (DummyVecEnv), "
          f"{args.steps} env-steps each, a fresh GQN of the family's shipped architecture, "
          "pixels at 64x64")
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


def _bench_sac(args: argparse.Namespace) -> int:
    from agents.hyperparams import RECIPES
    from agents.kinds import get_kind
    from agents.speed import sac_step_times
    from gqn_rl.speed import describe_machine

    recipe = RECIPES.get(args.env)
    print(f"machine: {describe_machine()}; {args.env}; one torch thread; {args.steps} training "
          f"steps per timing, best of {args.repeats}; the shipped GQN where a kind has one")
    print(f"{'encoder':<22}{'SB3 SAC ms/step':>17}{'gqn-rl SAC ms/step':>20}{'speed-up':>10}"
          f"{'hours per run':>15}")
    for t in sac_step_times(args.env, tuple(args.encoder), args.steps, args.repeats):
        steps = recipe.budget(get_kind(t.encoder).reads_images) if recipe else None
        hours = f"{t.ours * steps / 3600:.1f} ({steps // 1000}k)" if steps else "-"
        print(f"{t.encoder:<22}{t.sb3 * 1e3:>17.1f}{t.ours * 1e3:>20.1f}"
              f"{t.sb3 / t.ours:>9.2f}x{hours:>15}")
    return 0


def add(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("speed", aliases=["bench"],
                            help="how fast training steps, rendering, environments and wrappers "
                                 "run here (bench: its old name, deprecated)")
    which = p.add_subparsers(dest="part", required=True)
    t = which.add_parser(
        "train-step", help="time one GQN training step (forward, backward, Adam)",
        description="Scenes/s and achieved GFLOP/s of one training step on synthetic data, "
                    "next to this machine's matmul GFLOP/s and, with --wohlert, the public "
                    "wohlert/generative-query-network-pytorch at identical hyperparameters.")
    t.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset's model")
    t.add_argument("--image-size", type=positive_int)
    t.add_argument("--representation", choices=REPRESENTATIONS)
    t.add_argument("--r-dim", type=positive_int)
    t.add_argument("--h-dim", type=positive_int)
    t.add_argument("--z-dim", type=positive_int)
    t.add_argument("--L", type=positive_int)
    t.add_argument("--shared-core", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--batch", type=positive_int, default=4, help="scenes per step")
    t.add_argument("--context", type=positive_int, default=5, help="context views per scene")
    t.add_argument("--repeats", type=positive_int, default=3, help="timed steps (best is kept)")
    t.add_argument("--threads", type=positive_int, help="torch threads (default: all cores)")
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
    add_image_size(r)
    r.add_argument("--scenes", type=positive_int, default=1000,
                   help="scenes rendered per run (default 1000)")
    r.add_argument("--workers", type=positive_int, help="default: all cores")
    r.set_defaults(run=_bench_render)
    from envs import CURRENT, ENVIRONMENTS

    e = which.add_parser(
        "env", help="environment steps/s with one image per step",
        description="Per environment: steps/s with one image observation, next to the same "
                    "task without rendering (obs_mode=state) and the raw MuJoCo renderer on "
                    "its scene family.")
    e.add_argument("--env", nargs="+", choices=list(ENVIRONMENTS), default=list(CURRENT),
                   help=f"default: the newest version of each ({' '.join(CURRENT)})")
    add_image_size(e)
    e.add_argument("--steps", type=positive_int, default=2000, help="steps timed per mode")
    e.add_argument("--one-core", action=argparse.BooleanOptionalAction, default=True,
                   help="pin the process to one core (default)")
    e.set_defaults(run=_bench_env)
    w = which.add_parser(
        "wrapper", help="PPO env-steps/s: frozen GQN vs pixels vs the bare environment",
        description="Env-steps/s of the bare vector environment, of it behind the batched "
                    "frozen-GQN wrapper, and of PPO training on the frozen encoder and on pixels, "
                    "in one run.")
    w.add_argument("--env", choices=list(ENVIRONMENTS), default="gqn_rl/ArmReach-v1")
    w.add_argument("--envs", type=positive_int, default=8, help="environments (default 8)")
    w.add_argument("--steps", type=positive_int, default=8192, help="env-steps timed per row")
    w.add_argument("--hyperparams", nargs="+", type=key_value, metavar="KEY=VALUE",
                   help="override PPO settings of agents/hyperparams.py for both agents, "
                        "e.g. n_epochs=10")
    w.set_defaults(run=_bench_wrapper)
    from agents.kinds import KINDS

    s = which.add_parser(
        "sac", help="SAC ms per training step per encoder kind: SB3's class vs the project's",
        description="Per encoder kind: milliseconds per SAC training step (one environment "
                    "step and one update) with SB3's SAC as SB3 builds it and with the "
                    "project's at the kind's recipe (agents/sac.py: SB3's updates, and DrQ's "
                    "one encoder where the policy trains one), on one torch thread, and "
                    "the hours a run of the environment's budget takes at that rate.")
    s.add_argument("--env", choices=list(ENVIRONMENTS), default="gqn_rl/ArmReach-v1")
    s.add_argument("--encoder", nargs="+", choices=list(KINDS),
                   default=["pixels-aug", "gqn-frozen"])
    s.add_argument("--steps", type=positive_int, default=50, help="training steps per timing")
    s.add_argument("--repeats", type=positive_int, default=2, help="timings (best is kept)")
    s.set_defaults(run=_bench_sac)
