"""The supervised ceilings of docs/encoders.md's first table: each representation network
(at cpu-small's sizes) and the probe's CNN trained end to end from one view and its viewpoint
to the hand and target positions alone (6 outputs), on many distinct scenes.

    python docs/experiments/ceiling_hand_target.py --data data/arm32 --networks cnn spatial tower

Fit: the first ``--fit`` train scenes, 4 views each; validation (early stopping): the next
300; test: the first 300 scenes of the test split. Prints one JSON line per network.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from gqn import PRESETS
from gqn.data import SceneDataset
from gqn.viewpoint import pose_to_viewpoint
from gqn_rl.probe.readouts import fit_architecture, fit_cnn, r2_score

VIEWS = 4


def load(dataset: SceneDataset, scenes: range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images ``[n 4, H, W, 3]``, viewpoints ``[n 4, 7]`` and hand + target ``[n 4, 6]``."""
    images, viewpoints, targets = [], [], []
    for i in scenes:
        image, pose = dataset.scene(i)
        truth = dataset.truth(i)
        images.append(image[:VIEWS])
        viewpoints.append(pose_to_viewpoint(torch.as_tensor(pose[:VIEWS])).numpy())
        targets += [truth["hand_position"] + truth["target_position"]] * VIEWS
    return (np.concatenate(images), np.concatenate(viewpoints).astype(np.float32),
            np.asarray(targets, np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--networks", nargs="+", default=["cnn", "spatial", "tower", "pool"])
    parser.add_argument("--fit", type=int, default=1500, help="fit scenes")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = SceneDataset(args.data, "train"), SceneDataset(args.data, "test")
    fit, val = load(train, range(args.fit)), load(train, range(args.fit, args.fit + 300))
    scored = load(test, range(300))
    for name in args.networks:
        start = time.time()
        training = dict(epochs=args.epochs, patience=args.patience)
        readout = (fit_cnn(*fit, *val, **training) if name == "cnn" else fit_architecture(
            dataclasses.replace(PRESETS["cpu-small"].model, representation=name), *fit, *val,
            **training))
        predicted = readout.predict(*scored[:2])
        print(json.dumps({"network": name,
                          "hand": round(r2_score(predicted[:, :3], scored[2][:, :3]), 3),
                          "target": round(r2_score(predicted[:, 3:], scored[2][:, 3:]), 3),
                          "epochs": len(readout.curve), "seconds": round(time.time() - start),
                          "curve": [round(c, 3) for c in readout.curve]}), flush=True)


if __name__ == "__main__":
    main()
