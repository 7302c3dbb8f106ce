"""The probe's measurements, each next to its baselines: state probes and their two ceilings,
held-out view error, surprise, context count and embedding; :func:`probe` runs them all."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
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
    Predictor,
    fit_linear_classifier,
    fit_mlp,
    fit_ridge,
    pca_2d,
    silhouette_score,
)
from gqn_rl.probe.scenes import (
    PARTS,
    Intervals,
    ProbeConfig,
    ReadoutData,
    Scenes,
    Source,
    fresh_like,
    load_scenes,
    one_view,
    one_view_source,
    per_view_representations,
    r2_with_interval,
    readout_data,
    summed_views_source,
)

Readout = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[slice]], Predictor]
"""Fits a readout of each target on ``(x_fit, y_fit, x_val, y_val, groups)`` (every target
side by side, ``groups`` their columns) and returns its predictor of them all."""


def score(data: ReadoutData, sources: dict[str, Source], readouts: dict[str, Readout],
          config: ProbeConfig, bar: tqdm | None = None
          ) -> tuple[dict[str, dict[str, float]], Intervals]:
    """R² on the test scenes, per target, of every readout fitted on every feature source,
    ``{target: {"<source>, <readout>": R²}}``, and their intervals."""
    columns = data.test.target_columns()
    results: dict[str, dict[str, float]] = {target: {} for target in columns}
    intervals: Intervals = {target: {} for target in columns}
    for source, samples in sources.items():
        (x_fit, y_fit), (x_val, y_val) = samples("fit"), samples("val")
        fitted = {name: fit(x_fit, y_fit, x_val, y_val, list(columns.values()))
                  for name, fit in readouts.items()}
        del x_fit, y_fit, x_val, y_val  # a source's samples can take a gigabyte
        x_test, y_test = samples("test")
        for name, predict in fitted.items():
            predicted, key = predict(x_test), f"{source}, {name}"
            for target, c in columns.items():
                results[target][key], interval = r2_with_interval(
                    predicted[:, c], y_test[:, c], len(data.test_rows), config)
                if interval:
                    intervals[target][key] = interval
        if bar is not None:
            bar.update(1)
    return results, intervals


def ridge(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
          groups: list[slice]) -> Predictor:
    """The ridge readout: each target its own alpha, one decomposition for them all."""
    return fit_ridge(x_fit, y_fit, x_val, y_val, groups=groups)


def mlp(seed: int) -> Readout:
    """The MLP readout: one network per target, each stopped on its own validation loss."""
    def fit(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
            groups: list[slice]) -> Predictor:
        fitted = [(g, fit_mlp(x_fit, y_fit[:, g], x_val, y_val[:, g], seed=seed))
                  for g in groups]

        def predict(features: np.ndarray) -> np.ndarray:
            out = np.empty((len(features), y_fit.shape[1]), np.float32)
            for g, predict_one in fitted:
                out[:, g] = predict_one(features)
            return out

        return predict

    return fit


PerView = tuple[np.ndarray, np.ndarray]
"""Per-view features ``[N, V, D]`` of the readouts' learning scenes and of the probed scenes
(the same array when the readouts learn from the probed scenes)."""


def _state_probes(data: ReadoutData, r: dict[str, PerView], architecture: GQNConfig,
                  config: ProbeConfig, bar: tqdm
                  ) -> tuple[dict[str, dict[str, float]], Intervals, dict[str, list[float]]]:
    """R² per target of every readout and feature source, and of the two ceilings, with their
    intervals and the ceilings' validation curves."""
    k = min(config.context_views, data.test.images.shape[1] - 1)

    def pixels(scenes: Scenes, rows: np.ndarray, views: int) -> np.ndarray:
        images = scenes.images[rows, :views].reshape(len(rows), views, -1)  # [n, views, H W 3]
        return np.concatenate([images.astype(np.float32) / 255,
                               scenes.viewpoints[rows, :views]], axis=-1)   # [.., H W 3 + 7]

    def per_view(pair: PerView) -> Callable[[Scenes], np.ndarray]:
        return lambda scenes: pair[0] if scenes is data.learn else pair[1]

    def one_view_of(pair: PerView) -> Source:
        features = per_view(pair)
        return one_view_source(data, lambda scenes, rows, views: features(scenes)[rows, :views])

    sources = {f"{name} 1 view": one_view_of(pair) for name, pair in r.items()}
    sources.update({f"{name} {k} views": summed_views_source(data, per_view(pair), k,
                                                             config.seed)
                    for name, pair in r.items()})
    readouts: dict[str, Readout] = {"ridge": ridge}
    if config.mlp:
        readouts["mlp"] = mlp(config.seed)
    results, intervals = score(data, sources, readouts, config, bar)
    pixel_readouts = {"ridge": ridge}  # an MLP on 3,000 x 11 images: too slow, the CNN's job
    if config.mlp and not data.from_train:
        pixel_readouts["mlp"] = readouts["mlp"]
    pixel_results, pixel_intervals = score(
        data, {"pixels 1 view": one_view_source(data, pixels)}, pixel_readouts, config, bar)
    for target in results:
        results[target].update(pixel_results[target])
        intervals[target].update(pixel_intervals[target])
    ceilings = {CNN_CEILING: None, ARCHITECTURE_CEILING: architecture}
    curves = _ceilings(data, ceilings, config, results, intervals, bar) if config.cnn else {}
    bar.update(1)
    return results, intervals, curves


