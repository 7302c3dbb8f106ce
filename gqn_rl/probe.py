"""``gqn-rl probe``: what a GQN's scene representation holds, each figure next to baselines
measured in the same run (DESIGN, tier 1 of judging a representation).

On scenes of a dataset's test split (split by scene into fit, validation and test parts):

- **State probes**: ridge and MLP readouts from ``r`` of one view and of K views to the
  family's ground truth (:func:`state_targets`), R² on the test scenes; baselines: the same
  architecture freshly initialised, raw pixels with the viewpoint, and a CNN supervised on the
  same images (the ceiling).
- **Prediction error** of a held-out view against the number of context views, next to
  copying the nearest context view, on the whole image and on the objects' pixels
  (:mod:`gqn_rl.foreground`; datasets rendered by ``gqn-rl data generate``).
- **Surprise**: KL(posterior || prior) of a view given its own scene's ``r`` and another's.
- **Context count**: a linear classifier of how many views were summed into ``r``.
- **Embedding**: per-view ``r`` of a few scenes in 2-D (PCA), with the silhouette by scene.

``run_probe`` writes ``probe.json``, ``report.md`` and PNGs; :func:`probe` returns the
figures as a dict.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from envs.scenes import FAMILIES
from gqn import GQN, GQNConfig
from gqn.checkpoint import load_model
from gqn.data import SceneDataset
from gqn.fileio import atomic_write
from gqn.seeding import derive_rng, derive_seed
from gqn.viewpoint import pose_to_viewpoint
from gqn_rl.foreground import foreground_masks
from gqn_rl.readouts import (
    bootstrap_r2,
    fit_architecture,
    fit_cnn,
    fit_linear_classifier,
    fit_mlp,
    fit_ridge,
    pca_2d,
    r2_score,
    silhouette_score,
)

PROBE_FILE, CEILING_FILE, REPORT_FILE = "probe.json", "ceiling.json", "report.md"


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

    def __post_init__(self) -> None:
        for name in ("scenes", "views_per_scene", "context_views", "prediction_scenes",
                     "embedding_scenes", "ceiling_epochs", "ceiling_patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProbeConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.resamples < 0:
            raise ValueError(f"ProbeConfig.resamples must be >= 0, got {self.resamples}")
        if not (0 < self.fit_fraction and 0 < self.val_fraction
                and self.fit_fraction + self.val_fraction < 1):
            raise ValueError("ProbeConfig.fit_fraction and val_fraction must be positive and "
                             f"sum to less than 1, got {self.fit_fraction}, {self.val_fraction}")


# -- ground truth ------------------------------------------------------------------------

def state_targets(truth: dict[str, Any]) -> dict[str, np.ndarray]:
    """The probe targets of one scene's truth (as the dataset stores it), by name: what its
    scene family (``truth["family"]``) says a view could show
    (:meth:`envs.scenes.SceneFamily.probe_targets`)."""
    family = str(truth.get("family", ""))
    if family not in FAMILIES:
        raise ValueError(f"no probe targets for scene family {family!r} (truth field 'family'; "
                         f"known: {sorted(FAMILIES)})")
    return FAMILIES[family].probe_targets(truth)


# -- the measurements ---------------------------------------------------------------------

@dataclass
class _Scenes:
    """The probed scenes in memory and their split into fit, validation and test parts."""

    images: np.ndarray
    """uint8 ``[N, V, H, W, 3]``."""
    viewpoints: np.ndarray
    """float32 ``[N, V, 7]``."""
    targets: dict[str, np.ndarray] | None
    """Per target ``[N, T]``; None when the dataset has no truth."""
    parts: dict[str, np.ndarray]
    """Scene indices of ``fit``, ``val`` and ``test``."""


def _load_scenes(dataset: SceneDataset, config: ProbeConfig) -> _Scenes:
    n = min(config.scenes, len(dataset))
    if n < 10:
        raise ValueError(f"{dataset.path}: the {dataset.split} split has {len(dataset)} scenes; "
                         "probing needs at least 10")
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
    return _Scenes(np.stack(images), viewpoints.astype(np.float32), targets, parts)


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


def _one_view(features: np.ndarray, rows: np.ndarray, views: int) -> np.ndarray:
    """Samples ``[len(rows) views, D]`` of the first ``views`` views of the scenes ``rows``."""
    return features[rows, :views].reshape(-1, features.shape[-1])


Source = tuple[Callable[[np.ndarray], np.ndarray],
               Callable[[np.ndarray, np.ndarray], np.ndarray]]
"""Features of the scenes ``rows`` ``[n, D]``, and the targets ``y`` of those scenes laid out
to match (one sample per view or per scene)."""


def _one_view_source(scenes: _Scenes, features: Callable[[np.ndarray, int], np.ndarray],
                     config: ProbeConfig) -> Source:
    """One sample per view: ``features(rows, views)`` gives ``[n, views, D]`` for the first
    ``views_per_scene`` views of the scenes ``rows``."""
    vps = min(config.views_per_scene, scenes.images.shape[1])
    return (lambda rows: features(rows, vps).reshape(len(rows) * vps, -1),
            lambda y, rows: np.repeat(y[rows], vps, axis=0))


Intervals = dict[str, dict[str, tuple[float, float]]]
"""95% bootstrap interval per target and readout, beside the R² of the same keys."""


def _r2_with_interval(predicted: np.ndarray, truth: np.ndarray, n_scenes: int,
                      config: ProbeConfig) -> tuple[float, tuple[float, float] | None]:
    """R² of test predictions ``[n_scenes m, T]`` (m samples per scene, in scene order) and
    its interval over resampled scenes."""
    score = r2_score(predicted, truth)
    if not config.resamples:
        return score, None
    groups = np.repeat(np.arange(n_scenes), len(truth) // n_scenes)
    return score, bootstrap_r2(predicted, truth, groups, derive_seed(config.seed, "bootstrap"),
                               config.resamples)


def _score(scenes: _Scenes, sources: dict[str, Source], readouts: dict[str, Any],
           config: ProbeConfig, bar: tqdm | None = None
           ) -> tuple[dict[str, dict[str, float]], Intervals]:
    """R² on the test scenes, per target, of every readout fitted on every feature source,
    ``{target: {"<source>, <readout>": R²}}``, and their intervals."""
    fit, val, test = (scenes.parts[p] for p in ("fit", "val", "test"))
    results: dict[str, dict[str, float]] = {}
    intervals: Intervals = {}
    for target, y in scenes.targets.items():
        results[target], intervals[target] = {}, {}
        for source, (features, targets) in sources.items():
            x_fit, x_val, x_test = features(fit), features(val), features(test)
            y_fit, y_val, y_test = targets(y, fit), targets(y, val), targets(y, test)
            for readout, fit_readout in readouts.items():
                predict = fit_readout(x_fit, y_fit, x_val, y_val)
                key = f"{source}, {readout}"
                results[target][key], interval = _r2_with_interval(
                    predict(x_test), y_test, len(test), config)
                if interval:
                    intervals[target][key] = interval
            if bar is not None:
                bar.update(1)
    return results, intervals


def _state_probes(scenes: _Scenes, r: dict[str, np.ndarray], architecture: GQNConfig,
                  config: ProbeConfig, bar: tqdm
                  ) -> tuple[dict[str, dict[str, float]], Intervals, dict[str, list[float]]]:
    """R² per target of every readout and feature source, and of the two ceilings, with their
    intervals and the ceilings' validation curves."""
    k = min(config.context_views, scenes.images.shape[1] - 1)

    def pixels(rows: np.ndarray, views: int) -> np.ndarray:   # [n, views, H W 3 + 7]
        images = scenes.images[rows, :views].reshape(len(rows), views, -1) / 255.0
        return np.concatenate([images, scenes.viewpoints[rows, :views]], axis=-1)

    sources = {f"{name} 1 view": _one_view_source(
        scenes, lambda rows, views, f=features: f[rows, :views], config)
        for name, features in r.items()}
    sources.update({f"{name} {k} views": (lambda rows, f=features: f[rows, :k].sum(1),
                                          lambda y, rows: y[rows])
                    for name, features in r.items()})
    sources["pixels 1 view"] = _one_view_source(scenes, pixels, config)
    readouts: dict[str, Any] = {"ridge": fit_ridge}
    if config.mlp:
        readouts["mlp"] = lambda *data: fit_mlp(*data, seed=config.seed)
    results, intervals = _score(scenes, sources, readouts, config, bar)
    curves = _ceilings(scenes, {CNN_CEILING: None, ARCHITECTURE_CEILING: architecture}, config,
                       results, intervals, bar) if config.cnn else {}
    bar.update(1)
    return results, intervals, curves


