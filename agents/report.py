"""``gqn-rl report DIR``: the benchmark's ``report.md`` and PNGs, from ``DIR``'s finished runs.

Scores are normalised per environment (and track, and demonstration count): 0 is the grid's
random policy, 100 its state oracle (``state``), each the mean over its seeds. Aggregates are
the interquartile mean (IQM) over runs with 95% stratified-bootstrap confidence intervals,
and the probability of improvement over ``pixels-aug`` (the strongest pixel baseline), both
computed by ``rliable`` (Agarwal et al., 2021), the statistics the field reports.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from agents.benchmark import (
    ORACLE,
    REFERENCE,
    RESULTS_CSV,
    Scale,
    normalized_score,
    results,
    rows,
    scales,
    write_results_csv,
)
from agents.callbacks import WALL_FILE
from agents.grid import CAMERA_SHIFTS, RESULT_FILE, Cell
from agents.references import BASELINE, ceiling_places, perfect_reference
from gqn.fileio import atomic_write, check_output

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPORT_FILE = "report.md"
THRESHOLDS = (50, 80)
"""Normalised scores (percent of the oracle's final score) whose steps and time are reported."""
BOOTSTRAP_REPS = 2000


def _iqm(scores: np.ndarray) -> float:
    from rliable import metrics

    return float(metrics.aggregate_iqm(scores))


def _bootstrap(score_dict: dict[str, Any], func: Callable[..., Any], seed: int) -> np.ndarray:
    """rliable's stratified-bootstrap 95% interval of ``func`` on the one entry of
    ``score_dict``: ``[2, ...]`` (low, high)."""
    from rliable import library

    # rliable draws its resamples from NumPy's global generator (StratifiedBootstrap
    # .update_indices), not from the random_state it takes: seed that one, and put it back.
    state = np.random.get_state()  # noqa: NPY002 (the generator rliable draws from)
    np.random.seed(seed)  # noqa: NPY002
    try:
        _, cis = library.get_interval_estimates(score_dict, func, reps=BOOTSTRAP_REPS)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    return next(iter(cis.values()))


def interval(scores: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """IQM of ``scores`` ``[runs]`` with its 95% stratified-bootstrap interval (NaN bounds with
    fewer than two runs)."""
    column = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    point = _iqm(column)
    if len(column) < 2:
        return point, float("nan"), float("nan")
    low, high = np.ravel(_bootstrap({"x": column}, lambda x: np.array([_iqm(x)]), seed))
    return point, float(low), float(high)


def improvement(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """P(a run of ``x`` scores above a run of ``y``), with its 95% bootstrap interval."""
    from rliable import metrics

    a, b = (np.asarray(v, dtype=np.float64).reshape(-1, 1) for v in (x, y))
    point = float(metrics.probability_of_improvement(a, b))
    if min(len(a), len(b)) < 2:
        return point, float("nan"), float("nan")
    low, high = np.ravel(_bootstrap({"p": (a, b)}, metrics.probability_of_improvement, seed))
    return point, float(low), float(high)


def _fmt(values: tuple[float, float, float], digits: int = 1) -> str:
    point, low, high = values
    if np.isnan(low):
        return f"{point:.{digits}f}"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _groups(table: list[dict[str, Any]]) -> dict[tuple, dict[str, list[dict[str, Any]]]]:
    """Rows by (env, track, demos), then by encoder; the bc track's reference policies (demos
    0) are shown beside every demonstration count."""
    grouped: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for row in table:
        grouped.setdefault((row["env"], row["track"], row["demos"]), {}).setdefault(
            row["encoder"], []).append(row)
    for env, track, demos in list(grouped):
        cloned = [k for k in grouped if k[:2] == (env, track) and k[2]]
        if track == "bc" and demos == 0 and cloned:
            references = grouped.pop((env, track, 0))
            for key in cloned:
                grouped[key] = {**references, **grouped[key]}
    return grouped


def _curve(run_dir: Path, low: float, high: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Evaluation steps and normalised mean returns of one RL run, if it logged any."""
    log = run_dir / "eval" / "evaluations.npz"
    if not log.is_file() or high == low:
        return None
    data = np.load(log)
    return data["timesteps"], normalized_score(data["results"].mean(1), low, high)


def _curves(root: Path, env: str, encoders: dict[str, list[dict[str, Any]]], low: float,
            high: float) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per trained encoder: steps, IQM over seeds and its interval at each evaluation."""
    out = {}
    for encoder, runs in encoders.items():
        found = [_curve(Cell(r["env"], r["encoder"], r["track"], r["seed"],
                             r["demos"]).directory(root), low, high) for r in runs]
        found = [c for c in found if c is not None]
        if not found:
            continue
        length = min(len(c[0]) for c in found)
        steps = found[0][0][:length]
        scores = np.stack([c[1][:length] for c in found])  # [runs, evaluations]
        estimates = np.array([interval(scores[:, t]) for t in range(length)])
        out[encoder] = (steps, estimates[:, 0], estimates[:, 1], estimates[:, 2])
    return out


def _first_reaching(steps: np.ndarray, iqm: np.ndarray, level: float) -> float | None:
    hit = np.flatnonzero(iqm >= level)
    return float(steps[hit[0]]) if len(hit) else None


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    atomic_write(path, lambda f: figure.savefig(f, format="png"))
    plt.close(figure)


def _slug(*parts: Any) -> str:
    return "_".join(str(p).replace("gqn_rl/", "").replace("/", "_") for p in parts if p != "")


@dataclasses.dataclass(frozen=True)
class Report:
    """A grid's report, composed once: written as ``report.md`` and read by
    :func:`agents.pages.write_pages`."""

    root: Path
    """The grid directory."""
    found: list[dict[str, Any]]
    """Every finished run's result (:func:`agents.benchmark.results`)."""
    table: list[dict[str, Any]]
    """``results.csv``'s rows of ``found``, with normalised scores."""
    sections: dict[tuple[str, str, int], list[str]]
    """Markdown lines of each (env, track, demos) section; its images are PNGs in ``root``."""
    lines: list[str]
    """``report.md``'s lines."""


def compose_report(root: Path) -> Report:
    """The report of the finished runs of ``gqn-rl benchmark`` in ``root``; writes its PNGs."""
    root = Path(root)
    found = results(root)
    if not found:
        raise FileNotFoundError(f"{root}: no finished benchmark runs (runs/*/*/*/seed*/"
                                "result.json)")
    table = rows(found)
    lines = ["# gqn-rl benchmark report", "",
             f"`gqn-rl report {root}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
             f"{len(table)} runs. Normalised score: 0 is the random policy, 100 the state "
             "oracle (means over their seeds, same grid). IQM over runs with 95% "
             "stratified-bootstrap intervals and the probability of improvement over "
             f"`{BASELINE}` (rliable, {BOOTSTRAP_REPS} resamples).", ""]
    digests = sorted({(r["env"], r["checkpoint_sha256"]) for r in table
                      if r.get("checkpoint_sha256")})
    if digests:
        lines += ["GQN checkpoints of the gqn-* runs (SHA-256): " + "; ".join(
            f"{env} `{digest[:16]}`" for env, digest in digests) + ".", ""]
    sections = {}
    scale_of = scales(found)
    for (env, track, demos), encoders in sorted(_groups(table).items()):  # demos by number
        title = f"{env}, {track}" + (f", {demos} demonstrations" if demos else "")
        sections[env, track, demos] = _section(root, env, track, demos, encoders,
                                               scale_of.get((env, track, demos)))
        lines += [f"## {title}", "", *sections[env, track, demos]]
    return Report(root, found, table, sections, lines)


def save_report(report: Report) -> Path:
    """``report.md`` of ``report``, in its grid directory, and ``results.csv`` rebuilt from
    the same runs (a run deleted since the grid wrote it, or a corrupt file, is not kept)."""
    write_results_csv(report.root, report.table)
    path = report.root / REPORT_FILE
    atomic_write(path, lambda f: f.write("\n".join(report.lines).encode()))
    return path


def write_report(root: Path) -> Path:
    """``root/report.md`` and its PNGs from the finished runs of ``gqn-rl benchmark``."""
    return save_report(compose_report(root))


UNDEFINED_SCORE = ("Normalised scores, and the steps to 50% and 80% of the oracle's score, "
                   "are undefined (oracle not clear of random)")
"""The start of a report's line where a scale is undefined; its reason follows."""

LIGHT_RECORDS = (RESULT_FILE, "eval/evaluations.npz", WALL_FILE)
"""Each finished run's files that ``gqn-rl report`` reads and ``gqn-rl benchmark`` needs to
skip the run (its models, replay buffers and TensorBoard logs stay behind)."""


def check_publish(root: Path, dest: Path) -> None:
    """Refuse a ``--publish`` destination before anything is written: the grid directory
    itself, a file, or a folder that cannot be written."""
    root, dest = Path(root), Path(dest)
    if dest.resolve() == root.resolve():
        raise ValueError(f"--publish {dest} is the grid directory itself")
    check_output(dest, "--publish")


def publish(root: Path, dest: Path, report: Report | None = None) -> list[Path]:
    """Copy a grid's report (``report.md``, PNGs) and each finished run's
    :data:`LIGHT_RECORDS` from ``root`` to ``dest``, in the same layout, each file atomically,
    with a ``results.csv`` of the runs it copies (those of ``report``, when given: the ones
    ``report.md`` counts); returns the files written. A copy of ``dest`` is a grid directory
    that ``gqn-rl benchmark --out`` resumes (finished runs skipped) and ``gqn-rl report``
    reads."""
    root, dest = Path(root), Path(dest)
    check_publish(root, dest)
    found = results(root) if report is None else report.found
    files = [root / REPORT_FILE, *sorted(root.glob("*.png"))]
    for result in found:
        run = Cell(**result["cell"]).directory(root)
        files += [run / name for name in LIGHT_RECORDS]
    dest.mkdir(parents=True, exist_ok=True)
    written = [write_results_csv(root, rows(found), dest / RESULTS_CSV)]
    for source in files:
        if source.is_file():
            target = dest / source.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = source.read_bytes()
            atomic_write(target, lambda f, data=data: f.write(data))
            written.append(target)
    return written


def _section(root: Path, env: str, track: str, demos: int,
             encoders: dict[str, list[dict[str, Any]]], scale: Scale | None) -> list[str]:
    low, high = (np.nan, np.nan) if scale is None else (scale.random, scale.oracle)
    normalise = scale is not None and scale.undefined is None
    scores = {e: normalized_score(np.array([r["return"] for r in runs]), low, high)
              if normalise else np.zeros(0) for e, runs in encoders.items()}
    lines = ["| encoder | runs | return (mean) | success, IQM [95% CI] "
             f"| normalised score, IQM [95% CI] | P(improvement over {BASELINE}) | wall s (mean) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    estimates = {}
    for encoder, runs in encoders.items():
        score = scores[encoder]
        estimates[encoder] = interval(score) if len(score) else None
        versus = _versus(encoder, score, scores.get(BASELINE))
        lines.append(
            f"| {encoder} | {len(runs)} | {np.mean([r['return'] for r in runs]):.1f} | "
            f"{_fmt(interval(np.array([r['success'] for r in runs])), 2)} | "
            f"{_fmt(estimates[encoder]) if estimates[encoder] else 'n/a'} | {versus} | "
            f"{np.mean([r['wall_s'] for r in runs]):.0f} |")
    lines.append("")
    if scale is not None and not normalise:
        lines += [f"{UNDEFINED_SCORE}: {scale.undefined}.", ""]
    slug = _slug(env, track, demos or "")
    shown = {e: v for e, v in estimates.items() if v is not None}
    if shown:
        figure, axes = plt.subplots(figsize=(6, 0.45 * len(shown) + 1.2), dpi=100)
        names = list(shown)
        points = np.array([shown[n][0] for n in names])
        lows = np.array([shown[n][1] for n in names])
        highs = np.array([shown[n][2] for n in names])
        errors = np.nan_to_num(np.stack([points - lows, highs - points]))
        axes.barh(names, points, xerr=errors, color="tab:blue", alpha=0.7)
        axes.axvline(0, color="grey", lw=0.8)
        axes.axvline(100, color="grey", lw=0.8, ls="--")
        axes.set(xlabel="normalised score (IQM, 95% CI)", title=f"{env} ({track})")
        _save(figure, root / f"scores_{slug}.png")
        lines += [f"![normalised scores](scores_{slug}.png)", ""]
    if track != "rl":
        return lines
    if not normalise:
        if scale is None:
            lines += [f"(Normalised scores need `{REFERENCE}` and `{ORACLE}` runs.)", ""]
        return lines + _camera_shift(encoders)
    lines += perfect_reference(estimates) + ceiling_places(estimates)
    curves = _curves(root, env, {e: r for e, r in encoders.items()
                                 if e not in (REFERENCE, "scripted")}, low, high)
    if curves:
        lines += _efficiency(root, slug, env, curves, encoders)
    lines += _camera_shift(encoders)
    return lines


def _efficiency(root: Path, slug: str, env: str, curves: dict[str, tuple],
                encoders: dict[str, list[dict[str, Any]]]) -> list[str]:
    figure, axes = plt.subplots(figsize=(6.5, 4), dpi=100)
    for index, (encoder, (steps, iqm, low, high)) in enumerate(curves.items()):
        # Ten colours, then dashed lines: a grid of every kind has thirteen curves.
        colour, style = f"C{index % 10}", "-" if index < 10 else "--"
        axes.plot(steps, iqm, label=encoder, color=colour, ls=style)
        if not np.isnan(low).all():
            axes.fill_between(steps, low, high, color=colour, alpha=0.2)
    axes.axhline(0, color="grey", lw=0.8)
    axes.axhline(100, color="grey", lw=0.8, ls="--")
    axes.set(xlabel="environment steps", ylabel="normalised score (IQM, 95% CI)", title=env)
    axes.legend(fontsize=7)
    _save(figure, root / f"curves_{slug}.png")
    lines = [f"![sample efficiency](curves_{slug}.png)", "",
             "Steps (and wall time: steps x the run's mean seconds per step) until the IQM "
             "curve first reaches a share of the oracle's final score; the ratio is "
             f"`{BASELINE}`'s steps over the encoder's (the GQN paper's claim: about 4x).", "",
             "| encoder | " + " | ".join(f"steps to {t}% | ratio | minutes to {t}%"
                                         for t in THRESHOLDS) + " |",
             "| --- |" + " ---: | ---: | ---: |" * len(THRESHOLDS)]
    reach: dict[str, dict[int, float | None]] = {
        e: {t: _first_reaching(c[0], c[1], t) for t in THRESHOLDS} for e, c in curves.items()}
    for encoder in curves:
        runs = encoders[encoder]
        per_step = np.mean([r["wall_s"] / max(1, r["steps"]) for r in runs])
        cells = []
        for t in THRESHOLDS:
            steps = reach[encoder][t]
            base = reach.get(BASELINE, {}).get(t)
            ratio = f"{base / steps:.2f}" if steps and base else "n/a"
            cells += [f"{steps:.0f}" if steps else "not reached", ratio,
                      f"{steps * per_step / 60:.1f}" if steps else "n/a"]
        lines.append(f"| {encoder} | " + " | ".join(cells) + " |")
    return lines + [""]


def _versus(encoder: str, values: np.ndarray, baseline: np.ndarray | None) -> str:
    """``encoder``'s P(improvement over ``BASELINE``) from its runs' ``values`` ``[runs]`` and
    the baseline's, with its interval; empty for the baseline itself or where a side has none."""
    if encoder == BASELINE or baseline is None or not len(values) or not len(baseline):
        return ""
    return _fmt(improvement(values, baseline), 2)


def _successes(runs: list[dict[str, Any]], key: str) -> np.ndarray:
    """``[runs]``: the success rates of the runs that have ``key``."""
    return np.array([r[key] for r in runs if r.get(key) is not None], dtype=np.float64)


def _camera_shift(encoders: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Success under each camera (means over runs), and each kind's P(improvement over
    ``BASELINE``) in success under the shifted cameras, with its 95% interval."""
    shifted = {e: {c: _successes(runs, c) for c in ("success", *CAMERA_SHIFTS)}
               for e, runs in encoders.items()
               if any(r.get(c) is not None for r in runs for c in CAMERA_SHIFTS)}
    if not shifted:
        return []
    baseline = shifted.get(BASELINE, {})
    lines = ["Camera shift: success rate of agents trained with the episode's fixed camera, "
             "evaluated with it, with a camera that orbits the table every step, and with "
             "cameras outside the training ring (means over runs); then the probability that a "
             f"run of the kind succeeds more often than a run of `{BASELINE}` under each shifted "
             "camera, with its 95% interval (rliable).", "",
             "| encoder | fixed camera | moving camera | outside the ring "
             f"| P(improvement over {BASELINE}), moving | P(improvement), outside |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for encoder, success in shifted.items():
        means = [f"{values.mean():.2f}" for values in success.values()]
        versus = [_versus(encoder, success[c], baseline.get(c)) for c in CAMERA_SHIFTS]
        lines.append(f"| {encoder} | " + " | ".join(means + versus) + " |")
    return lines + [""]
