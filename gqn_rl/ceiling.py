"""The downstream ceiling: a GQN whose representation network was trained supervised on its
scene family's truth, so that its ``r`` holds what this architecture could hold at best.

A frozen agent on such a checkpoint (the benchmark's ``gqn-ceiling``) scores what a perfect
pretraining of the architecture could buy it; one summing the agent's view and the context
cameras (``gqn-ceiling-cameras``) what the GQN's fusion of views adds. The network is trained
from a fresh initialisation on every view of every train scene of a dataset (5% of the scenes
held out to stop it once their loss no longer falls), with the probe's readout on top
(:mod:`gqn_rl.probe.ceilings`), and scored by R² on the dataset's test scenes.

The checkpoint keeps the rest of the base GQN (its generator and inference core no longer
match ``r``: use it as an encoder only), records its scene family, and holds under
``ceiling`` the record of its training: the validation curve, the test R² per target, the
data and the time.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gqn import GQN, GQNConfig
from gqn.checkpoint import save_weights
from gqn.data import SceneDataset
from gqn.fileio import atomic_write, check_output, write_json
from gqn.precision import autocast
from gqn.seeding import derive_rng, derive_seed
from gqn_rl.encoders import GQNCheckpoint
from gqn_rl.probe.ceilings import (
    HEADS,
    ViewSubsets,
    architecture_readout,
    fit_supervised,
    image_rows,
)
from gqn_rl.probe.fitting import seeded
from gqn_rl.probe.scenes import ProbeConfig, Scenes, load_scenes, r2_with_interval

CEILING_NAMES = {1: "ceiling.pt", 3: "ceiling-cameras.pt"}
"""Where a family's shipped ceilings live, beside its pretrained checkpoint
(``checkpoints/<family>/``), by the number of views summed into ``r``: the agent's own view,
and the agent's with the two context cameras of ``gqn-frozen-cameras``."""


