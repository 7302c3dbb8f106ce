"""``gqn-rl curve``: how ``r``'s content grows with pretraining. Every snapshot of a run
(``snapshots/step-N.pt``, or checkpoints given by name) is probed on one fixed dataset
(:func:`~gqn_rl.probe.report.run_probe`, each into ``OUT/step-N/``, skipped when its
``probe.json`` is there: an interrupted curve resumes); the figures are gathered into
``OUT/curve.json``, ``OUT/curve.md`` and ``OUT/curve.png`` (R² against steps and CPU-hours,
with the supervised ceiling as a line), and R² against log-steps is fitted to say how many
steps reach 90% of the ceiling, with that estimate's spread."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gqn.checkpoint import load_checkpoint
from gqn.data import SceneDataset
from gqn.fileio import atomic_write, sha256, write_json
from gqn_rl.probe.report import PROBE_FILE, run_probe
from gqn_rl.probe.scenes import ProbeConfig

CURVE_FILE = "curve.json"
SETTINGS_FILE = "curve-settings.json"
"""Beside each snapshot's ``probe.json``: the snapshot's SHA-256, the data and the probe's
settings, so that a resumed curve reuses only what it would measure again."""
TARGETS = ("target_position", "hand_position")
"""The probed quantities on the curve (``arm`` families)."""
PROBE = ProbeConfig(cnn=False, fresh=False, targets=TARGETS)
"""What each snapshot's probe measures: the curve's targets, with neither the supervised
ceilings (the curve's line is one ``gqn-rl ceiling`` checkpoint) nor the fresh control (the
same at every snapshot)."""
FRACTION = 0.9
"""The fraction of the ceiling whose steps the fit estimates."""
NEVER = math.log(1e12)
"""Log-steps beyond which a fit's answer reads "never"."""
_STEP = re.compile(r"step-(\d+)\.pt$")


