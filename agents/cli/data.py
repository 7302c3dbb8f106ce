"""``gqn-rl data``: render, import and mask multi-view datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.cli.args import add_image_size, non_negative_int, positive_int


def _data_generate(args: argparse.Namespace) -> int:
    import imageio.v3 as iio

    from gqn_rl.datagen import GenerateConfig, contact_sheet, default_workers, generate

    config = GenerateConfig(scene=args.scene, scenes=args.scenes, test_scenes=args.test_scenes,
                            views=args.views, size=args.image_size, seed=args.seed,
                            shard_size=args.shard_size)
    out = generate(config, args.out, workers=args.workers or default_workers(),
                   progress=not args.no_progress)
    sheet = out / "contact_sheet.png"
    iio.imwrite(sheet, contact_sheet(out))
    print(f"{config.scenes} train and {config.split_scenes('test')} test scenes of "
          f"{config.scene} in {out}; contact sheet {sheet}")
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from gqn.data.deepmind import import_deepmind

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


def add(commands: argparse._SubParsersAction) -> None:
    from envs.scenes import FAMILIES

    p = commands.add_parser("data", help="render or import multi-view datasets")
    which = p.add_subparsers(dest="data_command", required=True)
    g = which.add_parser(
        "generate", help="render a dataset of a scene family",
        description="Render train and test splits with MuJoCo; deterministic for a seed "
                    "whatever --workers, and resumable: run again to finish an interrupted run.")
    g.add_argument("--scene", required=True, choices=sorted(FAMILIES), help="scene family")
    g.add_argument("--out", type=Path, required=True, help="dataset directory")
    g.add_argument("--scenes", type=positive_int, required=True, help="train scenes")
    g.add_argument("--test-scenes", type=non_negative_int,
                   help="test scenes (default: scenes / 10)")
    g.add_argument("--views", type=positive_int, help="views per scene (default: family's)")
    add_image_size(g)
    g.add_argument("--workers", type=positive_int, help="processes (default: all cores)")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seed (default 0)")
    g.add_argument("--shard-size", type=positive_int, default=100, help="scenes per shard")
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
    i.add_argument("--workers", type=positive_int, default=1, help="processes")
    i.add_argument("--scenes-per-shard", type=positive_int,
                   help="split each file into shards of this many scenes")
    i.add_argument("--no-progress", action="store_true", help="no progress bar")
    i.set_defaults(run=_data_import)
    m = which.add_parser(
        "masks", help="mask the objects' pixels of a rendered dataset",
        description="Render every view again with the scene's objects hidden and write "
                    "DIR/<split>.masks.npy (bool [N, V, H, W]): what gqn-rl pretrain "
                    "--object-weight weighs. A split whose masks are whole is skipped.")
    m.add_argument("data", type=Path, metavar="DIR", help="a dataset of gqn-rl data generate")
    m.add_argument("--workers", type=positive_int, help="processes (default: all cores)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(run=_data_masks)


# -- bench ---------------------------------------------------------------------------------