CNN_CEILING, ARCHITECTURE_CEILING = "supervised CNN 1 view", "supervised architecture 1 view"
CEILINGS = {CNN_CEILING: "the pixels' ceiling: a CNN supervised on the targets",
            ARCHITECTURE_CEILING: "the architecture's ceiling: the GQN's representation "
            "network, fresh, supervised end to end with the MLP readout"}
"""The state probes' two ceilings, by column name."""


def _ceilings(scenes: _Scenes, architectures: dict[str, GQNConfig | None], config: ProbeConfig,
              results: dict[str, dict[str, float]], intervals: Intervals,
              bar: tqdm | None = None) -> dict[str, list[float]]:
    """Fit one ceiling per entry of ``architectures`` (column name -> the GQN config whose
    representation network to supervise, or None for the CNN) on every view of the fit
    scenes, all targets at once, each until its validation loss stops improving; add their
    test R² per target to ``results`` and ``intervals``; return their validation curves."""
    views = scenes.images.shape[1]
    names = list(scenes.targets)
    widths = np.cumsum([0] + [scenes.targets[t].shape[1] for t in names])
    data = {p: (scenes.images[rows].reshape(-1, *scenes.images.shape[2:]),
                _one_view(scenes.viewpoints, rows, views),
                np.repeat(np.concatenate([scenes.targets[t] for t in names], 1)[rows], views, 0))
            for p, rows in scenes.parts.items()}
    training = dict(epochs=config.ceiling_epochs, patience=config.ceiling_patience,
                    seed=config.seed)
    curves = {}
    for key, architecture in architectures.items():
        readout = (fit_cnn(*data["fit"], *data["val"], **training) if architecture is None else
                   fit_architecture(architecture, *data["fit"], *data["val"], **training))
        predicted = readout.predict(*data["test"][:2])
        curves[key] = readout.curve
        for i, target in enumerate(names):
            columns = slice(widths[i], widths[i + 1])
            results.setdefault(target, {})[key], interval = _r2_with_interval(
                predicted[:, columns], data["test"][2][:, columns], len(scenes.parts["test"]),
                config)
            if interval:
                intervals.setdefault(target, {})[key] = interval
        if bar is not None:
            bar.update(1)
    return curves