def snapshots(run: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of a pretraining run's ``snapshots/step-N.pt``, by step."""
    found = [(int(m.group(1)), p) for p in Path(run, "snapshots").glob("step-*.pt")
             if (m := _STEP.search(p.name))]
    if not found:
        raise ValueError(f"{run}/snapshots holds no step-N.pt checkpoints")
    return sorted(found)


def ceiling_r2(path: Path) -> dict[str, dict[str, Any]]:
    """The test R² (and interval) per target recorded by ``gqn-rl ceiling --save-checkpoint``."""
    record = load_checkpoint(path).get("ceiling")
    if not record or "r2" not in record:
        raise ValueError(f"{path} holds no ceiling record (made by gqn-rl ceiling "
                         "--save-checkpoint)")
    return {t: {"r2": record["r2"][t], "interval": list(record["r2_interval"][t])}
            for t in record["r2"]}


def _point(step: int, probed: dict[str, Any], step_seconds: float | None) -> dict[str, Any]:
    """One snapshot's row of the curve, from its ``probe.json``."""
    state, intervals = probed.get("state") or {}, probed.get("state_interval") or {}
    k = probed["surprise"]["K"]
    row: dict[str, Any] = {"step": step, "cpu_hours": None if step_seconds is None
                           else step * step_seconds / 3600}
    for target in TARGETS:
        for views, name in ((1, "1 view"), (k, f"{k} views")):
            key = f"gqn {name}, mlp"
            if key in state.get(target, {}):
                row[f"{target} {views}"] = state[target][key]
                row[f"{target} {views} interval"] = intervals.get(target, {}).get(key)
    error = probed["prediction_error"]
    at = error["K"].index(k)
    row.update(surprise_own=probed["surprise"]["own_scene_nats"],
               surprise_other=probed["surprise"]["other_scene_nats"],
               error_gqn=error["gqn"][at], error_mean_view=error["mean_view"][at], K=k)
    return row


def fit_steps(points: Sequence[tuple[int, float, float]], goal: float, goal_sd: float = 0.0,
              draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Fit R² = a + b ln(step) to ``(step, R², sd)`` points (steps >= 1; weighted by 1/sd
    where every point has a spread); the steps where the line reaches ``goal``, with a 90%
    interval from refits to points redrawn within the fit's residual spread (each point's own
    spread when there are only two) and the goal redrawn within ``goal_sd``. Infinite when the
    line does not rise; no interval (None) when nothing says how far the points could move."""
    steps, r2, sd = (np.asarray(c, float) for c in zip(*points, strict=True))
    if len(steps) < 2 or (steps < 1).any():
        raise ValueError(f"a fit needs two or more snapshots at step 1 or later, got {steps}")
    x = np.log(steps)
    weights = 1 / sd if (sd > 0).all() else None
    b, a = np.polyfit(x, r2, 1, w=weights)
    residual = float(np.std(r2 - (a + b * x), ddof=2)) if len(x) > 2 else 0.0
    noise = np.full_like(r2, residual) if len(x) > 2 else sd

    def reach(aa: float, bb: float, target: float) -> float:  # beyond NEVER steps: never
        ratio = (target - aa) / bb if bb > 0 else math.inf
        return math.exp(ratio) if ratio < NEVER else math.inf

    interval = None
    if (noise > 0).any() or goal_sd > 0:
        rng = np.random.default_rng(seed)
        draws_at = [reach(*np.polyfit(x, r2 + rng.normal(0, noise), 1, w=weights)[::-1],
                          goal + rng.normal(0, goal_sd)) for _ in range(draws)]
        interval = [float(q) if q < math.exp(NEVER) else math.inf for q in
                    np.quantile(np.minimum(draws_at, math.exp(NEVER)), [0.05, 0.95])]
    return {"intercept": float(a), "slope_per_ln_step": float(b), "residual_sd": residual,
            "goal": goal, "steps": reach(a, b, goal), "steps_90": interval}


def probe_curve(checkpoints: Sequence[tuple[int, Path]], data: Path, out: Path,
                config: ProbeConfig = PROBE, ceiling: Path | None = None,
                step_seconds: float | None = None, fit_from: int = 0,
                progress: bool = True) -> dict[str, Any]:
    """Probe each ``(step, checkpoint)`` on ``data`` (resuming), gather the curve, fit it
    against ``ceiling``'s R² (a ``gqn-rl ceiling`` checkpoint) on the snapshots from step
    ``fit_from``; writes ``out/curve.json``, ``curve.md``, ``curve.png``; returns the curve."""
    out = Path(out)
    truth = SceneDataset(data, "test").truth(0) or {}
    if not any(t in truth for t in TARGETS):
        raise ValueError(f"{data}: its scenes hold none of the curve's targets {TARGETS}")
    rows = []
    for step, path in checkpoints:
        folder = out / f"step-{step}"
        settings = json.loads(json.dumps(  # as the file holds them: tuples read as lists
            {"checkpoint_sha256": sha256(Path(path)), "data": str(Path(data).resolve()),
             "config": dataclasses.asdict(config)}))
        if (folder / PROBE_FILE).exists():
            _check_settings(folder / SETTINGS_FILE, settings)
        else:  # the settings first: a probe killed half-way is probed again, not refused
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / SETTINGS_FILE, settings)
            run_probe(path, data, folder, config, progress=progress)
        rows.append(_point(step, json.loads((folder / PROBE_FILE).read_text()), step_seconds))
    curve: dict[str, Any] = {"data": str(data), "step_seconds": step_seconds,
                             "fit_from": fit_from, "points": rows,
                             "checkpoints": {str(s): str(p) for s, p in checkpoints}}
    if ceiling is not None:
        curve["ceiling"] = {t: v for t, v in ceiling_r2(ceiling).items() if t in TARGETS}
        curve["ceiling_path"] = str(ceiling)
        curve["fits"] = {}
        for target in TARGETS:
            points = [(r["step"], r[f"{target} 1"], _sd(r[f"{target} 1 interval"]))
                      for r in rows if r["step"] >= fit_from and f"{target} 1" in r]
            if len(points) >= 2:
                best, interval = (curve["ceiling"][target][k] for k in ("r2", "interval"))
                curve["fits"][target] = fit_steps(points, FRACTION * best,
                                                  FRACTION * _sd(interval))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CURVE_FILE, curve)
    atomic_write(out / "curve.md", lambda f: f.write(curve_markdown(curve).encode()))
    _plot(curve, out / "curve.png")
    return curve


def _check_settings(path: Path, settings: dict[str, Any]) -> None:
    """Refuse to reuse a snapshot's probe made with other settings, naming them."""
    before = json.loads(path.read_text()) if path.exists() else {}
    changed = [k for k in settings if before.get(k) != settings[k]]
    if changed:
        raise ValueError(f"{path.parent}: probed with other {', '.join(changed)} (or by "
                         "another command); remove it or choose another --out")


def _sd(interval: Sequence[float] | None) -> float:
    """A 95% interval's standard deviation (its half-width over 1.96); 0 without one."""
    return 0.0 if not interval else (interval[1] - interval[0]) / (2 * 1.96)


def curve_markdown(curve: dict[str, Any]) -> str:
    """The curve as a table, with the fits' steps to ``FRACTION`` of the ceiling."""
    k = curve["points"][0]["K"]
    lines = [f"# Pretraining curve on `{curve['data']}`", "",
             f"| step | CPU-hours | target 1 view | hand 1 view | target {k} views | "
             f"hand {k} views | surprise own / other (nats) | query error GQN / mean view |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in curve["points"]:
        hours = "" if r["cpu_hours"] is None else f"{r['cpu_hours']:.2f}"
        cells = [f"{r.get(f'{t} {v}', math.nan):.3f}" for v in (1, k) for t in TARGETS]
        lines.append(f"| {r['step']} | {hours} | {' | '.join(cells)} | "
                     f"{r['surprise_own']:.1f} / {r['surprise_other']:.1f} | "
                     f"{r['error_gqn']:.4f} / {r['error_mean_view']:.4f} |")
    for target, fit in curve.get("fits", {}).items():
        ceiling = curve["ceiling"][target]["r2"]
        lines += ["", f"{target}: ceiling {ceiling:.3f}; R² = {fit['intercept']:.3f} + "
                  f"{fit['slope_per_ln_step']:.4f} ln(step) (snapshots from step "
                  f"{curve['fit_from']}) reaches {FRACTION:.0%} of it ({fit['goal']:.3f}) at "
                  f"{steps_text(fit['steps'])} steps ({interval_text(fit['steps_90'])})"]
    return "\n".join(lines) + "\n"


def steps_text(steps: float) -> str:
    """A step count in words: ``12,345``, or ``never``."""
    return "never" if not math.isfinite(steps) else f"{steps:,.0f}"


def interval_text(interval: Sequence[float] | None) -> str:
    """A fit's 90% interval in words."""
    if interval is None:
        return "no interval: the points' spread is unknown"
    return f"90% interval {steps_text(interval[0])} to {steps_text(interval[1])}"


def _plot(curve: dict[str, Any], path: Path) -> None:
    """R² from one view against steps (log axis; CPU-hours on top), ceilings as lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for target, colour in zip(TARGETS, ("tab:red", "tab:blue"), strict=True):
        rows = [r for r in curve["points"] if f"{target} 1" in r]
        ax.plot([r["step"] for r in rows], [r[f"{target} 1"] for r in rows], "o-",
                color=colour, label=f"{target}, 1 view")
        if target in curve.get("ceiling", {}):
            ax.axhline(curve["ceiling"][target]["r2"], color=colour, ls="--",
                       label=f"{target}, supervised ceiling")
    ax.set_xscale("log")
    ax.set_xlabel("pretraining steps")
    ax.set_ylabel("test R² (MLP readout)")
    if curve["step_seconds"]:
        seconds = curve["step_seconds"]
        top = ax.secondary_xaxis("top", functions=(lambda s: s * seconds / 3600,
                                                   lambda h: h * 3600 / seconds))
        top.set_xlabel("CPU-hours (one thread)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
