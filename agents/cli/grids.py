"""``gqn-rl benchmark`` and ``report``: grids of agent runs and what they say."""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.cli.args import key_value, non_negative_int, positive_int


def _benchmark(args: argparse.Namespace) -> int:
    from agents.benchmark import run_benchmark
    from agents.grid import BenchmarkConfig

    if args.track == "rl" and args.demos is not None:
        raise ValueError("--demos sets the bc track's demonstration counts: the rl track "
                         "takes --steps")
    demos = BenchmarkConfig.demos if args.demos is None else tuple(args.demos)
    config = BenchmarkConfig(envs=tuple(args.env), encoders=tuple(args.encoder),
                             seeds=args.seeds, first_seed=args.first_seed, track=args.track,
                             steps=args.steps, demos=demos,
                             workers=args.workers, eval_every=args.eval_every,
                             eval_episodes=args.eval_episodes,
                             final_episodes=args.final_episodes,
                             overrides=dict(args.hyperparams or []),
                             checkpoint=None if args.checkpoint is None else str(args.checkpoint),
                             keep_buffers=not args.drop_buffers, extend=args.extend)
    if args.address_timeout is not None and args.address is None:
        raise ValueError("--address-timeout is the wait for --address")
    path = run_benchmark(config, args.out, progress=not args.no_progress,
                         executor=args.executor, address=args.address,
                         address_timeout=30.0 if args.address_timeout is None
                         else args.address_timeout)
    print(f"wrote {path}; gqn-rl report {args.out} writes the report")
    return 0


def _report(args: argparse.Namespace) -> int:
    from agents.pages import Pages, write_pages
    from agents.report import check_publish, compose_report, publish, save_report

    if (args.machine or args.grid_command) and not args.pages:
        raise ValueError("--machine and --grid-command describe the grid on its pages: add "
                         "--pages")
    if args.publish:
        check_publish(args.out, args.publish)  # before report.md is written
    report = compose_report(args.out)
    print(f"wrote {save_report(report)}")
    if args.publish:
        written = publish(args.out, args.publish, report)  # the runs report.md counts
        print(f"published {len(written)} files to {args.publish}")
    if args.pages:
        pages = Pages(args.pages, args.publish or args.out, args.machine, args.grid_command,
                      published=args.publish is not None)
        for page in write_pages(report, pages):
            print(f"wrote {page}")
    return 0


def _contender_name(name: str) -> str:
    """``--encoder``'s check: a name :func:`agents.grid.get_contender` knows."""
    from agents.grid import get_contender

    try:
        get_contender(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--encoder: ")) from None
    return name


def add(commands: argparse._SubParsersAction) -> None:
    from agents.executors import EXECUTORS
    from agents.grid import TRACKS, contenders

    b = commands.add_parser(
        "benchmark", help="agents on a grid of environments, encoders, seeds and a track",
        description="Run every (env, encoder, seed) of the grid on the rl track (each "
                    "environment's recipe: agents/hyperparams.py RECIPES) or the bc track "
                    "(behaviour cloning from scripted demonstrations) into OUT; finished runs "
                    "are skipped and an interrupted one resumes. OUT/results.csv has a row "
                    "per run; gqn-rl report OUT writes the report.")
    b.add_argument("--env", nargs="+", required=True, help="gymnasium ids")
    b.add_argument("--encoder", nargs="+", required=True, type=_contender_name,
                   metavar="KIND", help=f"some of: {', '.join(contenders())}, or "
                                       "perfect-encoder-r2-R (its target blurred to R² R)")
    b.add_argument("--seeds", type=positive_int, required=True,
                   help="seeds 0..N-1 (K..K+N-1 with --first-seed K)")
    b.add_argument("--first-seed", type=non_negative_int, default=0, metavar="K",
                   help="the first seed, to run a grid's seeds in pieces (default 0)")
    b.add_argument("--track", choices=TRACKS, default="rl")
    b.add_argument("--out", type=Path, required=True, help="benchmark directory")
    b.add_argument("--steps", type=positive_int,
                   help="RL steps per run (default: each environment's recipe budget)")
    b.add_argument("--demos", type=positive_int, nargs="+",
                   help="demonstration counts of the bc track (default 10 50 200)")
    b.add_argument("--workers", type=positive_int,
                   help="runs at once, one torch thread each: local processes (default 1; at "
                        "most the cores), or Ray tasks (default: every run, as the cluster's "
                        "CPUs allow)")
    b.add_argument("--extend", action="store_true",
                   help="continue the runs of a grid made with a smaller budget to this one "
                        "(without it, a grid whose runs have another budget is refused)")
    b.add_argument("--eval-every", type=positive_int,
                   help="RL steps between evaluations (default: a tenth of the budget)")
    b.add_argument("--eval-episodes", type=positive_int, default=20,
                   help="episodes per periodic RL evaluation (default 20)")
    b.add_argument("--final-episodes", type=positive_int,
                   help="episodes of the final RL evaluation and of the references "
                        "(default: --eval-episodes)")
    b.add_argument("--checkpoint", type=Path,
                   help="GQN checkpoint of the gqn-* encoders (default: the shipped one)")
    b.add_argument("--hyperparams", nargs="+", type=key_value, metavar="KEY=VALUE",
                   help="override settings of agents/hyperparams.py in every RL run")
    b.add_argument("--drop-buffers", action="store_true",
                   help="delete a SAC run's replay buffer once it has finished (0.8-1.5 GB a "
                        "run on ArmReach-v1; kept by default so that a raised --steps "
                        "continues the run instead of training it again)")
    b.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: --workers processes here (default); ray: one task per run on "
                        "a Ray cluster (pip install -e '.[cluster]'); OUT must then be on "
                        "storage every node shares")
    b.add_argument("--address", help="with --executor ray: the cluster's address, e.g. "
                                     "127.0.0.1:6379 (default: start a local one)")
    b.add_argument("--address-timeout", type=float, metavar="SECONDS",
                   help="seconds to wait for --address to answer (default 30)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(run=_benchmark)
    r = commands.add_parser(
        "report", help="the benchmark's report.md and PNGs",
        description="Normalised scores (random 0, state oracle 100), IQM with stratified-"
                    "bootstrap CIs and probability of improvement over pixels-aug (rliable), "
                    "sample-efficiency curves, steps and wall time to 50% and 80% of the "
                    "oracle's score, camera shift: OUT/report.md.")
    r.add_argument("out", type=Path, metavar="DIR", help="directory of gqn-rl benchmark")
    r.add_argument("--publish", type=Path, metavar="DEST",
                   help="also copy the report, results.csv, PNGs and each finished run's "
                        "light records (result.json, eval/evaluations.npz, wall.json) to DEST: "
                        "a copy of DEST resumes with gqn-rl benchmark --out on a fresh machine")
    r.add_argument("--pages", type=Path, metavar="FOLDER",
                   help="also write FOLDER/<environment>.md for each environment of the grid "
                        "(e.g. docs/results/ArmReach-v1.md): how the grid ran and its tables, "
                        "linking into DEST (or DIR)")
    r.add_argument("--machine", help="with --pages: what the grid ran on, for its pages (the "
                                     "run records do not say)")
    r.add_argument("--grid-command", metavar="COMMAND",
                   help="with --pages: the grid's gqn-rl benchmark command, as run (default: "
                        "one made from its run records, which do not hold --hyperparams)")
    r.set_defaults(run=_report)