def architecture_ceilings(dataset: SceneDataset, architectures: dict[str, GQNConfig],
                          config: ProbeConfig = ProbeConfig(), progress: bool = True
                          ) -> dict[str, Any]:
    """The ceilings alone, for choosing a representation network before pretraining one
    (``gqn-rl ceiling``): the CNN and each of ``architectures`` (name -> config) supervised
    on ``dataset``'s scenes. Keys: ``config``, ``scenes``, ``state`` (target -> column -> R²),
    ``state_interval``, ``ceiling_curves``."""
    scenes = _load_scenes(dataset, config)
    if scenes.targets is None:
        raise ValueError(f"{dataset.path}: the {dataset.split} split has no ground truth, so "
                         "there is nothing to supervise")
    columns: dict[str, GQNConfig | None] = {CNN_CEILING: None}
    columns.update({f"supervised {name} 1 view": architecture
                    for name, architecture in architectures.items()})
    results: dict[str, dict[str, float]] = {}
    intervals: Intervals = {}
    with tqdm(total=len(columns), desc="ceilings", disable=not progress, unit="fit") as bar:
        curves = _ceilings(scenes, columns, config, results, intervals, bar)
    return {"config": dataclasses.asdict(config),
            "scenes": {p: int(len(rows)) for p, rows in scenes.parts.items()},
            "architectures": {name: dataclasses.asdict(c) for name, c in architectures.items()},
            "state": results, "state_interval": intervals, "ceiling_curves": curves}


