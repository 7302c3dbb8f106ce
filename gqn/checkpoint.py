"""Self-describing checkpoints: config, weights, optimiser, step, RNG state, package version.

A checkpoint is a dict saved with ``torch.save`` under a temporary name and renamed into place:

``format``, ``package_version``, ``model_config`` and ``train_config`` (dicts), ``model`` and
``optimizer`` (state dicts), ``step`` (optimiser steps done), ``rng`` (torch and per-process
batch-sampler states), ``metrics`` (last logged scalars), ``data`` (the dataset it trained on).
The schedules are pure functions of ``step`` and ``train_config``, so they need no state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch

import gqn
from gqn.config import GQNConfig, TrainConfig, config_diff, config_from_dict
from gqn.data import SceneDataset
from gqn.fileio import atomic_write, check_output
from gqn.model import GQN

CHECKPOINT_FORMAT = "gqn-rl-checkpoint-v1"


def save_checkpoint(path: Path, model: GQN, optimizer: torch.optim.Optimizer, step: int,
                    train_config: TrainConfig, rng: dict[str, Any],
                    metrics: dict[str, float] | None = None,
                    data: dict[str, Any] | None = None, **records: Any) -> None:
    """Write a checkpoint atomically (a crash mid-write keeps the previous file);
    ``records``: further entries of the file (e.g. ``objective``, ``start``)."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "package_version": gqn.__version__,
        "model_config": dataclasses.asdict(model.config),
        "train_config": dataclasses.asdict(train_config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "rng": rng,
        "metrics": metrics or {},
        "data": data or {},
        **records,
    }
    _write(path, state)


def save_weights(path: Path, model_config: GQNConfig, weights: dict[str, torch.Tensor],
                 data: dict[str, Any], **records: Any) -> None:
    """Write a weights-only checkpoint (no optimiser or RNG state, step 0, the default
    training config), as :func:`export_weights` writes one, of a model assembled other than by
    pretraining; ``records``: further entries of the file (e.g. a downstream ceiling's)."""
    _write(path, {"format": CHECKPOINT_FORMAT, "package_version": gqn.__version__,
                  "model_config": dataclasses.asdict(model_config),
                  "train_config": dataclasses.asdict(TrainConfig()), "model": weights,
                  "optimizer": None, "step": 0, "rng": None, "metrics": {}, "data": data,
                  **records})


def _write(path: Path, state: dict[str, Any]) -> None:
    """``state`` saved by ``torch.save``, atomically (a crash mid-write keeps the previous
    file)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def _read(path: Path, content: bytes | None = None) -> Any:
    """``torch.load`` of ``path`` (or of its ``content``, already read); ValueError naming the
    file when it is not one."""
    try:
        source = path if content is None else io.BytesIO(content)
        return torch.load(source, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, UnicodeDecodeError, pickle.UnpicklingError, ValueError,
            AttributeError, ImportError, IndexError, KeyError) as error:
        raise ValueError(f"{path}: not a gqn-rl checkpoint (torch.load failed: "
                         f"{type(error).__name__}: {error})") from error


def check_checkpoint_path(path: Path) -> Path:
    """``path`` as a Path when a file is there; a one-line error naming it otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a checkpoint file (a run directory holds "
                         f"{path / 'checkpoint.pt'})")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path


def load_checkpoint(path: Path, model_config: GQNConfig | None = None,
                    train_config: TrainConfig | None = None,
                    content: bytes | None = None) -> dict[str, Any]:
    """Read a checkpoint (from ``content``, the file's bytes, when already read); with configs
    given, fail naming every field that differs."""
    path = check_checkpoint_path(path) if content is None else Path(path)
    state = _read(path, content)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a gqn-rl checkpoint (field 'format' is "
                         f"{state.get('format') if isinstance(state, dict) else type(state)!r},"
                         f" expected {CHECKPOINT_FORMAT!r})")
    state["model_config"] = config_from_dict(GQNConfig, state["model_config"], f"{path}")
    train = dict(state["train_config"])
    # TrainConfig.amp (autocast on a GPU whatever the precision) was removed: ``precision`` is
    # the one knob. Checkpoints written before keep loading; ``legacy_amp`` says it was on.
    state["legacy_amp"] = bool(train.pop("amp", False))
    state["train_config"] = config_from_dict(TrainConfig, train, f"{path}")
    for expected, name in ((model_config, "model_config"), (train_config, "train_config")):
        if expected is not None and state[name] != expected:
            raise ValueError(f"{path}: checkpoint {name} differs from the requested one in "
                             f"{'; '.join(config_diff(state[name], expected))} "
                             "(checkpoint != requested)")
    return state


