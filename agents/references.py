"""Where each encoder of a grid stands between its references, by normalised IQM: its share of
the perfect encoder's score, and its place between ``pixels-aug`` and its downstream ceiling
(:mod:`agents.report` adds these lines to an environment's section)."""

from __future__ import annotations

from agents.benchmark import ORACLE, REFERENCE

BASELINE = "pixels-aug"
"""The encoder every other is compared with (probability of improvement, step ratios): the
strongest pixel baseline of the grids (random-shift augmentation), the comparison to beat."""
PERFECT = "perfect-encoder"
"""The encoder kind given what a perfect scene encoder could give."""
Estimates = dict[str, tuple[float, float, float] | None]
"""Normalised IQM with its interval (point, low, high) per encoder; None where undefined."""


def perfect_reference(estimates: Estimates) -> list[str]:
    """How far each encoder is from a perfect one, apart from how hard the task is from
    perfect scene knowledge (when the grid has ``perfect-encoder`` runs)."""
    perfect = estimates.get(PERFECT)
    if perfect is None:
        return []
    source = (f"From perfect scene knowledge (`{PERFECT}`: the scene's true state without the "
              "oracle's hand-crafted features)")
    if perfect[0] <= 0:
        return [f"{source} the agent does not pass the random policy in this budget "
                f"({perfect[0]:.1f} of the oracle's 100): no encoder's share of it is defined.",
                ""]
    shares = ", ".join(f"`{e}` {v[0] / perfect[0]:.2f}" for e, v in estimates.items()
                       if v is not None and e not in (PERFECT, ORACLE, REFERENCE, "scripted"))
    return [f"{source} the task reaches {perfect[0]:.1f} of the oracle's 100 in this budget: "
            "that much is the task's difficulty. Each encoder's normalised score as a share of "
            f"the perfect encoder's: {shares or 'none'}.", ""]


DOWNSTREAM_CEILINGS = {"gqn-ceiling": "", "gqn-ceiling-cameras": "cameras"}
"""The downstream ceilings (the frozen GQN on its architecture's supervised network), by the
word that names the GQN kinds each is the ceiling of (``cameras``: the kinds that sum the
context cameras' views; the empty word: the others)."""


def ceiling_places(estimates: Estimates) -> list[str]:
    """Each GQN kind's place between ``pixels-aug`` (0) and its downstream ceiling (1): how
    much of what this architecture could buy the agent its pretraining bought (when the grid
    has both)."""
    base = estimates.get(BASELINE)
    lines = []
    for ceiling, word in DOWNSTREAM_CEILINGS.items():
        top = estimates.get(ceiling)
        if base is None or top is None:
            continue
        others = [w for w in DOWNSTREAM_CEILINGS.values() if w]
        kinds = [e for e in estimates if e.startswith("gqn-") and not e.startswith("gqn-ceiling")
                 and (word in e if word else not any(w in e for w in others))
                 and estimates[e] is not None]
        gap = top[0] - base[0]
        if gap <= 0:
            lines += [f"`{ceiling}` ({top[0]:.1f}) is not above `{BASELINE}` ({base[0]:.1f}): "
                      "no GQN kind's place between them is defined.", ""]
            continue
        places = ", ".join(f"`{e}` {(estimates[e][0] - base[0]) / gap:.2f}" for e in kinds)
        lines += [f"Place between `{BASELINE}` (0, {base[0]:.1f}) and the downstream ceiling "
                  f"`{ceiling}` (1, {top[0]:.1f}), by IQM: {places or 'no GQN kind'}.", ""]
    return lines