def _nearest_view(viewpoints: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index ``[N]`` of the context viewpoint ``[N, K, 7]`` nearest to the query ``[N, 7]``."""
    return np.linalg.norm(viewpoints - query[:, None], axis=-1).argmin(1)


def _squared_error(predicted: torch.Tensor, truth: torch.Tensor,
                   mask: torch.Tensor | None = None) -> float:
    """Mean squared error per pixel and channel of ``[N, 3, H, W]`` images, over the pixels
    of ``mask`` ``[N, H, W]`` when given."""
    error = (predicted - truth).pow(2).mean(1)                           # [N, H, W]
    if mask is None:
        return float(error.mean())
    return float((error * mask).sum() / mask.sum().clamp(min=1))


@torch.no_grad()
def _prediction_and_surprise(model: GQN, scenes: _Scenes, rows: np.ndarray,
                             masks: np.ndarray | None, config: ProbeConfig
                             ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Query error against K (the last view is the query) next to the nearest-view copy, on
    the whole image and on the object pixels of the query (``masks`` ``[N, H, W]``, if
    known), and the surprise of the query given its own scene's K views and another scene's."""
    images = torch.as_tensor(scenes.images[rows]).permute(0, 1, 4, 2, 3)  # [N, V, 3, H, W]
    viewpoints = torch.as_tensor(scenes.viewpoints[rows])
    query_x, query_v = images[:, -1], viewpoints[:, -1]
    truth = query_x.float() / 255
    views = images.shape[1]
    mask = None if masks is None else torch.as_tensor(masks, dtype=torch.float32)
    error: dict[str, list[float]] = {"K": [], "gqn": [], "nearest_view": [],
                                     "gqn_objects": [], "nearest_view_objects": []}
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(config.seed, "prediction"))
        for k in range(1, views):
            predicted = model.generate(images[:, :k], viewpoints[:, :k], query_v)
            nearest = _nearest_view(scenes.viewpoints[rows, :k], scenes.viewpoints[rows, -1])
            copied = images[torch.arange(len(rows)), torch.as_tensor(nearest)].float() / 255
            error["K"].append(k)
            error["gqn"].append(_squared_error(predicted, truth))
            error["nearest_view"].append(_squared_error(copied, truth))
            if mask is not None:
                error["gqn_objects"].append(_squared_error(predicted, truth, mask))
                error["nearest_view_objects"].append(_squared_error(copied, truth, mask))
        k = min(config.context_views, views - 1)
        r_own = model.represent(images[:, :k], viewpoints[:, :k])
        r_other = torch.roll(r_own, 1, dims=0)  # another scene's representation
        own = model.infer(r_own, query_x, query_v).kl.sum(1).mean()
        other = model.infer(r_other, query_x, query_v).kl.sum(1).mean()
        contexts = [torch.zeros_like(r_own)] + [
            model.represent(images[:, :j], viewpoints[:, :j]) for j in range(1, views)]
        by_views = [float(model.infer(r, query_x, query_v).kl.sum(1).mean()) for r in contexts]
    surprise = {"K": k, "own_scene_nats": float(own), "other_scene_nats": float(other),
                "ratio": float(other / own) if own > 0 else float("inf"),
                "by_views_nats": by_views}
    return error, surprise


