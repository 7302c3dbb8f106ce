"""``gqn-rl pretrain``, ``export``, ``probe``, ``curve`` and ``ceiling``: a GQN trained and
judged."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from agents.cli.args import non_negative_int, positive_float, positive_int, with_given
from gqn import PRESETS
from gqn.config import PRECISIONS, REPRESENTATIONS
from gqn_rl.probe.ceilings import HEADS


def _pretrain(args: argparse.Namespace) -> int:
    from gqn.train import pretrain, starting_configs

    model_config, train_config = starting_configs(args.out, args.preset, args.resume,
                                                  args.start_from)
    model_config = with_given(model_config, representation=args.representation,
                              z_dim=args.z_dim)
    train_config = with_given(train_config, steps=args.steps, batch_size=args.batch_size,
                               seed=args.seed, max_context=args.max_context,
                               checkpoint_every=args.checkpoint_every,
                               snapshot_at=None if args.snapshot_at is None
                               else tuple(args.snapshot_at),
                               precision=args.precision, kl_weight=args.kl_weight,
                               sigma_start=args.sigma_start, sigma_end=args.sigma_end,
                               object_weight=args.object_weight,
                               prior_weight=args.prior_weight, geco_target=args.geco_target)
    probe = None
    if not args.no_probe:
        from gqn.data import SceneDataset
        from gqn_rl.probe import QuickProbe

        test_set = SceneDataset(args.data, "test")
        try:
            probe = QuickProbe(test_set)
        except ValueError as error:  # e.g. too few test scenes: train without probes
            if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone speaks
                print(f"no quick probes while pretraining: {error}", file=sys.stderr)
    result = pretrain(args.data, args.out, model_config, train_config, resume=args.resume,
                      until=args.until, device=args.device, progress=not args.no_progress,
                      probe=probe, start_from=args.start_from)
    if result.rank != 0:
        return 0
    last = result.history[-1] if result.history else {}
    print(f"step {result.step}: checkpoint {result.checkpoint}"
          + (f", loss {last['loss']:.2f} nats, kl {last['kl']:.2f}, mse {last['mse']:.4f}"
             if last else " (nothing left to train)"))
    return 0


def _export(args: argparse.Namespace) -> int:
    from gqn.checkpoint import export_weights

    export_weights(args.checkpoint, args.out, scene=args.scene)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from gqn.data import SceneDataset
    from gqn_rl.probe import REPORT_FILE, ProbeConfig, run_probe

    config = with_given(ProbeConfig(), scenes=args.scenes, seed=args.seed,
                         views_per_scene=args.views_per_scene,
                         readout_scenes=args.readout_scenes,
                         targets=tuple(args.targets) if args.targets else None)
    if args.views_per_scene is not None:  # probe.json records what was measured
        views = SceneDataset(args.data, args.split).views
        if args.views_per_scene > views:
            raise ValueError(f"--views-per-scene {args.views_per_scene}: {args.data} has "
                             f"{views} views per scene")
    config = dataclasses.replace(config, mlp=not args.no_mlp, cnn=not args.no_cnn,
                                 fresh=not args.no_fresh)
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


def _curve(args: argparse.Namespace) -> int:
    from gqn_rl.probe.curve import (
        FRACTION,
        PROBE,
        interval_text,
        probe_curve,
        snapshots,
        steps_text,
    )

    config = with_given(PROBE, scenes=args.scenes, seed=args.seed,
                        readout_scenes=args.readout_scenes)
    curve = probe_curve(snapshots(args.run_dir), args.data, args.out, config, args.ceiling,
                        args.step_seconds, args.fit_from, progress=not args.no_progress)
    for target, fit in curve.get("fits", {}).items():
        print(f"{target}: {FRACTION:.0%} of the ceiling at {steps_text(fit['steps'])} steps "
              f"({interval_text(fit['steps_90'])})")
    print(f"curve: {args.out / 'curve.md'}")
    return 0


def _ceiling(args: argparse.Namespace) -> int:
    if args.save_checkpoint is not None:
        return _ceiling_checkpoint(args)
    given = [f"--{name}" for name in ("checkpoint", "epochs", "precision", "head")
             if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{' '.join(given)}: only with --save-checkpoint")
    from gqn_rl.probe import REPORT_FILE, ProbeConfig, run_ceilings

    config = with_given(ProbeConfig(), scenes=args.scenes, seed=args.seed,
                         ceiling_patience=args.patience)
    results = run_ceilings(args.data, args.out, args.representation, PRESETS[args.preset].model,
                           config, split=args.split, progress=not args.no_progress,
                           views=args.views)
    for target, row in results["state"].items():
        names = (k.removeprefix("supervised ").removesuffix(" 1 view") for k in row)
        print(f"{target:<18} " + "  ".join(f"{name} {v:.2f}"
                                            for name, v in zip(names, row.values(), strict=True)))
    print(f"report {args.out / REPORT_FILE}")
    return 0


def _ceiling_checkpoint(args: argparse.Namespace) -> int:
    """``--save-checkpoint``: the ceiling of one architecture, saved as a GQN checkpoint."""
    from gqn.data import SceneDataset
    from gqn_rl.ceiling import CARD_FILE, CeilingConfig, make_ceiling_checkpoint
    from gqn_rl.encoders import open_checkpoint, shipped_checkpoint

    family = SceneDataset(args.data, "train").meta.get("scene")
    path = args.checkpoint or shipped_checkpoint(family)
    base = None if path is None else open_checkpoint(path).check_family(family, str(args.data))
    if base is not None:
        architecture = base.config
    else:
        chosen = args.representation[0] if len(args.representation) == 1 else None
        if chosen is None:
            raise ValueError(f"no shipped checkpoint for {family} scenes: name the architecture "
                             "with --checkpoint or one --representation")
        architecture = dataclasses.replace(PRESETS[args.preset].model, representation=chosen)
    config = with_given(CeilingConfig(), views=args.views, scenes=args.scenes, seed=args.seed,
                        patience=args.patience, epochs=args.epochs, precision=args.precision,
                        head=args.head)
    ceiling = make_ceiling_checkpoint(args.data, args.out, args.save_checkpoint, base,
                                      architecture, config, command=args.command_line)
    for target, r2 in ceiling.record["r2"].items():
        print(f"{target:<18} R² {r2:.3f}")
    print(f"wrote {args.save_checkpoint} after {ceiling.record['epochs']} epochs; record and "
          f"card in {args.out} ({CARD_FILE})")
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
    p.add_argument("--scenes", type=positive_int,
                   help="scenes used (default 1000; with --save-checkpoint: every train scene)")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--patience", type=positive_int,
                   help="epochs without improvement before a fit stops (default 10; with "
                        "--save-checkpoint 4, after which the learning rate drops tenfold, "
                        "twice, before it stops)")
    p.add_argument("--views", type=positive_int, default=1,
                   help="also supervise each network from this many views, its r summed as "
                        "the GQN sums it (default 1: one view only); with --save-checkpoint "
                        "the checkpoint's network learns from sums of this many views")
    p.add_argument("--save-checkpoint", type=Path, metavar="PATH",
                   help="instead: train the architecture of --checkpoint (default: the data "
                        "family's shipped one) on every view of every train scene until its "
                        "validation loss stops improving, and save it as a GQN checkpoint "
                        "(the benchmark's gqn-ceiling); OUT gets its record, curve and a "
                        "draft model card")
    p.add_argument("--checkpoint", type=Path,
                   help="with --save-checkpoint: the GQN whose architecture (and generator) "
                        "the ceiling keeps")
    p.add_argument("--epochs", type=positive_int,
                   help="with --save-checkpoint: most epochs (default 100)")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="with --save-checkpoint: arithmetic of the training (default fp32)")
    p.add_argument("--head", choices=HEADS,
                   help="with --save-checkpoint: the readout it learns through (default mlp; "
                        "linear: the truth linear in r, for readers that learn from few scenes)")
    p.add_argument("--seed", type=non_negative_int, help="seed (default 0)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (--save-checkpoint prints a line an epoch either way)")
    p.set_defaults(run=_ceiling)


def _add_curve(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "curve", help="probe every snapshot of a pretraining run: R² against steps",
        description="Probe each RUN/snapshots/step-N.pt on one dataset (as gqn-rl probe "
                    "--no-cnn, reading the arm's target and hand, without the fresh "
                    "control, into OUT/step-N; done snapshots are skipped, so a curve "
                    "resumes) and write OUT/curve.json, curve.md and curve.png; with "
                    "--ceiling, fit R² against log-steps and say how many steps reach 90%% of "
                    "the ceiling.")
    p.add_argument("--run", type=Path, required=True, dest="run_dir",
                   help="pretraining run directory holding snapshots/step-N.pt")
    p.add_argument("--data", type=Path, required=True,
                   help="dataset probed (one no snapshot trained on)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--ceiling", type=Path,
                   help="a gqn-rl ceiling --save-checkpoint checkpoint: its test R² is the line")
    p.add_argument("--step-seconds", type=positive_float,
                   help="seconds a training step takes on one thread (gqn-rl speed "
                        "train-step): CPU-hours on the figure")
    p.add_argument("--fit-from", type=non_negative_int, default=0,
                   help="fit on snapshots from this step on (default: all)")
    p.add_argument("--scenes", type=positive_int, help="scenes probed (default 1000)")
    p.add_argument("--readout-scenes", type=positive_int,
                   help="train-split scenes the readouts learn from (default 3000)")
    p.add_argument("--seed", type=non_negative_int, help="seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_curve)


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
    p.add_argument("--scenes", type=positive_int,
                   help="scenes probed: the readouts' test scenes (default 1000)")
    p.add_argument("--readout-scenes", type=positive_int,
                   help="train-split scenes the state readouts and ceilings learn from, 5%% "
                        "held out (default 3000; without a train split they learn from the "
                        "probed scenes, split 60/20/20)")
    p.add_argument("--views-per-scene", type=positive_int,
                   help="views of each scene used as one-view samples, learning and scoring "
                        "(default: all)")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--seed", type=non_negative_int, help="seed (default 0)")
    p.add_argument("--no-mlp", action="store_true", help="ridge probes only")
    p.add_argument("--no-cnn", action="store_true",
                   help="no ceilings (supervised CNN and supervised architecture)")
    p.add_argument("--targets", nargs="+", metavar="TARGET",
                   help="state targets read, e.g. target_position hand_position (default: "
                        "every one the scene family gives)")
    p.add_argument("--no-fresh", action="store_true",
                   help="without the freshly initialised control")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_probe)


def _add_pretrain(commands: argparse._SubParsersAction) -> None:
    from envs.scenes import FAMILIES

    p = commands.add_parser("pretrain", help="train a GQN on a dataset directory",
                            description="Train a GQN; --resume continues a run exactly.")
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="model and training preset (default cpu-small; on --resume the run's)")
    p.add_argument("--representation", choices=REPRESENTATIONS,
                   help="representation network (default: the preset's)")
    p.add_argument("--steps", type=positive_int, help="total optimiser steps of the run")
    p.add_argument("--batch-size", type=positive_int, help="scenes per step")
    p.add_argument("--max-context", type=positive_int, help="largest context size per batch")
    p.add_argument("--seed", type=non_negative_int, help="seed of weights, batches and latents")
    p.add_argument("--checkpoint-every", type=positive_int,
                   help="steps between checkpoints (default: the preset's; may change on "
                        "--resume)")
    p.add_argument("--until", type=positive_int,
                   help="stop after this many total steps (schedules still follow --steps)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    p.add_argument("--snapshot-at", type=positive_int, nargs="+", metavar="STEP",
                   help="keep a copy of the checkpoint at these steps as "
                        "RUN/snapshots/step-N.pt (e.g. 1000 2000 4000 8000, for gqn-rl curve)")
    p.add_argument("--kl-weight", type=float,
                   help="weight of the KL term in the training loss (default: the preset's, 1)")
    p.add_argument("--object-weight", type=float,
                   help="weight of the objects' pixels in the likelihood (default 1; needs "
                        "gqn-rl data masks DATA)")
    p.add_argument("--sigma-start", type=positive_float,
                   help="pixel standard deviation at step 0 (default: the preset's); equal "
                        "to --sigma-end holds it from the start")
    p.add_argument("--sigma-end", type=float,
                   help="final pixel standard deviation (default: the preset's)")
    p.add_argument("--from", type=Path, dest="start_from", metavar="CHECKPOINT",
                   help="a new run that continues CHECKPOINT (weights, optimiser state, step; "
                        "its configs unless a preset or flags say otherwise): an objective "
                        "lever against a plain continuation; later pieces --resume")
    p.add_argument("--prior-weight", type=float,
                   help="weight of a second likelihood term with latents from the prior, so "
                        "that what is rendered must come from r (default 0)")
    p.add_argument("--geco-target", type=positive_float,
                   help="GECO: hold the per-pixel squared error to this target, the pixel "
                        "precision as its Lagrange multiplier (replaces the sigma schedule)")
    p.add_argument("--z-dim", type=positive_int,
                   help="latent channels (default: the preset's); with --from, the weights "
                        "whose shape changes start afresh")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="forward-pass arithmetic (default: the preset's, fp32, on every "
                        "device); bf16 needs a CPU with AVX512-BF16 or AMX, or a GPU; fp16 a "
                        "GPU; auto: bf16 where the device computes it natively, else fp32")
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
    e.add_argument("--out", type=Path, required=True,
                   help="file to write (--checkpoint itself when that holds weights only)")
    e.add_argument("--scene", choices=sorted(FAMILIES),
                   help="record the scene family the GQN was pretrained on (a checkpoint "
                        "that does not record it is refused wherever a family is known)")
    e.set_defaults(run=_export)


# -- data --------------------------------------------------------------------------------


def add(commands: argparse._SubParsersAction) -> None:
    """Declare the group's commands."""
    _add_pretrain(commands)
    _add_probe(commands)
    _add_curve(commands)
    _add_ceiling(commands)