CNN_CEILING, ARCHITECTURE_CEILING = "supervised CNN 1 view", "supervised architecture 1 view"
CEILINGS = {CNN_CEILING: "the pixels' ceiling: a CNN supervised on the targets",
            ARCHITECTURE_CEILING: "the architecture's ceiling: the GQN's representation "
            "network, fresh, supervised end to end with the MLP readout"}
"""The state probes' two ceilings, by column name."""


def _ceilings(data: ReadoutData, architectures: dict[str, GQNConfig | None],
              config: ProbeConfig, results: dict[str, dict[str, float]], intervals: Intervals,
              bar: tqdm | None = None,
              multi_view: dict[str, tuple[GQNConfig, int]] | None = None
              ) -> dict[str, list[float]]:
    """Fit one ceiling per entry of ``architectures`` (column name -> the GQN config whose
    representation network to supervise, or None for the CNN) on the first ``data.views``
    views of the readouts' learning scenes, and one per entry of ``multi_view`` (column name
    -> config and K) on random K-view subsets of those scenes, summed; all targets at once,
    each until its validation loss stops improving; add their R² per target on the readouts'
    test scenes to ``results`` and ``intervals``; return their validation curves."""
    columns = data.test.target_columns()
    views = data.views

    def samples(part: str) -> tuple[np.ndarray, ...]:
        """Images ``[n views, H, W, 3]``, viewpoints and targets of the part's scenes."""
        scenes, rows = data.part(part)
        return (scenes.images[rows, :views].reshape(-1, *scenes.images.shape[2:]),
                one_view(scenes.viewpoints, rows, views),
                np.repeat(scenes.target_matrix()[rows], views, 0))

    def record(key: str, predicted: np.ndarray, truth: np.ndarray) -> None:
        for target, c in columns.items():
            results.setdefault(target, {})[key], interval = r2_with_interval(
                predicted[:, c], truth[:, c], len(data.test_rows), config)
            if interval:
                intervals.setdefault(target, {})[key] = interval
        if bar is not None:
            bar.update(1)

    fit, val, test = (samples(p) for p in PARTS)
    training = dict(epochs=config.ceiling_epochs, patience=config.ceiling_patience,
                    seed=config.seed)
    curves = {}
    for key, architecture in architectures.items():
        readout = (fit_cnn(*fit, *val, **training) if architecture is None else
                   fit_architecture(architecture, *fit, *val, **training))
        curves[key] = readout.curve
        record(key, readout.predict(*test[:2]), test[2])
    learn = data.learn
    for key, (architecture, k) in (multi_view or {}).items():
        per_scene = data.summed_samples(k)
        readout = fit_architecture_views(
            architecture, k, learn.images, learn.viewpoints, learn.target_matrix(),
            learn.parts["fit"], learn.parts["val"], samples=per_scene, **training)
        curves[key] = readout.curve
        predicted = readout.predict(data.test.images, data.test.viewpoints, data.test_rows,
                                    derive_seed(config.seed, "ceiling-test-views"))
        record(key, predicted, np.repeat(data.test.target_matrix()[data.test_rows],
                                         per_scene, 0))
    return curves