def _context_count(r: dict[str, np.ndarray], scenes: _Scenes, config: ProbeConfig
                   ) -> dict[str, float]:
    """Accuracy of a linear classifier of how many (random) views were summed into ``r``."""
    views = scenes.images.shape[1]
    counts = np.arange(1, views)
    rng = derive_rng(config.seed, "context-count")
    subsets = {i: [rng.permutation(views)[:c] for c in counts]
               for i in range(len(scenes.images))}
    out = {"chance": 1.0 / len(counts), "counts": int(len(counts))}
    for name, features in r.items():
        def samples(rows: np.ndarray, f: np.ndarray = features) -> np.ndarray:
            return np.stack([f[i, s].sum(0) for i in rows for s in subsets[i]])

        labels = {p: np.tile(counts - 1, len(rows)) for p, rows in scenes.parts.items()}
        predict = fit_linear_classifier(samples(scenes.parts["fit"]), labels["fit"],
                                        samples(scenes.parts["val"]), labels["val"],
                                        len(counts), seed=config.seed)
        predicted = predict(samples(scenes.parts["test"]))
        out[f"{name}_accuracy"] = float((predicted == labels["test"]).mean())
        out[f"{name}_within_one"] = float((np.abs(predicted - labels["test"]) <= 1).mean())
    return out


