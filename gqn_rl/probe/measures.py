"""The probe's measurements, each next to its baselines: state probes and their two ceilings,
held-out view error, surprise, context count and embedding; :func:`probe` runs them all."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gqn import GQN, GQNConfig
from gqn.data import SceneDataset
from gqn.seeding import derive_rng, derive_seed
from gqn_rl.foreground import foreground_masks
from gqn_rl.probe.ceilings import fit_architecture, fit_architecture_views, fit_cnn
from gqn_rl.probe.readouts import (
    fit_linear_classifier,
    fit_mlp,
    fit_ridge,
    pca_2d,
    silhouette_score,
)
from gqn_rl.probe.scenes import (
    Intervals,
    ProbeConfig,
    Scenes,
    Source,
    fresh_like,
    load_scenes,
    one_view,
    one_view_source,
    per_view_representations,
    r2_with_interval,
    summed_views_source,
)


def score(scenes: Scenes, sources: dict[str, Source], readouts: dict[str, Any],
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
                results[target][key], interval = r2_with_interval(
                    predict(x_test), y_test, len(test), config)
                if interval:
                    intervals[target][key] = interval
            if bar is not None:
                bar.update(1)
    return results, intervals


def _state_probes(dataset: SceneDataset, scenes: Scenes, r: dict[str, np.ndarray],
                  architecture: GQNConfig, config: ProbeConfig, bar: tqdm
                  ) -> tuple[dict[str, dict[str, float]], Intervals, dict[str, list[float]]]:
    """R² per target of every readout and feature source, and of the two ceilings, with their
    intervals and the ceilings' validation curves."""
    k = min(config.context_views, scenes.images.shape[1] - 1)

    def pixels(rows: np.ndarray, views: int) -> np.ndarray:   # [n, views, H W 3 + 7]
        images = scenes.images[rows, :views].reshape(len(rows), views, -1) / 255.0
        return np.concatenate([images, scenes.viewpoints[rows, :views]], axis=-1)

    sources = {f"{name} 1 view": one_view_source(
        scenes, lambda rows, views, f=features: f[rows, :views], config)
        for name, features in r.items()}
    sources.update({f"{name} {k} views": summed_views_source(scenes, features, k, config)
                    for name, features in r.items()})
    sources["pixels 1 view"] = one_view_source(scenes, pixels, config)
    readouts: dict[str, Any] = {"ridge": fit_ridge}
    if config.mlp:
        readouts["mlp"] = lambda *data: fit_mlp(*data, seed=config.seed)
    results, intervals = score(scenes, sources, readouts, config, bar)
    ceilings = {CNN_CEILING: None, ARCHITECTURE_CEILING: architecture}
    curves = (_ceilings(dataset, scenes, ceilings, config, results, intervals, bar)
              if config.cnn else {})
    bar.update(1)
    return results, intervals, curves


CNN_CEILING, ARCHITECTURE_CEILING = "supervised CNN 1 view", "supervised architecture 1 view"
CEILINGS = {CNN_CEILING: "the pixels' ceiling: a CNN supervised on the targets",
            ARCHITECTURE_CEILING: "the architecture's ceiling: the GQN's representation "
            "network, fresh, supervised end to end with the MLP readout"}
"""The state probes' two ceilings, by column name."""


def _ceiling_scenes(dataset: SceneDataset, scenes: Scenes, config: ProbeConfig) -> Scenes:
    """The scenes the ceilings learn from: ``config.ceiling_scenes`` of the dataset's train
    split (90% fit, 5% validation) when the probed split is another and that gives more fit
    scenes, else the probe's own fit and validation scenes. A ceiling needs many distinct
    scenes: fitted on the probe's few hundred, it learns each scene's colours by heart and its
    validation loss rises within a few epochs (docs/encoders.md#the-one-view-ceilings-read-low)."""
    if dataset.split == "train":
        return scenes
    try:
        train = SceneDataset(dataset.path, "train")
    except ValueError:  # no train split: the probe's own scenes
        return scenes
    if 0.9 * min(len(train), config.ceiling_scenes) <= len(scenes.parts["fit"]):
        return scenes
    return load_scenes(train, dataclasses.replace(
        config, scenes=config.ceiling_scenes, fit_fraction=0.9, val_fraction=0.05))


