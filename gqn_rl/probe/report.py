"""The probe's files: ``probe.json`` or ``ceiling.json``, ``report.md`` and PNGs."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from gqn import GQNConfig
from gqn.data import SceneDataset
from gqn.fileio import atomic_write, write_json
from gqn_rl.encoders import open_checkpoint
from gqn_rl.probe.measures import CEILINGS, architecture_ceilings, probe
from gqn_rl.probe.scenes import ProbeConfig

PROBE_FILE, CEILING_FILE, REPORT_FILE = "probe.json", "ceiling.json", "report.md"


def run_probe(checkpoint: Path, data: Path, out: Path, config: ProbeConfig = ProbeConfig(),
              split: str = "test", progress: bool = True) -> dict[str, Any]:
    """Probe the GQN in ``checkpoint`` on ``data``'s ``split``; writes ``out/probe.json``,
    ``out/report.md`` and PNGs; returns the figures."""
    check_output_directory(Path(out))
    gqn = open_checkpoint(checkpoint)
    dataset = SceneDataset(data, split)
    truth = dataset.truth(0) if len(dataset) else None
    model = gqn.check_family((truth or {}).get("family"), f"{data}").new_model()
    start = time.perf_counter()
    results = probe(model, dataset, config, progress=progress)
    points = results.pop("_points")
    results.update(checkpoint=str(checkpoint), data=str(data), split=split,
                   model_config=dataclasses.asdict(model.config),
                   seconds=round(time.perf_counter() - start, 1),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / PROBE_FILE, results)
    _plot(results, points, out)
    atomic_write(out / REPORT_FILE, lambda f: f.write(report_markdown(results).encode()))
    return results


def run_ceilings(data: Path, out: Path, representations: list[str], base: GQNConfig,
                 config: ProbeConfig = ProbeConfig(), split: str = "test",
                 progress: bool = True, views: int = 1) -> dict[str, Any]:
    """``gqn-rl ceiling``: :func:`architecture_ceilings` of the ``representations`` at
    ``base``'s sizes (and the data's image size) on ``data``'s ``split``, from one view and
    from ``views`` summed when more than one; writes
    ``out/ceiling.json``, ``out/report.md`` and PNGs; returns the figures."""
    out = Path(out)
    check_output_directory(out)
    dataset = SceneDataset(data, split)
    architectures = {name: dataclasses.replace(base, representation=name,
                                               image_size=dataset.image_size)
                     for name in representations}
    start = time.perf_counter()
    results = architecture_ceilings(dataset, architectures, config, progress, views)
    results.update(data=str(data), split=split, seconds=round(time.perf_counter() - start, 1),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CEILING_FILE, results)
    _plot(results, {}, out)
    lines = [f"# Ceilings of representation networks on `{data}` ({split} split)", "",
             f"{_learnt_from(results['readout_data'], 'The networks')} Seed {config.seed}; "
             f"{results['date']}, {results['seconds']} s. Each column is a network supervised "
             "end to end from one "
             "view (and its viewpoint) to the scene's targets: what any GQN built on it could "
             "at best put into `r`."
             + (f" The `{views} views` columns sum the network's `r` over {views} random "
                "views of each scene, as the GQN does, before the readout: whether `r` adds "
                "up over views." if views > 1 else ""), "", *_state_lines(results)]
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
        axes.plot(error["K"], error["mean_view"], marker="^", label="mean of context views")
        if error["gqn_objects"]:
            axes.plot(error["K"], error["gqn_objects"], marker="o", ls="--", label="GQN, objects")
            axes.plot(error["K"], error["nearest_view_objects"], marker="s", ls="--",
                      label="nearest view, objects")
            axes.plot(error["K"], error["mean_view_objects"], marker="^", ls="--",
                      label="mean view, objects")
        axes.set(xlabel="context views K", ylabel="MSE per pixel", title="held-out view error")
        axes.legend(fontsize=7)
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
        lines += ["## Ceilings", "", "Each supervised on the readouts' learning scenes and "
                  "views (all targets at once, standardised), stopped once its validation loss "
                  f"went {results['config']['ceiling_patience']} epochs without improving:", ""]
        other = "that representation network, fresh, supervised with the MLP readout"
        lines += [f"- `{name}` ({CEILINGS.get(name, other)}): {len(curve)} epochs, best "
                  f"validation loss {min(curve):.3f} at epoch {int(np.argmin(curve)) + 1}"
                  for name, curve in results["ceiling_curves"].items()]
        lines += ["", "![ceiling curves](ceiling_curves.png)", ""]
    return lines


def _learnt_from(data: dict[str, Any], learners: str) -> str:
    """What the readouts (or ``learners``) learnt from and were scored on, scenes x views."""
    views = data["views"]
    if data["learnt_from"] == "train split":
        text = (f"{learners} learn from {data['fit_scenes']:,} scenes x {views} views of the "
                f"dataset's train split ({data['val_scenes']:,} more held out to choose ridge's "
                "alpha or stop training) and are scored on "
                f"{data['test_scenes']:,} probed scenes x {views} views.")
    else:
        text = (f"{learners} learn from the probed split's own scenes, as "
                f"{data['learnt_from']}: fit / val / test {data['fit_scenes']:,} / "
                f"{data['val_scenes']:,} / {data['test_scenes']:,} scenes x {views} views.")
    if "summed_views" in data:
        text += (f" From {data['summed_views']} views: {data['summed_samples']} random sums of "
                 f"{data['summed_views']} views of each scene, learning and scoring.")
    return text


def report_markdown(results: dict[str, Any]) -> str:
    """``report.md`` of a probe's figures."""
    lines = [f"# Probe of `{results.get('checkpoint', 'a GQN')}`", "",
             f"Data `{results.get('data')}` ({results.get('split')} split); seed "
             f"{results['config']['seed']}; {results.get('date', '')}, "
             f"{results.get('seconds', '?')} s. `fresh` is the same architecture freshly "
             "initialised; `pixels` raw pixels with the viewpoint.", ""]
    if results["state"]:
        config = results["config"]
        pixels = (" Raw pixels are read by ridge only (an MLP on them is slow; the supervised "
                  "CNN is the pixels' reading)."
                  if config["mlp"] and results["readout_data"]["learnt_from"] == "train split"
                  else "")
        ceilings = (" The ceilings learn from the same scenes and views."
                    if results.get("ceiling_curves") else "")
        lines += [_learnt_from(results["readout_data"], "The state readouts")
                  + " Ridge and the MLP learn each target alone." + pixels + ceilings, ""]
        lines += _state_lines(results)
    else:
        lines += ["No ground truth in this dataset: no state probes.", ""]
    error = results["prediction_error"]
    lines += ["## Held-out view error against context views", "",
              "| K | " + " | ".join(str(k) for k in error["K"]) + " |",
              "| --- |" + " ---: |" * len(error["K"]),
              "| GQN | " + " | ".join(f"{e:.4f}" for e in error["gqn"]) + " |",
              "| nearest view | " + " | ".join(f"{e:.4f}" for e in error["nearest_view"]) + " |",
              "| mean of context views | " + " | ".join(f"{e:.4f}" for e in error["mean_view"])
              + " |"]
    if error["gqn_objects"]:
        lines += ["| GQN, object pixels | " + " | ".join(f"{e:.4f}" for e in error["gqn_objects"])
                  + " |", "| nearest view, object pixels | "
                  + " | ".join(f"{e:.4f}" for e in error["nearest_view_objects"]) + " |",
                  "| mean of context views, object pixels | "
                  + " | ".join(f"{e:.4f}" for e in error["mean_view_objects"]) + " |"]
    else:
        lines += ["", "(No object masks: the dataset was not rendered by gqn-rl.)"]
    lines += ["", "MSE per pixel and channel of the last view of each test scene, predicted "
              "from its first K views (GQN: a sample from the prior), copied from the nearest "
              "of them, or their plain mean per pixel.", "",
              "![prediction error](prediction_error.png)", ""]
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
              f"fresh {_figure(c.get('fresh_accuracy'))}, chance {c['chance']:.3f}. `r` is a "
              "sum, so its norm grows with the count and any encoder, a fresh one too, can "
              "pass: the check is that `r` accumulates its views.", ""]
    e = results["embedding"]
    lines += ["## Embedding", "",
              f"Silhouette of per-view `r` by scene: trained {e['gqn_silhouette']:.3f}, fresh "
              f"{_figure(e.get('fresh_silhouette'))}.", "", "![embedding](embedding.png)", ""]
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    """A measured figure to three places, or why there is none."""
    return "not probed" if value is None else f"{value:.3f}"