@dataclasses.dataclass(frozen=True)
class CeilingConfig:
    """How a ceiling is trained (``gqn-rl ceiling --save-checkpoint``'s flags)."""

    views: int = 1
    """Views whose ``r`` is summed into one sample, as the GQN sums them: 1 the agent's own,
    3 the agent's and two context cameras' (drawn at random from the scene's views)."""
    scenes: int | None = None
    """Train-split scenes learnt from (None: all of them)."""
    test_scenes: int = 1000
    """Test-split scenes scored (all of them when the split has fewer)."""
    val_fraction: float = 0.05
    """Fraction of the train scenes held out to stop the training."""
    epochs: int = 100
    """Most epochs; training stops earlier after ``patience`` epochs without improvement."""
    patience: int = 4
    """Epochs without a lower validation loss after which the learning rate drops tenfold
    (from the best weights), or training stops once it has dropped ``lr_drops`` times."""
    lr_drops: int = 2
    """Tenfold drops of the learning rate on a plateau before training stops: a constant
    rate leaves the validation loss wandering round its floor."""
    head: str = "mlp"
    """The readout the network is supervised through (:data:`gqn_rl.probe.ceilings.HEADS`):
    ``linear`` asks for an ``r`` that holds the truth linearly, for readers that learn from
    few scenes."""
    batch_size: int = 128
    lr: float = 1e-3
    precision: str = "fp32"
    """``fp32`` or ``bf16`` (autocast; CPUs with AVX512-BF16 or AMX)."""
    seed: int = 0
    """Seed of the weights, the split and the view subsets."""

    def __post_init__(self) -> None:
        if self.lr_drops < 0:
            raise ValueError(f"ceiling lr_drops must be >= 0, got {self.lr_drops}")
        for name in ("views", "test_scenes", "epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ceiling {name} must be >= 1, got {getattr(self, name)}")
        if self.scenes is not None and self.scenes < 20:
            raise ValueError(f"ceiling scenes must be >= 20, got {self.scenes}")
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"ceiling val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.head not in HEADS:
            raise ValueError(f"ceiling head must be one of {HEADS}, got {self.head!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"ceiling precision must be fp32 or bf16, got {self.precision!r}")


@dataclasses.dataclass
class Ceiling:
    """A trained ceiling: its representation network and the record of its training."""

    representation: nn.Module
    """The supervised representation network, in eval mode."""
    record: dict[str, Any]
    """``curve`` (validation loss per epoch), ``r2`` and ``r2_interval`` per target, ``data``,
    ``config``, ``seconds`` and ``machine``."""


class _Autocast(nn.Module):
    """``module``'s forward pass under ``precision``'s autocast, its output in fp32."""

    def __init__(self, module: nn.Module, precision: str) -> None:
        super().__init__()
        self.module, self.precision = module, precision

    def forward(self, inputs: Any) -> torch.Tensor:
        with autocast("cpu", self.precision):
            return self.module(inputs).float()


def _scenes(dataset: SceneDataset, limit: int | None, val_fraction: float, seed: int) -> Scenes:
    """All views of ``limit`` scenes of ``dataset`` (all: None) with their targets, parts
    ``fit`` and ``val`` (the held-out ``val_fraction``)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    scenes = load_scenes(dataset, ProbeConfig(scenes=n, seed=seed, resamples=0))
    if scenes.targets is None:
        raise ValueError(f"{dataset.path}: the {dataset.split} split has no ground truth, so "
                         "there is nothing to supervise")
    order = derive_rng(seed, "ceiling-split").permutation(len(scenes.images))
    n_val = max(1, round(val_fraction * len(order)))
    scenes.parts = {"fit": order[n_val:], "val": order[:n_val]}
    return scenes


def _per_scene(scenes: Scenes, views: int) -> int:
    """Samples of each scene an epoch: as many as its views can fill (``V / views``, rounded
    up), so that an epoch shows every view about once whatever ``views``."""
    return -(-scenes.images.shape[1] // views)


def _samples(scenes: Scenes, rows: np.ndarray, views: int, seed: int, fixed: bool) -> Any:
    """Row-indexable model inputs of the scenes ``rows``, :func:`_per_scene` of each in scene
    order: every view alone (``views`` 1), or random ``views``-subsets of the scene's views
    (new ones at every epoch unless ``fixed``)."""
    if views == 1:
        images, viewpoints = scenes.images[rows], scenes.viewpoints[rows]
        return image_rows(images.reshape(-1, *images.shape[2:]),
                          viewpoints.reshape(-1, viewpoints.shape[-1]))
    return ViewSubsets(scenes.images, scenes.viewpoints,
                       np.repeat(rows, _per_scene(scenes, views)), views, seed, fixed)


def _per_sample(scenes: Scenes, rows: np.ndarray, views: int) -> np.ndarray:
    """Targets laid out as :func:`_samples` lays out the inputs: ``[len(rows) n, T]``."""
    return np.repeat(scenes.target_matrix()[rows], _per_scene(scenes, views), 0)


def _processor() -> str:
    """The CPU's model name (Linux), else the machine's architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def train_ceiling(data: Path | str, architecture: GQNConfig,
                  config: CeilingConfig = CeilingConfig(), family: str | None = None,
                  on_epoch: Callable[[int, float], None] | None = None,
                  resume: Path | None = None) -> Ceiling:
    """Train ``architecture``'s representation network, fresh, supervised on ``data``'s truth.

    Args:
        data: dataset directory with ``train`` and ``test`` splits holding ground truth.
        architecture: the GQN config whose representation network to train (its image size
            must be the data's).
        config: views per sample, training and scoring settings.
        family: the scene family the network is meant for (refused when the data's differs).
        on_epoch: called with (epoch, validation loss) after each epoch.
        resume: a file holding the training's state after each epoch: an interrupted
            ceiling started again with the same settings goes on from its last epoch (with
            ``views`` above 1 its random view subsets then differ from an uninterrupted
            run's; one view at a time, it ends as that run does).
    """
    train_set, test_set = SceneDataset(data, "train"), SceneDataset(data, "test")
    shown = train_set.meta.get("scene")
    if family is not None and shown is not None and shown != family:
        raise ValueError(f"{data}: holds {shown} scenes, the ceiling is for {family} scenes")
    if train_set.image_size != architecture.image_size:
        raise ValueError(f"{data}: {train_set.image_size}x{train_set.image_size} images, the "
                         f"architecture reads {architecture.image_size}x"
                         f"{architecture.image_size}")
    if config.views > train_set.views:
        raise ValueError(f"--views {config.views}: {data} has {train_set.views} views a scene")
    started = time.perf_counter()
    learn = _scenes(train_set, config.scenes, config.val_fraction, config.seed)
    test = load_scenes(test_set, ProbeConfig(scenes=min(config.test_scenes, len(test_set)),
                                             seed=config.seed))
    test.parts = {"test": np.arange(len(test.images))}
    outputs = learn.target_matrix().shape[1]
    readout = seeded(config.seed,
                     lambda: architecture_readout(architecture, outputs, config.head))
    fitted = fit_supervised(
        _Autocast(readout, config.precision),
        _samples(learn, learn.parts["fit"], config.views, config.seed, fixed=False),
        _per_sample(learn, learn.parts["fit"], config.views),
        _samples(learn, learn.parts["val"], config.views, config.seed + 1, fixed=True),
        _per_sample(learn, learn.parts["val"], config.views),
        epochs=config.epochs, patience=config.patience, batch_size=config.batch_size,
        lr=config.lr, seed=config.seed, on_epoch=on_epoch, lr_drops=config.lr_drops,
        resume=resume, settings={"config": dataclasses.asdict(config),
                                 "architecture": dataclasses.asdict(architecture),
                                 "data": str(Path(data).resolve())})
    predicted = fitted.predict(_samples(test, test.parts["test"], config.views,
                                        derive_seed(config.seed, "ceiling-test"), fixed=True))
    truth = _per_sample(test, test.parts["test"], config.views)
    r2, intervals = {}, {}
    for target, columns in test.target_columns().items():
        r2[target], intervals[target] = r2_with_interval(
            predicted[:, columns], truth[:, columns], len(test.images),
            ProbeConfig(seed=config.seed))
    representation = readout.representation.eval()
    record = {
        "config": dataclasses.asdict(config), "curve": fitted.curve,
        "epochs": len(fitted.curve), "best_epoch": int(np.argmin(fitted.curve)) + 1,
        "r2": r2, "r2_interval": intervals,
        "data": {"scene": shown, "views": train_set.views, "image_size": train_set.image_size,
                 "train_scenes": len(learn.images), "val_scenes": len(learn.parts["val"]),
                 "test_scenes": len(test.images), "seed": train_set.meta.get("seed")},
        "seconds": time.perf_counter() - started,
        "machine": f"{_processor()}, {torch.get_num_threads()} torch thread(s)",
    }
    return Ceiling(representation, record)


def _without_denormals(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` with its subnormal entries set to zero. Weight decay drives the weights of
    channels the supervision leaves unused into the subnormal range, and a CPU computes with
    subnormals tens of times slower (checkpoints/arm_near/CEILING.md)."""
    if not tensor.is_floating_point():
        return tensor
    return torch.where(tensor.abs() < torch.finfo(tensor.dtype).tiny, 0.0, tensor)


def save_ceiling(path: Path | str, ceiling: Ceiling, base: GQNCheckpoint | None,
                 architecture: GQNConfig, seed: int = 0) -> None:
    """Write a weights-only GQN checkpoint (as ``gqn-rl export`` writes) holding ``ceiling``'s
    representation network; the rest of the GQN is ``base``'s (or a fresh one's, seeded).
    Saved beside its base (the same file in the same folder, as under ``checkpoints/``), it
    holds the representation network alone and names the base by its SHA-256, a tenth of the
    file for ``tower``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--save-checkpoint {path} is a directory: name the file to write")
    representation = {f"representation.{k}": _without_denormals(v)
                      for k, v in ceiling.representation.state_dict().items()}
    beside = base is not None and (path.parent / base.path.name).resolve() == base.path
    if beside:
        weights = representation
    else:
        if base is not None:
            model = base.new_model()
        else:
            with torch.random.fork_rng():
                torch.manual_seed(derive_seed(seed, "ceiling-base"))
                model = GQN(architecture)
        weights = {**model.state_dict(), **representation}
    save_weights(path, architecture, weights, {"scene": ceiling.record["data"]["scene"]},
                 base={"file": base.path.name, "sha256": base.sha256} if beside else None,
                 ceiling=ceiling.record)


RECORD_FILE, CURVE_FILE, CARD_FILE = "ceiling.json", "ceiling_curve.png", "CEILING.md"
"""The files of ``--out``: the record, the curve, and a draft card (``CEILING.md``, as it ships
beside a family's pretrained GQN and its ``MODEL_CARD.md``)."""
RESUME_FILE = "ceiling-state.pt"
"""In ``--out`` while a ceiling trains: its state after the last epoch, to resume from."""


def make_ceiling_checkpoint(data: Path | str, out: Path | str, save: Path | str,
                            base: GQNCheckpoint | None, architecture: GQNConfig,
                            config: CeilingConfig = CeilingConfig(), command: str = ""
                            ) -> Ceiling:
    """``gqn-rl ceiling --save-checkpoint``: train a ceiling of ``architecture`` (``base``'s
    when given) on ``data``, write it to ``save`` and its record, curve and a draft model
    card to ``out``, a line for each epoch to stdout. Started again after an interruption,
    it goes on from its last epoch (:data:`RESUME_FILE`)."""
    out = check_output(Path(out))
    save = check_output(Path(save), "--save-checkpoint", "file")
    family = None if base is None else base.family

    def report(epoch: int, loss: float) -> None:
        print(f"epoch {epoch}: validation loss {loss:.4f} ({time.strftime('%H:%M:%S')})",
              flush=True)

    out.mkdir(parents=True, exist_ok=True)
    resume = out / RESUME_FILE
    if resume.exists():
        print(f"resuming from {resume}", flush=True)
    ceiling = train_ceiling(data, architecture, config, family, on_epoch=report, resume=resume)
    ceiling.record.update(  # the base by name and digest: a checkpoint names no machine
        command=command, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        base=None if base is None else {"file": base.path.name, "sha256": base.sha256})
    save_ceiling(save, ceiling, base, architecture, config.seed)
    write_json(out / RECORD_FILE, ceiling.record)
    _plot_curve(ceiling.record["curve"], out / CURVE_FILE)
    card = model_card(ceiling.record, save, architecture)
    atomic_write(out / CARD_FILE, lambda f: f.write(card.encode()))
    resume.unlink()
    return ceiling


def _plot_curve(curve: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3)
    axis.set(xlabel="epoch", ylabel="validation loss (standardised MSE)",
             title="supervised ceiling: validation curve")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _base_words(base: dict[str, str] | str | None) -> str:
    """The base GQN of a ceiling's record, in words."""
    if isinstance(base, dict):
        return f"`{base['file']}`, SHA-256 `{base['sha256']}`"
    return f"`{base}`" if base else "a fresh GQN of the architecture"


def model_card(record: dict[str, Any], path: Path, architecture: GQNConfig) -> str:
    """A model card for a ceiling checkpoint: what it is, the exact command, data, epochs,
    time, machine and test R² per target with its interval."""
    data, config = record["data"], record["config"]
    views = config["views"]
    rows = [f"| {t} | {r2:.3f} | [{lo:.3f}, {hi:.3f}] |"
            for t, r2 in record["r2"].items()
            for lo, hi in [record["r2_interval"].get(t) or (float("nan"), float("nan"))]]
    return "\n".join([
        f"# `{path.name}`: the downstream ceiling of `{architecture.representation}` on "
        f"`{data['scene']}` ({views} view{'s' if views > 1 else ''})", "",
        "A GQN whose representation network was trained supervised on the scene family's "
        f"truth ({', '.join(t.replace('_', ' ') for t in record['r2'])}), from a fresh "
        "initialisation: what a perfect "
        "pretraining of this architecture could put into `r`. Use it as a frozen encoder "
        "only (the benchmark's `gqn-ceiling` kinds); its generator is the base GQN's and does "
        "not match `r`.", "",
        f"- **Command**: `{record.get('command') or 'gqn-rl ceiling ... --save-checkpoint'}`",
        f"- **Base**: {_base_words(record.get('base'))} (architecture and the rest of the GQN)",
        f"- **Model**: `{architecture.representation}`, r_dim {architecture.r_dim}, "
        f"{architecture.image_size}x{architecture.image_size} images; `r` summed over "
        f"{views} view{'s' if views > 1 else ''} a sample; learnt through "
        f"{'a linear readout' if config.get('head') == 'linear' else 'a two-layer MLP readout'}"
        " (not kept)",
        f"- **Data**: {data['train_scenes']} train scenes ({data['val_scenes']} held out for "
        f"early stopping) x {data['views']} views, dataset seed {data['seed']}; scored on "
        f"{data['test_scenes']} test scenes, every view",
        f"- **Training**: Adam {config['lr']}, batch {config['batch_size']}, "
        f"{config['precision']}; {record['epochs']} epochs, best at {record['best_epoch']} "
        f"(patience {config['patience']}, learning rate / 10 on a plateau "
        f"{config.get('lr_drops', 0)} times); {record['seconds'] / 60:.1f} minutes on "
        f"{record['machine']}; {record.get('date', '')}",
        f"- **Curve**: {', '.join(f'{v:.4f}' for v in record['curve'])}", "",
        "| target | test R² | 95% interval |", "| --- | ---: | --- |", *rows, ""])