def _ceilings(dataset: SceneDataset, scenes: Scenes,
              architectures: dict[str, GQNConfig | None], config: ProbeConfig,
              results: dict[str, dict[str, float]], intervals: Intervals,
              bar: tqdm | None = None,
              multi_view: dict[str, tuple[GQNConfig, int]] | None = None
              ) -> dict[str, list[float]]:
    """Fit one ceiling per entry of ``architectures`` (column name -> the GQN config whose
    representation network to supervise, or None for the CNN) on the first
    ``views_per_scene`` views of :func:`_ceiling_scenes`, and one per entry of ``multi_view``
    (column name -> config and K) on random K-view subsets of those scenes, summed; all
    targets at once, each until its validation loss stops improving; add their R² per target
    on the probe's test scenes to ``results`` and ``intervals``; return their validation
    curves."""
    names = list(scenes.targets)
    widths = np.cumsum([0] + [scenes.targets[t].shape[1] for t in names])
    views = min(config.views_per_scene, scenes.images.shape[1])

    def targets(source: Scenes) -> np.ndarray:
        return np.concatenate([source.targets[t] for t in names], 1)        # [S, T]

    def samples(source: Scenes, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """Images ``[n views, H, W, 3]``, viewpoints and targets of the scenes ``rows``."""
        return (source.images[rows, :views].reshape(-1, *source.images.shape[2:]),
                one_view(source.viewpoints, rows, views),
                np.repeat(targets(source)[rows], views, 0))

    def record(key: str, predicted: np.ndarray, truth: np.ndarray) -> None:
        for i, target in enumerate(names):
            columns = slice(widths[i], widths[i + 1])
            results.setdefault(target, {})[key], interval = r2_with_interval(
                predicted[:, columns], truth[:, columns], len(scenes.parts["test"]), config)
            if interval:
                intervals.setdefault(target, {})[key] = interval
        if bar is not None:
            bar.update(1)

    learn = _ceiling_scenes(dataset, scenes, config)
    data = {"fit": samples(learn, learn.parts["fit"]), "val": samples(learn, learn.parts["val"]),
            "test": samples(scenes, scenes.parts["test"])}
    training = dict(epochs=config.ceiling_epochs, patience=config.ceiling_patience,
                    seed=config.seed)
    curves = {}
    for key, architecture in architectures.items():
        readout = (fit_cnn(*data["fit"], *data["val"], **training) if architecture is None else
                   fit_architecture(architecture, *data["fit"], *data["val"], **training))
        curves[key] = readout.curve
        record(key, readout.predict(*data["test"][:2]), data["test"][2])
    test = scenes.parts["test"]
    for key, (architecture, k) in (multi_view or {}).items():
        readout = fit_architecture_views(
            architecture, k, learn.images, learn.viewpoints, targets(learn),
            learn.parts["fit"], learn.parts["val"], samples=views, **training)
        curves[key] = readout.curve
        predicted = readout.predict(scenes.images, scenes.viewpoints, test,
                                    derive_seed(config.seed, "ceiling-test-views"))
        record(key, predicted, np.repeat(targets(scenes)[test], views, 0))
    return curves


def architecture_ceilings(dataset: SceneDataset, architectures: dict[str, GQNConfig],
                          config: ProbeConfig = ProbeConfig(), progress: bool = True,
                          views: int = 1) -> dict[str, Any]:
    """The ceilings alone, for choosing a representation network before pretraining one
    (``gqn-rl ceiling``): the CNN and each of ``architectures`` (name -> config) supervised
    on ``dataset``'s scenes from one view, and when ``views`` > 1 each architecture again from
    that many views summed (whether its ``r`` adds up over views). Keys: ``config``,
    ``scenes``, ``state`` (target -> column -> R²), ``state_interval``, ``ceiling_curves``."""
    if views > dataset.views:
        raise ValueError(f"--views {views}: {dataset.path} has {dataset.views} views per scene")
    config = config.for_views(dataset.views)
    scenes = load_scenes(dataset, config)
    if scenes.targets is None:
        raise ValueError(f"{dataset.path}: the {dataset.split} split has no ground truth, so "
                         "there is nothing to supervise")
    columns: dict[str, GQNConfig | None] = {CNN_CEILING: None}
    columns.update({f"supervised {name} 1 view": architecture
                    for name, architecture in architectures.items()})
    multi_view = ({f"supervised {name} {views} views": (architecture, views)
                   for name, architecture in architectures.items()} if views > 1 else {})
    results: dict[str, dict[str, float]] = {}
    intervals: Intervals = {}
    with tqdm(total=len(columns) + len(multi_view), desc="ceilings", disable=not progress,
              unit="fit") as bar:
        curves = _ceilings(dataset, scenes, columns, config, results, intervals, bar,
                           multi_view)
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
def prediction_and_surprise(model: GQN, scenes: Scenes, rows: np.ndarray,
                             masks: np.ndarray | None, config: ProbeConfig
                             ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Query error against K (the last view is the query) next to two baselines, the copy of
    the nearest context view and the plain mean of the K context views (per pixel), on the
    whole image and on the object pixels of the query (``masks`` ``[N, H, W]``, if known),
    and the surprise of the query given its own scene's K views and another scene's."""
    images = torch.as_tensor(scenes.images[rows]).permute(0, 1, 4, 2, 3)  # [N, V, 3, H, W]
    viewpoints = torch.as_tensor(scenes.viewpoints[rows])
    query_x, query_v = images[:, -1], viewpoints[:, -1]
    truth = query_x.float() / 255
    views = images.shape[1]
    mask = None if masks is None else torch.as_tensor(masks, dtype=torch.float32)
    baselines = ("gqn", "nearest_view", "mean_view")
    error: dict[str, list[float]] = {"K": [], **{name: [] for name in baselines},
                                     **{f"{name}_objects": [] for name in baselines}}
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(config.seed, "prediction"))
        for k in range(1, views):
            predicted = model.generate(images[:, :k], viewpoints[:, :k], query_v)
            nearest = _nearest_view(scenes.viewpoints[rows, :k], scenes.viewpoints[rows, -1])
            copied = images[torch.arange(len(rows)), torch.as_tensor(nearest)].float() / 255
            mean = images[:, :k].float().mean(1) / 255                   # [N, 3, H, W]
            error["K"].append(k)
            for name, image in zip(baselines, (predicted, copied, mean), strict=True):
                error[name].append(_squared_error(image, truth))
                if mask is not None:
                    error[f"{name}_objects"].append(_squared_error(image, truth, mask))
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


def _context_count(r: dict[str, np.ndarray], scenes: Scenes, config: ProbeConfig
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


def _embedding(r: dict[str, np.ndarray], scenes: Scenes, config: ProbeConfig
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


def probe(model: GQN, dataset: SceneDataset, config: ProbeConfig = ProbeConfig(),
          progress: bool = True) -> dict[str, Any]:
    """Every measurement on ``dataset`` (a split), with its baselines; a JSON-able dict.

    Keys: ``config``, ``scenes`` (fit / val / test counts), ``state`` (target -> readout ->
    R², or None without truth), ``state_interval`` (the same keys -> 95% bootstrap interval
    over test scenes), ``prediction_error`` (K, gqn, nearest_view), ``surprise``,
    ``context_count``, ``embedding``; ``_points`` holds the 2-D embeddings for the plots.
    """
    model.config.check_image_size(dataset.image_size, f"{dataset.path}")
    config = config.for_views(dataset.views)  # what is measured is what probe.json records
    model = model.eval()
    scenes = load_scenes(dataset, config)
    targets = 0 if scenes.targets is None else len(scenes.targets)
    sources = 5  # gqn and fresh, each of 1 and K views; pixels
    bar = tqdm(total=2 + sources * targets + 2 * config.cnn + 4, desc="probe",
               disable=not progress, unit="stage")
    r = {}
    for name, encoder in (("gqn", model), ("fresh", fresh_like(model, config.seed))):
        r[name] = per_view_representations(encoder, scenes.images, scenes.viewpoints)
        bar.update(1)
    state, intervals, curves = (None, None, {}) if scenes.targets is None else _state_probes(
        dataset, scenes, r, model.config, config, bar)
    rows = scenes.parts["test"][:config.prediction_scenes]
    masks = foreground_masks(dataset, rows)
    error, surprise = prediction_and_surprise(
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