def _embedding(r: dict[str, np.ndarray], scenes: _Scenes, config: ProbeConfig
               ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Silhouette by scene of per-view ``r`` and its 2-D PCA, for a few test scenes."""
    rows = scenes.parts["test"][:config.embedding_scenes]
    labels = np.repeat(np.arange(len(rows)), scenes.images.shape[1])
    scores, points = {}, {}
    for name, features in r.items():
        x = features[rows].reshape(len(labels), -1)
        scores[f"{name}_silhouette"] = silhouette_score(x, labels)
        points[name] = pca_2d(x)
    return scores, points


def fresh_like(model: GQN, seed: int) -> GQN:
    """A freshly initialised GQN of ``model``'s config (the random-encoder control), seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "fresh-encoder"))
        return GQN(model.config).eval()


def probe(model: GQN, dataset: SceneDataset, config: ProbeConfig = ProbeConfig(),
          progress: bool = True) -> dict[str, Any]:
    """Every measurement on ``dataset`` (a split), with its baselines; a JSON-able dict.

    Keys: ``config``, ``scenes`` (fit / val / test counts), ``state`` (target -> readout ->
    R², or None without truth), ``state_interval`` (the same keys -> 95% bootstrap interval
    over test scenes), ``prediction_error`` (K, gqn, nearest_view), ``surprise``,
    ``context_count``, ``embedding``; ``_points`` holds the 2-D embeddings for the plots.
    """
    if dataset.image_size != model.config.image_size:
        raise ValueError(f"{dataset.path}: images are {dataset.image_size}x{dataset.image_size}, "
                         f"the GQN reads {model.config.image_size}x{model.config.image_size}")
    model = model.eval()
    scenes = _load_scenes(dataset, config)
    targets = 0 if scenes.targets is None else len(scenes.targets)
    sources = 5  # gqn and fresh, each of 1 and K views; pixels
    bar = tqdm(total=2 + sources * targets + 2 * config.cnn + 4, desc="probe",
               disable=not progress, unit="stage")
    r = {}
    for name, encoder in (("gqn", model), ("fresh", fresh_like(model, config.seed))):
        r[name] = per_view_representations(encoder, scenes.images, scenes.viewpoints)
        bar.update(1)
    state, intervals, curves = (None, None, {}) if scenes.targets is None else _state_probes(
        scenes, r, model.config, config, bar)
    rows = scenes.parts["test"][:config.prediction_scenes]
    masks = foreground_masks(dataset, rows)
    error, surprise = _prediction_and_surprise(
        model, scenes, rows, None if masks is None else masks[:, -1], config)
    bar.update(1)
    count = _context_count(r, scenes, config)
    bar.update(1)
    embedding, points = _embedding(r, scenes, config)
    bar.update(1)
    bar.close()
    return {"config": dataclasses.asdict(config),
            "scenes": {p: int(len(rows)) for p, rows in scenes.parts.items()},
            "state": state, "state_interval": intervals, "ceiling_curves": curves,
            "prediction_error": error,
            "surprise": surprise,
            "context_count": count, "embedding": embedding, "_points": points}


class QuickProbe:
    """The cheap figures of :func:`probe`, flat, for logging while pretraining
    (``pretrain(..., probe=QuickProbe(dataset))``): ridge R² per target from one view's
    ``r``, held-out view error with 1 and ``V - 1`` context views (whole image and objects)
    and the surprise given the scene's own views and another's. The scenes and masks are
    loaded once; a call takes seconds and leaves the global random streams untouched."""

    def __init__(self, dataset: SceneDataset, config: ProbeConfig = ProbeConfig(
            scenes=200, mlp=False, cnn=False, prediction_scenes=50, resamples=0)) -> None:
        self.config = config
        self.scenes = _load_scenes(dataset, config)
        self.rows = self.scenes.parts["test"][:config.prediction_scenes]
        masks = foreground_masks(dataset, self.rows)
        self.masks = None if masks is None else masks[:, -1]

    def __call__(self, model: GQN) -> dict[str, float]:
        scenes, config = self.scenes, self.config
        figures: dict[str, float] = {}
        if scenes.targets is not None:
            r = per_view_representations(model, scenes.images, scenes.viewpoints)
            source = _one_view_source(scenes, lambda rows, views: r[rows, :views], config)
            scored, _ = _score(scenes, {"r": source}, {"ridge": fit_ridge}, config)
            figures.update({f"r2_{target}": row["r, ridge"] for target, row in scored.items()})
        error, surprise = _prediction_and_surprise(model, scenes, self.rows, self.masks, config)
        for name, values in error.items():
            if name != "K" and values:
                figures[f"mse_{name}_K1"] = values[0]
                figures[f"mse_{name}_K{error['K'][-1]}"] = values[-1]
        figures["surprise_own_scene"] = surprise["own_scene_nats"]
        figures["surprise_other_scene"] = surprise["other_scene_nats"]
        return figures


# -- files: probe.json, report.md and plots -----------------------------------------------

def run_probe(checkpoint: Path, data: Path, out: Path, config: ProbeConfig = ProbeConfig(),
              split: str = "test", progress: bool = True) -> dict[str, Any]:
    """Probe the GQN in ``checkpoint`` on ``data``'s ``split``; writes ``out/probe.json``,
    ``out/report.md`` and PNGs; returns the figures."""
    check_output_directory(Path(out))
    model = load_model(Path(checkpoint))
    dataset = SceneDataset(data, split)
    start = time.perf_counter()
    results = probe(model, dataset, config, progress=progress)
    points = results.pop("_points")
    results.update(checkpoint=str(checkpoint), data=str(data), split=split,
                   model_config=dataclasses.asdict(model.config),
                   seconds=round(time.perf_counter() - start, 1),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / PROBE_FILE,
                 lambda f: f.write(json.dumps(results, indent=2).encode() + b"\n"))
    _plot(results, points, out)
    atomic_write(out / REPORT_FILE, lambda f: f.write(report_markdown(results).encode()))
    return results


def run_ceilings(data: Path, out: Path, representations: list[str], base: GQNConfig,
                 config: ProbeConfig = ProbeConfig(), split: str = "test",
                 progress: bool = True) -> dict[str, Any]:
    """``gqn-rl ceiling``: :func:`architecture_ceilings` of the ``representations`` at
    ``base``'s sizes (and the data's image size) on ``data``'s ``split``; writes
    ``out/ceiling.json``, ``out/report.md`` and PNGs; returns the figures."""
    out = Path(out)
    check_output_directory(out)
    dataset = SceneDataset(data, split)
    architectures = {name: dataclasses.replace(base, representation=name,
                                               image_size=dataset.image_size)
                     for name in representations}
    start = time.perf_counter()
    results = architecture_ceilings(dataset, architectures, config, progress)
    results.update(data=str(data), split=split, seconds=round(time.perf_counter() - start, 1),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / CEILING_FILE,
                 lambda f: f.write(json.dumps(results, indent=2).encode() + b"\n"))
    _plot(results, {}, out)
    lines = [f"# Ceilings of representation networks on `{data}` ({split} split)", "",
             f"Scenes fit / val / test {results['scenes']['fit']} / {results['scenes']['val']} "
             f"/ {results['scenes']['test']}; seed {config.seed}; {results['date']}, "
             f"{results['seconds']} s. Each column is a network supervised end to end from one "
             "view (and its viewpoint) to the scene's targets: what any GQN built on it could "
             "at best put into `r`.", "", *_state_lines(results)]
    atomic_write(out / REPORT_FILE, lambda f: f.write("\n".join(lines).encode()))
    return results


def check_output_directory(out: Path) -> None:
    """Refuse, before any work, an output path that is a file or cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: --out takes a directory")
    parent = out if out.exists() else next(p for p in out.parents if p.exists())
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{parent} is not writable: cannot write the results under {out}")


def _plot(results: dict[str, Any], points: dict[str, np.ndarray], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(figure: Any, name: str) -> None:
        figure.tight_layout()
        atomic_write(out / name, lambda f: figure.savefig(f, format="png"))
        plt.close(figure)

    if "prediction_error" in results:
        error = results["prediction_error"]
        figure, axes = plt.subplots(figsize=(5, 3.2), dpi=100)
        axes.plot(error["K"], error["gqn"], marker="o", label="GQN (prior sample)")
        axes.plot(error["K"], error["nearest_view"], marker="s", label="nearest context view")
        if error["gqn_objects"]:
            axes.plot(error["K"], error["gqn_objects"], marker="o", ls="--", label="GQN, objects")
            axes.plot(error["K"], error["nearest_view_objects"], marker="s", ls="--",
                      label="nearest view, objects")
        axes.set(xlabel="context views K", ylabel="MSE per pixel", title="held-out view error")
        axes.legend()
        save(figure, "prediction_error.png")

    if points:
        figure, panels = plt.subplots(1, len(points), figsize=(4 * len(points), 3.6), dpi=100)
        for axes, (name, xy) in zip(np.atleast_1d(panels), points.items(), strict=True):
            views = len(xy) // results["config"]["embedding_scenes"] or 1
            axes.scatter(xy[:, 0], xy[:, 1], c=np.arange(len(xy)) // views, cmap="tab10", s=14)
            axes.set(title=f"{name}: silhouette {results['embedding'][f'{name}_silhouette']:.2f}",
                     xlabel="PC 1", ylabel="PC 2")
        save(figure, "embedding.png")

    if results["state"]:
        targets = list(results["state"])
        columns = list(results["state"][targets[0]])
        figure, axes = plt.subplots(figsize=(max(6, 1.3 * len(targets)), 3.8), dpi=100)
        width = 0.8 / len(columns)
        for j, column in enumerate(columns):
            values = [max(results["state"][t].get(column, np.nan), -0.2) for t in targets]
            axes.bar(np.arange(len(targets)) + j * width, values, width, label=column)
        axes.set_xticks(np.arange(len(targets)) + 0.4 - width / 2, targets, rotation=20)
        axes.set(ylabel="R² on test scenes (clipped at -0.2)", ylim=(-0.2, 1.0))
        axes.legend(fontsize=6, ncol=2)
        save(figure, "state_probes.png")

    if results.get("ceiling_curves"):
        figure, axes = plt.subplots(figsize=(6, 3.6), dpi=100)
        for name, curve in results["ceiling_curves"].items():
            axes.plot(np.arange(1, len(curve) + 1), curve, marker=".", label=name)
        axes.set(xlabel="epoch", ylabel="validation loss (standardised MSE)",
                 title="the ceilings' training: each stops once it stops improving")
        axes.legend(fontsize=7)
        save(figure, "ceiling_curves.png")


def _state_lines(results: dict[str, Any]) -> list[str]:
    """The report's state-probe table (with intervals) and the ceilings' training."""
    columns = list(next(iter(results["state"].values())))
    lines = ["## State probes (R² on test scenes, 95% bootstrap interval over scenes)", "",
             "| target | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    intervals = results.get("state_interval") or {}

    def cell(target: str, column: str) -> str:
        low_high = intervals.get(target, {}).get(column)
        value = f"{results['state'][target].get(column, float('nan')):.2f}"
        return f"{value} [{low_high[0]:.2f}, {low_high[1]:.2f}]" if low_high else value

    lines += [f"| {t} | " + " | ".join(cell(t, c) for c in columns) + " |"
              for t in results["state"]]
    lines += ["", "![state probes](state_probes.png)", ""]
    if results.get("ceiling_curves"):
        lines += ["## Ceilings", "", "Each supervised on every view of the fit scenes (all "
                  "targets at once, standardised), stopped once its validation loss went "
                  f"{results['config']['ceiling_patience']} epochs without improving:", ""]
        other = "that representation network, fresh, supervised with the MLP readout"
        lines += [f"- `{name}` ({CEILINGS.get(name, other)}): {len(curve)} epochs, best "
                  f"validation loss {min(curve):.3f} at epoch {int(np.argmin(curve)) + 1}"
                  for name, curve in results["ceiling_curves"].items()]
        lines += ["", "![ceiling curves](ceiling_curves.png)", ""]
    return lines


def report_markdown(results: dict[str, Any]) -> str:
    """``report.md`` of a probe's figures."""
    lines = [f"# Probe of `{results.get('checkpoint', 'a GQN')}`", "",
             f"Data `{results.get('data')}` ({results.get('split')} split): scenes fit / val / "
             f"test {results['scenes']['fit']} / {results['scenes']['val']} / "
             f"{results['scenes']['test']}; seed {results['config']['seed']}; "
             f"{results.get('date', '')}, {results.get('seconds', '?')} s. `fresh` is the same "
             "architecture freshly initialised; `pixels` raw pixels with the viewpoint.", ""]
    if results["state"]:
        lines += _state_lines(results)
    else:
        lines += ["No ground truth in this dataset: no state probes.", ""]
    error = results["prediction_error"]
    lines += ["## Held-out view error against context views", "",
              "| K | " + " | ".join(str(k) for k in error["K"]) + " |",
              "| --- |" + " ---: |" * len(error["K"]),
              "| GQN | " + " | ".join(f"{e:.4f}" for e in error["gqn"]) + " |",
              "| nearest view | " + " | ".join(f"{e:.4f}" for e in error["nearest_view"]) + " |"]
    if error["gqn_objects"]:
        lines += ["| GQN, object pixels | " + " | ".join(f"{e:.4f}" for e in error["gqn_objects"])
                  + " |", "| nearest view, object pixels | "
                  + " | ".join(f"{e:.4f}" for e in error["nearest_view_objects"]) + " |"]
    else:
        lines += ["", "(No object masks: the dataset was not rendered by gqn-rl.)"]
    lines += ["", "MSE per pixel and channel of the last view of each test scene, predicted "
              "from its first K views.", "", "![prediction error](prediction_error.png)", ""]
    s = results["surprise"]
    lines += ["## Surprise", "",
              f"KL(posterior || prior) of a held-out view given {s['K']} views of its own "
              f"scene: {s['own_scene_nats']:.3f} nats; of another scene: "
              f"{s['other_scene_nats']:.3f} nats (ratio {s['ratio']:.2f}).", "",
              "Surprise of the held-out view given its scene's first K views (K = 0: against "
              "an empty representation, what `gqn-inference` reads at an episode's first "
              "step), nats:", "",
              "| K | " + " | ".join(str(k) for k in range(len(s["by_views_nats"]))) + " |",
              "| --- |" + " ---: |" * len(s["by_views_nats"]),
              "| surprise | " + " | ".join(f"{v:.3f}" for v in s["by_views_nats"]) + " |", ""]
    c = results["context_count"]
    lines += ["## Context count", "",
              f"Linear classifier of how many of {c['counts']} possible views were summed into "
              f"`r`: trained {c['gqn_accuracy']:.3f} (within one {c['gqn_within_one']:.3f}), "
              f"fresh {c['fresh_accuracy']:.3f}, chance {c['chance']:.3f}. `r` is a sum, so "
              "its norm grows with the count and any encoder, a fresh one too, can pass: the "
              "check is that `r` accumulates its views.", ""]
    e = results["embedding"]
    lines += ["## Embedding", "",
              f"Silhouette of per-view `r` by scene: trained {e['gqn_silhouette']:.3f}, fresh "
              f"{e['fresh_silhouette']:.3f}.", "", "![embedding](embedding.png)", ""]
    return "\n".join(lines)
