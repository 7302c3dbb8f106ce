"""The probe's data: its configuration, the scenes it reads (with their targets, from each
scene family's own declaration) and per-view representations."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from envs.scenes import FAMILIES
from gqn import GQN
from gqn.data import SceneDataset
from gqn.seeding import derive_rng, derive_seed
from gqn.viewpoint import pose_to_viewpoint
from gqn_rl.probe.readouts import bootstrap_r2, r2_score


@dataclass(frozen=True)
class ProbeConfig:
    """What ``gqn-rl probe`` measures and on how much data."""

    scenes: int = 1000
    """Scenes of the probed split (all of them when it has fewer): the state readouts' test
    scenes, and the scenes of every other measurement."""
    readout_scenes: int = 3000
    """Scenes of the dataset's train split the state readouts and the ceilings learn from,
    ``readout_val_fraction`` of them held out (all of them when it has fewer). Without a train
    split, or when the probed split is the train split, they learn from the probed scenes,
    split into fit, validation and test parts."""
    readout_val_fraction: float = 0.05
    """Fraction of the train scenes held out to choose ridge's alpha and stop the networks."""
    fit_fraction: float = 0.6
    """Fraction of the probed scenes the readouts are fitted on without a train split (and
    the context count always)."""
    val_fraction: float = 0.2
    """Fraction of the probed scenes that chooses ridge's alpha and stops the networks
    without a train split; the rest is scored."""
    views_per_scene: int | None = None
    """Views of each scene used as one-view samples, in learning and in scoring (None: all);
    the K-view readouts take ``views_per_scene / K`` (rounded up) random K-view sums of each."""
    context_views: int = 5
    """K of the K-view state probe and of the surprise (at most views - 1)."""
    mlp: bool = True
    """Fit MLP probes besides ridge (on raw pixels only when the readouts learn from the
    probed scenes: on a train split's images the supervised CNN is the pixels' reading)."""
    cnn: bool = True
    """Fit the two ceilings: a CNN, and the GQN's own representation network, each supervised
    end to end on the targets from one view."""
    ceiling_epochs: int = 200
    """Most epochs of each ceiling; they stop earlier once ``ceiling_patience`` epochs pass
    without a better validation loss (their curves are reported)."""
    ceiling_patience: int = 10
    """Epochs without improvement after which a ceiling stops."""
    prediction_scenes: int = 200
    """Test scenes of the prediction-error and surprise measurements (at most)."""
    embedding_scenes: int = 10
    """Scenes in the 2-D embedding."""
    resamples: int = 1000
    """Bootstrap resamples of the test scenes behind each R²'s 95% interval (0: none)."""
    targets: tuple[str, ...] | None = None
    """The state targets read (None: every one the scene family gives); ``gqn-rl curve``
    reads the task's two."""
    fresh: bool = True
    """Probe the same architecture freshly initialised beside the checkpoint (the control);
    ``gqn-rl curve`` leaves it out: it is the same at every snapshot."""
    seed: int = 0
    """Seed of the split, the fresh encoder, the readouts and the latent samples."""

    def for_views(self, views: int) -> ProbeConfig:
        """This config as it is measured on scenes of ``views`` views: ``views_per_scene``
        at most ``views`` (all of them for None) and ``context_views`` at most ``views - 1``."""
        chosen = views if self.views_per_scene is None else min(self.views_per_scene, views)
        return dataclasses.replace(self, views_per_scene=chosen,
                                   context_views=max(1, min(self.context_views, views - 1)))

    def __post_init__(self) -> None:
        for name in ("scenes", "readout_scenes", "views_per_scene", "context_views",
                     "prediction_scenes", "embedding_scenes", "ceiling_epochs",
                     "ceiling_patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"ProbeConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.resamples < 0:
            raise ValueError(f"ProbeConfig.resamples must be >= 0, got {self.resamples}")
        if not (0 < self.fit_fraction and 0 < self.val_fraction
                and self.fit_fraction + self.val_fraction < 1):
            raise ValueError("ProbeConfig.fit_fraction and val_fraction must be positive and "
                             f"sum to less than 1, got {self.fit_fraction}, {self.val_fraction}")
        if self.targets is not None:
            object.__setattr__(self, "targets", tuple(self.targets))  # any sequence given
            if not self.targets:
                raise ValueError("ProbeConfig.targets: name at least one target, or None")
        if not 0 < self.readout_val_fraction < 1:
            raise ValueError("ProbeConfig.readout_val_fraction must be in (0, 1), got "
                             f"{self.readout_val_fraction}")


def state_targets(truth: dict[str, Any]) -> dict[str, np.ndarray]:
    """The probe targets of one scene's truth (as the dataset stores it), by name: what its
    scene family (``truth["family"]``) says a view could show
    (:meth:`envs.scenes.SceneFamily.probe_targets`)."""
    family = str(truth.get("family", ""))
    if family not in FAMILIES:
        raise ValueError(f"no probe targets for scene family {family!r} (truth field 'family'; "
                         f"known: {sorted(FAMILIES)})")
    return FAMILIES[family].probe_targets(truth)


@dataclass
class Scenes:
    """Scenes in memory and their split into parts (``fit``, ``val`` and, for the probed
    scenes, ``test``)."""

    images: np.ndarray
    """uint8 ``[N, V, H, W, 3]``."""
    viewpoints: np.ndarray
    """float32 ``[N, V, 7]``."""
    targets: dict[str, np.ndarray] | None
    """Per target ``[N, T]``; None when the dataset has no truth."""
    parts: dict[str, np.ndarray]
    """Scene indices of each part."""

    def target_matrix(self) -> np.ndarray:
        """Every target side by side, ``[N, sum of T]``, in the order of ``targets``."""
        return np.concatenate(list(self.targets.values()), axis=1)

    def target_columns(self) -> dict[str, slice]:
        """Each target's columns in :meth:`target_matrix`."""
        ends = np.cumsum([t.shape[1] for t in self.targets.values()])
        return {name: slice(int(end - t.shape[1]), int(end))
                for (name, t), end in zip(self.targets.items(), ends, strict=True)}


def _read(dataset: SceneDataset, n: int, wanted: tuple[str, ...] | None = None) -> Scenes:
    """The first ``n`` scenes of ``dataset``, without parts; their state targets ``wanted``
    (None: all)."""
    if dataset.views < 2:
        raise ValueError(f"{dataset.path}: probing needs at least 2 views per scene")
    images, poses = zip(*(dataset.scene(i) for i in range(n)), strict=True)
    truths = [dataset.truth(i) for i in range(n)]
    targets = None
    if all(t is not None for t in truths):
        per_scene = [state_targets(t) for t in truths]
        unknown = sorted(set(wanted or ()) - set(per_scene[0]))
        if unknown:
            raise ValueError(f"ProbeConfig.targets: {dataset.path}'s scenes have no {unknown}; "
                             f"their targets are {list(per_scene[0])}")
        targets = {k: np.stack([s[k] for s in per_scene]).astype(np.float32)
                   for k in per_scene[0] if wanted is None or k in wanted}
    viewpoints = pose_to_viewpoint(torch.as_tensor(np.stack(poses))).numpy()
    return Scenes(np.stack(images), viewpoints.astype(np.float32), targets, {})


def load_scenes(dataset: SceneDataset, config: ProbeConfig) -> Scenes:
    """``config.scenes`` scenes of ``dataset`` (the probed split), split by scene into fit,
    validation and test parts."""
    if config.scenes < 10:
        raise ValueError(f"--scenes {config.scenes}: probing needs at least 10 scenes")
    n = min(config.scenes, len(dataset))
    if n < 10:
        raise ValueError(f"{dataset.path}: the {dataset.split} split has {len(dataset)} scenes; "
                         "probing needs at least 10")
    if n < config.scenes:
        print(f"probing all {n} scenes of {dataset.path}'s {dataset.split} split "
              f"({config.scenes} asked)", file=sys.stderr)
    scenes = _read(dataset, n, config.targets)
    order = derive_rng(config.seed, "probe-split").permutation(n)
    n_fit = max(1, round(config.fit_fraction * n))
    n_val = max(1, round(config.val_fraction * n))
    scenes.parts = {"fit": order[:n_fit], "val": order[n_fit:n_fit + n_val],
                    "test": order[n_fit + n_val:]}
    return scenes


PARTS = ("fit", "val", "test")
"""The readouts' parts: they learn from ``fit``, choose or stop on ``val``, are scored on
``test``."""


@dataclass
class ReadoutData:
    """What the state readouts and the ceilings learn from (the ``fit`` and ``val`` parts of
    ``learn``) and are scored on (the scenes ``test_rows`` of ``test``), and how many views of
    each scene they take."""

    learn: Scenes
    """Scenes with ``fit`` and ``val`` parts: the dataset's train scenes, or the probed ones."""
    test: Scenes
    """The probed scenes."""
    test_rows: np.ndarray
    """The probed scenes scored: all of them, or their ``test`` part when the readouts learn
    from their other parts."""
    views: int
    """The first ``views`` views of each scene are one-view samples, in learning and scoring."""
    learnt_from: str
    """``"train split"``, or why the readouts learn from the probed split instead."""

    @property
    def from_train(self) -> bool:
        return self.learn is not self.test

    def part(self, name: str) -> tuple[Scenes, np.ndarray]:
        """The scenes and scene indices of the part ``fit``, ``val`` or ``test``."""
        if name == "test":
            return self.test, self.test_rows
        return self.learn, self.learn.parts[name]

    def summed_samples(self, k: int) -> int:
        """Random ``k``-view sums of each scene: ``views / k`` rounded up, so that they show
        each view about once."""
        return -(-self.views // k)

    def record(self, k: int | None) -> dict[str, Any]:
        """The readouts' data, for ``probe.json``: scenes of each part, views of each, and
        with ``k`` the K-view readouts' views and samples of each scene."""
        record = {"learnt_from": self.learnt_from,
                  **{f"{p}_scenes": int(len(self.part(p)[1])) for p in PARTS},
                  "views": self.views}
        if k is not None:
            record.update(summed_views=k, summed_samples=self.summed_samples(k))
        return record

    @classmethod
    def own(cls, scenes: Scenes, config: ProbeConfig, why: str) -> ReadoutData:
        """Readouts that learn from the probed scenes' fit and validation parts and are
        scored on their test part (``why``: the reason, for the report)."""
        return cls(scenes, scenes, scenes.parts["test"], _views(scenes, config), why)


def _views(scenes: Scenes, config: ProbeConfig) -> int:
    views = scenes.images.shape[1]
    return views if config.views_per_scene is None else min(config.views_per_scene, views)


def readout_data(dataset: SceneDataset, scenes: Scenes, config: ProbeConfig) -> ReadoutData:
    """The readouts learn from ``config.readout_scenes`` scenes of the dataset's train split
    (every view, or ``views_per_scene``; ``readout_val_fraction`` of the scenes held out) and
    are scored on every probed scene; without a usable train split, or when the probed split
    is the train split, from the probed scenes (``scenes``) as :meth:`ReadoutData.own`."""
    if dataset.split == "train":
        return ReadoutData.own(scenes, config, "the probed split is the train split")
    try:
        train = SceneDataset(dataset.path, "train")
    except ValueError as error:
        return ReadoutData.own(scenes, config, f"the dataset has no usable train split: {error}")
    if len(train) < 10:
        return ReadoutData.own(scenes, config,
                               f"the train split has {len(train)} scenes, fewer than 10")
    if train.truth(0) is None:
        return ReadoutData.own(scenes, config, "the train split has no ground truth")
    n = min(config.readout_scenes, len(train))
    if n < config.readout_scenes:
        print(f"the readouts learn from all {n} scenes of {dataset.path}'s train split "
              f"({config.readout_scenes} asked)", file=sys.stderr)
    learn = _read(train, n, config.targets)
    if learn.targets is None:
        return ReadoutData.own(scenes, config, "the train split has no ground truth")
    if scenes.targets is not None and (
            {k: v.shape[1] for k, v in learn.targets.items()}
            != {k: v.shape[1] for k, v in scenes.targets.items()}):
        raise ValueError(f"{dataset.path}: the train split's targets differ from the "
                         f"{dataset.split} split's")
    order = derive_rng(config.seed, "readout-split").permutation(n)
    n_val = max(1, round(config.readout_val_fraction * n))
    learn.parts = {"fit": order[n_val:], "val": order[:n_val]}
    return ReadoutData(learn, scenes, np.arange(len(scenes.images)), _views(scenes, config),
                       "train split")


@torch.no_grad()
def per_view_representations(model: GQN, images: np.ndarray, viewpoints: np.ndarray,
                             batch: int = 256) -> np.ndarray:
    """``r`` of every view alone: uint8 ``[N, V, H, W, 3]``, ``[N, V, 7]`` -> float32
    ``[N, V, D]`` (``D = r_dim h w``). ``r`` of several views is the sum of theirs."""
    x = torch.as_tensor(images.reshape(-1, *images.shape[2:])).permute(0, 3, 1, 2)
    v = torch.as_tensor(viewpoints.reshape(-1, viewpoints.shape[-1]))
    out = None  # filled in place: no second copy of a large [N V, D]
    for i in range(0, len(x), batch):
        r = model.represent(x[i:i + batch, None], v[i:i + batch, None]).flatten(1).numpy()
        if out is None:
            out = np.empty((len(x), r.shape[1]), np.float32)
        out[i:i + len(r)] = r
    return out.reshape(*images.shape[:2], -1)


def one_view(features: np.ndarray, rows: np.ndarray, views: int) -> np.ndarray:
    """Samples ``[len(rows) views, D]`` of the first ``views`` views of the scenes ``rows``."""
    return features[rows, :views].reshape(-1, features.shape[-1])


Source = Callable[[str], tuple[np.ndarray, np.ndarray]]
"""The samples of one part (``fit``, ``val`` or ``test``) of the readouts' data: features
``[n, D]`` and every target side by side ``[n, T]`` (:meth:`Scenes.target_matrix`), each
scene's samples together, in the part's scene order."""


def one_view_source(data: ReadoutData,
                    features: Callable[[Scenes, np.ndarray, int], np.ndarray]) -> Source:
    """One sample per view: ``features(scenes, rows, views)`` gives ``[n, views, D]`` for the
    first ``views`` views of the scenes ``rows`` of ``scenes``."""
    def samples(part: str) -> tuple[np.ndarray, np.ndarray]:
        scenes, rows = data.part(part)
        x = features(scenes, rows, data.views)
        return (x.reshape(len(rows) * data.views, -1),
                np.repeat(scenes.target_matrix()[rows], data.views, axis=0))

    return samples


def summed_views_source(data: ReadoutData, per_view: Callable[[Scenes], np.ndarray],
                        views: int, seed: int) -> Source:
    """:meth:`ReadoutData.summed_samples` samples per scene, each the sum of the scene's
    per-view features (``per_view(scenes)``, ``[N, V, D]``) over ``views`` of its V views
    drawn at random (fixed by the seed and the part)."""
    per_scene = data.summed_samples(views)

    def samples(part: str) -> tuple[np.ndarray, np.ndarray]:
        scenes, rows = data.part(part)
        features = per_view(scenes)
        rng = derive_rng(seed, f"summed-views-{part}")
        subsets = rng.random((len(rows), per_scene, features.shape[1])).argsort(-1)[
            ..., :views]                                               # [n, samples, views]
        x = np.empty((len(rows), per_scene, features.shape[-1]), np.float32)
        for i in range(0, len(rows), 256):   # [256, samples, views, D] at a time
            chunk = slice(i, i + 256)
            x[chunk] = features[rows[chunk, None, None], subsets[chunk]].sum(2)
        return (x.reshape(len(rows) * per_scene, -1),
                np.repeat(scenes.target_matrix()[rows], per_scene, axis=0))

    return samples


Intervals = dict[str, dict[str, tuple[float, float]]]
"""95% bootstrap interval per target and readout, beside the R² of the same keys."""


def r2_with_interval(predicted: np.ndarray, truth: np.ndarray, n_scenes: int,
                      config: ProbeConfig) -> tuple[float, tuple[float, float] | None]:
    """R² of test predictions ``[n_scenes m, T]`` (m samples per scene, in scene order) and
    its interval over resampled scenes."""
    score = r2_score(predicted, truth)
    if not config.resamples:
        return score, None
    groups = np.repeat(np.arange(n_scenes), len(truth) // n_scenes)
    return score, bootstrap_r2(predicted, truth, groups, derive_seed(config.seed, "bootstrap"),
                               config.resamples)


def fresh_like(model: GQN, seed: int) -> GQN:
    """A freshly initialised GQN of ``model``'s config (the random-encoder control), seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "fresh-encoder"))
        return GQN(model.config).eval()


