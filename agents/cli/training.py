"""``gqn-rl episode``, ``train``, ``evaluate`` and ``demo``: agents, one run at a time."""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.cli.args import add_image_size, key_value, non_negative_int, positive_int, with_given


def _episode(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from agents.episodes import reference_policy, run_episodes, save_gif, summarize
    from gqn.fileio import check_output

    if args.out is not None:  # before any episode is played
        check_output(args.out, "--out", "file")
    env = gym.make(args.env, image_size=args.image_size, render_mode="rgb_array")
    env.action_space.seed(args.seed)
    policy = reference_policy(env, args.policy)
    episodes = run_episodes(env, policy, args.episodes, args.seed,
                            record_first=args.out is not None)
    summary = summarize(episodes)
    print(f"{args.env} {args.policy}, {args.episodes} episodes from seed {args.seed}: return "
          f"{summary['mean_return']:.2f} +- {summary['std_return']:.2f}, success "
          f"{summary['success_rate']:.2f}, length {summary['mean_length']:.1f}")
    if args.out is not None:
        save_gif(episodes[0].frames, args.out, scale=args.scale)
        print(f"wrote {args.out} (seed {args.seed})")
    return 0


def _add_episode(commands: argparse._SubParsersAction) -> None:
    from agents.episodes import POLICIES
    from envs import ENVIRONMENTS

    p = commands.add_parser(
        "episode", help="play episodes with a reference policy, optionally saving a GIF",
        description="Episodes of an environment with its scripted (true-state) policy or a "
                    "random one: prints mean and std of return and the success rate, and can "
                    "save the first episode's frames as a GIF.")
    p.add_argument("--env", required=True, choices=list(ENVIRONMENTS))
    p.add_argument("--policy", choices=POLICIES, default="scripted")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the first episode (default 0)")
    p.add_argument("--episodes", type=positive_int, default=1, help="episodes (default 1)")
    add_image_size(p)
    p.add_argument("--out", type=Path, help="GIF to write")
    p.add_argument("--scale", type=positive_int, default=2, help="GIF pixel scale (default 2)")
    p.set_defaults(run=_episode)


def _train(args: argparse.Namespace) -> int:
    from agents.runs import RunConfig
    from agents.train import train

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
    from gqn.fileio import check_output

    if args.gif is not None:  # before any episode is played
        check_output(args.gif, "--gif", "file")
    report = evaluate(args.run_dir, args.episodes, args.gif)
    print(f"{report['env']} {report['encoder']} {report['algo']}, {report['train_steps']} steps: "
          f"return {report['mean_return']:.2f} +- {report['std_return']:.2f}, success "
          f"{report['success_rate']:.2f} over {report['episodes']} episodes "
          f"-> {args.run_dir / 'evaluation.json'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from agents.demo import DemoConfig, run_demo

    config = with_given(DemoConfig(), steps=args.steps, seeds=args.seeds,
                         workers=args.workers, pretrain=args.pretrain or None,
                         scenes=args.scenes, pretrain_steps=args.pretrain_steps)
    print(f"report: {run_demo(args.out, config, progress=not args.no_progress)}")
    return 0


def _add_agents(commands: argparse._SubParsersAction) -> None:
    from agents.hyperparams import ALGOS
    from agents.kinds import KINDS

    t = commands.add_parser(
        "train", help="train an SB3 agent on an encoder kind",
        description="Train PPO or SAC on a gymnasium environment (ours, or any MuJoCo one seen "
                    "through the camera adapter) with the chosen encoder; hyperparameters from "
                    "agents/hyperparams.py. GQN kinds use --checkpoint, else the shipped "
                    "checkpoint of the scene family, else a fresh encoder (the log says which).")
    t.add_argument("--env", required=True, help="gymnasium id, e.g. gqn_rl/ArmReach-v1")
    t.add_argument("--encoder", required=True, choices=list(KINDS))
    t.add_argument("--algo", choices=ALGOS, default="ppo")
    t.add_argument("--steps", type=positive_int, required=True, help="environment steps")
    t.add_argument("--seed", type=non_negative_int, default=0)
    t.add_argument("--out", type=Path, required=True, help="run directory")
    t.add_argument("--checkpoint", type=Path, help="GQN pretraining checkpoint")
    t.add_argument("--fresh-encoder", action="store_true",
                   help="a freshly initialised GQN of the scene family's shipped architecture "
                        "(the random-encoder control)")
    t.add_argument("--intrinsic-bonus", action="store_true",
                   help="gqn-inference: add the normalised surprise to the training reward, "
                        "weighted by the recipe's beta (agents.hyperparams.INTRINSIC_BETA)")
    t.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    t.add_argument("--start-over", action="store_true",
                   help="with a run that has no resume point (killed before its first): train "
                        "it again from step 0")
    t.add_argument("--eval-every", type=positive_int,
                   help="steps between evaluations (default: a tenth of --steps, at least one "
                        "rollout)")
    t.add_argument("--eval-episodes", type=positive_int, default=10)
    t.add_argument("--checkpoint-every", type=positive_int,
                   help="steps between resume points (default: as --eval-every's)")
    t.add_argument("--hyperparams", nargs="+", type=key_value, metavar="KEY=VALUE",
                   help="override settings of agents/hyperparams.py, e.g. n_steps=64")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(run=_train)
    e = commands.add_parser("evaluate", help="evaluate a trained run",
                            description="Mean/std of return and success rate over N episodes "
                                        "(deterministic actions) into RUN/evaluation.json.")
    e.add_argument("run_dir", type=Path, metavar="RUN", help="run directory of gqn-rl train")
    e.add_argument("--episodes", type=positive_int, default=20)
    e.add_argument("--gif", type=Path, help="save the first episode as a GIF")
    e.set_defaults(run=_evaluate)
    d = commands.add_parser(
        "demo", help="agents learning RoomNavigation, small: oracle, pixels, frozen GQN, report",
        description="A small benchmark on gqn_rl/RoomNavigation-v1: the random and scripted "
                    "references, the state oracle, pixels with and without augmentation and "
                    "the frozen GQN (the shipped rooms_near checkpoint, or with --pretrain one "
                    "pretrained here), trained with the recipe (PPO) for the same steps; "
                    "OUT/report.md has normalised scores, learning curves, GQN samples and an "
                    "episode GIF. Its run time on two cores: docs/benchmarks.md. Run it again "
                    "to finish an interrupted demo.")
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="default runs/demo")
    d.add_argument("--steps", type=positive_int, help="steps of each agent (default 60000)")
    d.add_argument("--seeds", type=positive_int, help="seeds of each agent (default 2)")
    d.add_argument("--workers", type=positive_int, help="agents at once (default 2)")
    d.add_argument("--pretrain", action="store_true",
                   help="render rooms_near scenes and pretrain the GQN first (a new OUT: a "
                        "directory keeps the agents of the GQN it started with)")
    d.add_argument("--scenes", type=positive_int,
                   help="with --pretrain: scenes to render (default 2000)")
    d.add_argument("--pretrain-steps", type=positive_int,
                   help="with --pretrain: GQN steps (default 3000)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(run=_demo)


def add(commands: argparse._SubParsersAction) -> None:
    """Declare the group's commands."""
    _add_episode(commands)
    _add_agents(commands)