def continue_from(path: Path, model: GQN, optimizer: torch.optim.Optimizer,
                  scene: str | None) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
    """Load checkpoint ``path`` into a new run's ``model`` and ``optimizer``: every weight
    whose shape matches (the others keep their fresh initialisation, e.g. after a smaller
    ``z_dim``), and the optimiser's state when the weights are the same set of the same
    shapes. A checkpoint pretrained on another scene family than ``scene`` (the new run's
    data) is refused. Returns its step, the record of the start (file, SHA-256, step, the
    weights initialised afresh) and its objective's state (GECO's, or None)."""
    path = check_checkpoint_path(path)
    content = path.read_bytes()
    state = load_checkpoint(path, content=content)
    trained_on = (state.get("data") or {}).get("scene")
    if None not in (trained_on, scene) and trained_on != scene:
        raise ValueError(f"--from {path} was pretrained on {trained_on} scenes; the data shows "
                         f"{scene} scenes")
    own = model.state_dict()
    fresh = sorted(k for k in own if k not in state["model"]
                   or state["model"][k].shape != own[k].shape)
    model.load_state_dict({**own, **{k: v for k, v in state["model"].items()
                                     if k in own and k not in fresh}})
    fresh_optimizer = bool(fresh) or set(own) != set(state["model"]) or not state["optimizer"]
    if not fresh_optimizer:
        optimizer.load_state_dict(state["optimizer"])
    record = {"file": path.name, "sha256": hashlib.sha256(content).hexdigest(),
              "step": state["step"], "fresh_weights": fresh, "fresh_optimizer": fresh_optimizer}
    return state["step"], record, state.get("objective")


def export_weights(src: Path, dst: Path, scene: str | None = None) -> None:
    """Write the model part of checkpoint ``src`` to ``dst``: configs, weights, step, metrics
    and the record of its data, without optimiser and RNG state (a third of the size; loads
    with :func:`load_model`, cannot be resumed) and without the data's path (a checkpoint
    names no machine). ``scene`` records the scene family it was pretrained on, for a
    checkpoint that does not say (refused where it says another). ``dst`` may be ``src``
    only when that holds weights only already."""
    src, dst = Path(src), Path(dst)
    state = load_checkpoint(src)  # validates the format and configs
    if dst.exists() and dst.resolve() == src.resolve() and state["optimizer"] is not None:
        raise ValueError(f"--out {dst} is the checkpoint being exported: write the weights to "
                         "another file (it would replace a resumable checkpoint)")
    check_output(dst, "--out", "file")
    data = {k: v for k, v in (state.get("data") or {}).items() if k != "path"}
    if scene is not None:
        if data.get("scene") not in (None, scene):
            raise ValueError(f"{src} records that it was pretrained on {data['scene']} scenes, "
                             f"not {scene}")
        data["scene"] = scene
    state.pop("legacy_amp", None)
    state.update(optimizer=None, rng=None, data=data,
                 model_config=dataclasses.asdict(state["model_config"]),
                 train_config=dataclasses.asdict(state["train_config"]))
    _write(dst, state)


def load_model(path: Path, config: GQNConfig | None = None, device: str | torch.device = "cpu"
               ) -> GQN:
    """The GQN stored in a checkpoint, in eval mode (``config``, if given, must match)."""
    return model_from_state(load_checkpoint(path, model_config=config)).to(device)


def model_from_state(state: dict[str, Any]) -> GQN:
    """A new GQN, in eval mode, with the config and weights of a loaded checkpoint, and the
    scene family it records (``GQN.scene_family``)."""
    model = GQN(state["model_config"])
    model.load_state_dict(state["model"])
    model.scene_family = (state.get("data") or {}).get("scene")
    return model.eval()


DATA_FIELDS = ("scene", "image_size", "views", "train_scenes", "test_scenes",
               "manifest_sha256")
"""What a checkpoint records of the dataset it trained on (its ``data``), in the order a
resume compares them; no path, so a checkpoint names no machine."""


def dataset_record(train_set: SceneDataset, test_set: SceneDataset) -> dict[str, Any]:
    """The ``data`` record of a checkpoint trained on these splits (:data:`DATA_FIELDS`):
    ``scene`` is the scene family (the manifest's ``meta.scene``; None when not recorded)."""
    return {"scene": train_set.meta.get("scene"), "image_size": train_set.image_size,
            "views": train_set.views, "train_scenes": len(train_set),
            "test_scenes": len(test_set), "manifest_sha256": train_set.content_sha256}


def check_same_data(recorded: dict[str, Any], current: dict[str, Any], data: Path,
                    checkpoint: Path) -> None:
    """Refuse to resume ``checkpoint`` on another dataset than it trained on, naming each
    field of :data:`DATA_FIELDS` that differs (old -> new); fields a checkpoint did not
    record (written before they were) are not compared."""
    changed = [name for name in DATA_FIELDS
               if recorded.get(name) is not None and recorded[name] != current.get(name)]
    if len(changed) > 1 and "manifest_sha256" in changed:  # it differs when others do
        changed.remove("manifest_sha256")
    if changed:
        changed = [f"{name}: the run's {recorded[name]!r}, the data's {current[name]!r}"
                   for name in changed]
        raise ValueError(f"--data {data} is not the dataset {checkpoint} trained on: "
                         f"{'; '.join(changed)} (resume with its data, or train into another "
                         "--out)")
