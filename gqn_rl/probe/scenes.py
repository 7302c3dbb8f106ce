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
    """Test-split scenes probed (all of them when the split has fewer)."""
    fit_fraction: float = 0.6
    """Fraction of the scenes the readouts are fitted on."""
    val_fraction: float = 0.2
    """Fraction used to choose ridge's alpha and stop the MLP and CNN; the rest is scored."""
    views_per_scene: int = 4
    """Views of each scene used as one-view samples."""
    context_views: int = 5
    """K of the K-view state probe and of the surprise (at most views - 1)."""
    mlp: bool = True
    """Fit MLP probes besides ridge."""
    cnn: bool = True
    """Fit the two ceilings: a CNN, and the GQN's own representation network, each supervised
    end to end on the targets from one view."""
    ceiling_scenes: int = 3000
    """Scenes of the dataset's train split the ceilings learn from (when the probed split is
    another): a ceiling needs many distinct scenes."""
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
    seed: int = 0
    """Seed of the split, the fresh encoder, the readouts and the latent samples."""

    def for_views(self, views: int) -> ProbeConfig:
        """This config as it is measured on scenes of ``views`` views: ``views_per_scene``
        at most ``views`` and ``context_views`` at most ``views - 1``."""
        return dataclasses.replace(self, views_per_scene=min(self.views_per_scene, views),
                                   context_views=max(1, min(self.context_views, views - 1)))

    def __post_init__(self) -> None:
        for name in ("scenes", "views_per_scene", "context_views", "prediction_scenes",
                     "embedding_scenes", "ceiling_scenes", "ceiling_epochs",
                     "ceiling_patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProbeConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.resamples < 0:
            raise ValueError(f"ProbeConfig.resamples must be >= 0, got {self.resamples}")
        if not (0 < self.fit_fraction and 0 < self.val_fraction
                and self.fit_fraction + self.val_fraction < 1):
            raise ValueError("ProbeConfig.fit_fraction and val_fraction must be positive and "
                             f"sum to less than 1, got {self.fit_fraction}, {self.val_fraction}")


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
    """The probed scenes in memory and their split into fit, validation and test parts."""

    images: np.ndarray
    """uint8 ``[N, V, H, W, 3]``."""
    viewpoints: np.ndarray
    """float32 ``[N, V, 7]``."""
    targets: dict[str, np.ndarray] | None
    """Per target ``[N, T]``; None when the dataset has no truth."""
    parts: dict[str, np.ndarray]
    """Scene indices of ``fit``, ``val`` and ``test``."""


def load_scenes(dataset: SceneDataset, config: ProbeConfig) -> Scenes:
    if config.scenes < 10:
        raise ValueError(f"--scenes {config.scenes}: probing needs at least 10 scenes")
    n = min(config.scenes, len(dataset))
    if n < 10:
        raise ValueError(f"{dataset.path}: the {dataset.split} split has {len(dataset)} scenes; "
                         "probing needs at least 10")
    if n < config.scenes:
        print(f"probing all {n} scenes of {dataset.path}'s {dataset.split} split "
              f"({config.scenes} asked)", file=sys.stderr)
    if dataset.views < 2:
        raise ValueError(f"{dataset.path}: probing needs at least 2 views per scene")
    images, poses = zip(*(dataset.scene(i) for i in range(n)), strict=True)
    truths = [dataset.truth(i) for i in range(n)]
    targets = None
    if all(t is not None for t in truths):
        per_scene = [state_targets(t) for t in truths]
        targets = {k: np.stack([s[k] for s in per_scene]).astype(np.float32)
                   for k in per_scene[0]}
    order = derive_rng(config.seed, "probe-split").permutation(n)
    n_fit = max(1, round(config.fit_fraction * n))
    n_val = max(1, round(config.val_fraction * n))
    parts = {"fit": order[:n_fit], "val": order[n_fit:n_fit + n_val],
             "test": order[n_fit + n_val:]}
    viewpoints = pose_to_viewpoint(torch.as_tensor(np.stack(poses))).numpy()
    return Scenes(np.stack(images), viewpoints.astype(np.float32), targets, parts)


@torch.no_grad()
def per_view_representations(model: GQN, images: np.ndarray, viewpoints: np.ndarray,
                             batch: int = 256) -> np.ndarray:
    """``r`` of every view alone: uint8 ``[N, V, H, W, 3]``, ``[N, V, 7]`` -> float32
    ``[N, V, D]`` (``D = r_dim h w``). ``r`` of several views is the sum of theirs."""
    x = torch.as_tensor(images.reshape(-1, *images.shape[2:])).permute(0, 3, 1, 2)
    v = torch.as_tensor(viewpoints.reshape(-1, viewpoints.shape[-1]))
    out = [model.represent(x[i:i + batch, None], v[i:i + batch, None]).flatten(1)
           for i in range(0, len(x), batch)]
    return torch.cat(out).numpy().reshape(*images.shape[:2], -1)


def one_view(features: np.ndarray, rows: np.ndarray, views: int) -> np.ndarray:
    """Samples ``[len(rows) views, D]`` of the first ``views`` views of the scenes ``rows``."""
    return features[rows, :views].reshape(-1, features.shape[-1])


Source = tuple[Callable[[np.ndarray], np.ndarray],
               Callable[[np.ndarray, np.ndarray], np.ndarray]]
"""Features of the scenes ``rows`` ``[n, D]``, and the targets ``y`` of those scenes laid out
to match (one sample per view or per scene)."""


def one_view_source(scenes: Scenes, features: Callable[[np.ndarray, int], np.ndarray],
                     config: ProbeConfig) -> Source:
    """One sample per view: ``features(rows, views)`` gives ``[n, views, D]`` for the first
    ``views_per_scene`` views of the scenes ``rows``."""
    vps = min(config.views_per_scene, scenes.images.shape[1])
    return (lambda rows: features(rows, vps).reshape(len(rows) * vps, -1),
            lambda y, rows: np.repeat(y[rows], vps, axis=0))


def summed_views_source(scenes: Scenes, features: np.ndarray, views: int,
                        config: ProbeConfig) -> Source:
    """``views_per_scene`` samples per scene, each the sum of ``features`` ``[N, V, D]`` over
    ``views`` of the scene's V views drawn at random (fixed by the seed): as many samples as
    the one-view source, so that a readout of summed ``r`` is not starved of them."""
    rng = derive_rng(config.seed, "summed-views")
    samples = min(config.views_per_scene, features.shape[1])
    subsets = np.stack([[rng.permutation(features.shape[1])[:views] for _ in range(samples)]
                        for _ in range(len(features))])               # [N, samples, views]
    return (lambda rows: features[rows[:, None, None], subsets[rows]].sum(2)
            .reshape(len(rows) * samples, -1),
            lambda y, rows: np.repeat(y[rows], samples, axis=0))


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