def architecture_ceilings(dataset: SceneDataset, architectures: dict[str, GQNConfig],
                          config: ProbeConfig = ProbeConfig(), progress: bool = True,
                          views: int = 1) -> dict[str, Any]:
    """The ceilings alone, for choosing a representation network before pretraining one
    (``gqn-rl ceiling``): the CNN and each of ``architectures`` (name -> config) supervised
    on the scenes the probe's readouts learn from (:func:`readout_data`) from one view, and
    when ``views`` > 1 each architecture again from that many views summed (whether its
    ``r`` adds up over views). Keys: ``config``, ``scenes``, ``readout_data``, ``state``
    (target -> column -> R²), ``state_interval``, ``ceiling_curves``."""
    if views > dataset.views:
        raise ValueError(f"--views {views}: {dataset.path} has {dataset.views} views per scene")
    config = config.for_views(dataset.views)
    scenes = load_scenes(dataset, config)
    if scenes.targets is None:
        raise ValueError(f"{dataset.path}: the {dataset.split} split has no ground truth, so "
                         "there is nothing to supervise")
    data = readout_data(dataset, scenes, config)
    columns: dict[str, GQNConfig | None] = {CNN_CEILING: None}
    columns.update({f"supervised {name} 1 view": architecture
                    for name, architecture in architectures.items()})
    multi_view = ({f"supervised {name} {views} views": (architecture, views)
                   for name, architecture in architectures.items()} if views > 1 else {})
    results: dict[str, dict[str, float]] = {}
    intervals: Intervals = {}
    with tqdm(total=len(columns) + len(multi_view), desc="ceilings", disable=not progress,
              unit="fit") as bar:
        curves = _ceilings(data, columns, config, results, intervals, bar, multi_view)
    return {"config": dataclasses.asdict(config),
            "scenes": {p: int(len(data.part(p)[1])) for p in PARTS},
            "readout_data": data.record(views if views > 1 else None),
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


def _embedding(r: dict[str, np.ndarray], scenes: Scenes, rows: np.ndarray
               ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Silhouette by scene of per-view ``r`` and its 2-D PCA, for the scenes ``rows``."""
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

    The state readouts and the ceilings learn from the dataset's train split when it has one
    (:func:`readout_data`) and are scored on the probed scenes. Keys: ``config``, ``scenes``
    (the readouts' fit / val / test scene counts), ``readout_data`` (what they learnt from),
    ``state`` (target -> readout -> R², or None without truth), ``state_interval`` (the same
    keys -> 95% bootstrap interval over test scenes), ``prediction_error`` (K, gqn,
    nearest_view, mean_view, and each on the objects' pixels), ``surprise``,
    ``context_count``, ``embedding``; ``_points`` holds the 2-D embeddings for the plots.
    """
    model.config.check_image_size(dataset.image_size, f"{dataset.path}")
    config = config.for_views(dataset.views)  # what is measured is what probe.json records
    model = model.eval()
    scenes = load_scenes(dataset, config)
    data = (readout_data(dataset, scenes, config) if scenes.targets is not None
            else ReadoutData.own(scenes, config, "the probed split has no ground truth"))
    k = min(config.context_views, dataset.views - 1)
    targets = scenes.targets is not None
    encoders = (("gqn", model),) + ((("fresh", fresh_like(model, config.seed)),)
                                     if config.fresh else ())
    sources = 2 * len(encoders) + 1  # each encoder of 1 and K views; pixels
    bar = tqdm(total=len(encoders) * (1 + (targets and data.from_train))
               + targets * (sources + 2 * config.cnn + 1) + 3, desc="probe",
               disable=not progress, unit="stage")
    r = {}
    for name, encoder in encoders:
        r[name] = per_view_representations(encoder, scenes.images, scenes.viewpoints)
        bar.update(1)
    state, intervals, curves = None, None, {}
    if targets:
        pairs = {}
        for name, encoder in encoders:
            learn = r[name]
            if data.from_train:
                learn = per_view_representations(encoder, data.learn.images,
                                                 data.learn.viewpoints)
                bar.update(1)
            pairs[name] = (learn, r[name])
        state, intervals, curves = _state_probes(data, pairs, model.config, config, bar)
        del pairs  # the train scenes' r: a gigabyte or more
    rows = data.test_rows[:config.prediction_scenes]
    masks = foreground_masks(dataset, rows)
    error, surprise = prediction_and_surprise(
        model, scenes, rows, None if masks is None else masks[:, -1], config)
    bar.update(1)
    count = _context_count(r, scenes, config)
    bar.update(1)
    embedding, points = _embedding(r, scenes, data.test_rows[:config.embedding_scenes])
    bar.update(1)
    bar.close()
    return {"config": dataclasses.asdict(config),
            "scenes": {p: int(len(data.part(p)[1])) for p in PARTS},
            "readout_data": data.record(k) if targets else None,
            "state": state, "state_interval": intervals, "ceiling_curves": curves,
            "prediction_error": error,
            "surprise": surprise,
            "context_count": count, "embedding": embedding, "_points": points}
