"""``gqn-rl probe``: what a GQN's scene representation holds, each figure next to baselines
measured in the same run (docs/design.md, tier 1 of judging a representation), and
``gqn-rl ceiling`` (tier 0: what a representation network could hold at best, before
pretraining).

On scenes of a dataset's test split:

- **State probes**: ridge and MLP readouts from ``r`` of one view and of K views (summed
  over random K-subsets of each scene's views, V / K of them per scene) to the family's ground
  truth (each :class:`envs.scenes.SceneFamily` declares its ``probe_targets``), R² on the
  probed scenes; baselines: the same architecture freshly initialised, raw pixels with the
  viewpoint, and two ceilings, a CNN and the GQN's own representation network, each
  supervised end to end until it stops improving. All of them learn from the same data: every
  view of up to 3,000 scenes of the dataset's train split, or, without one, the probed
  scenes' fit and validation parts (:func:`~gqn_rl.probe.scenes.readout_data`).
- **Prediction error** of a held-out view against the number of context views, next to
  copying the nearest context view and to the plain mean of the context views, on the whole
  image and on the objects' pixels (:mod:`gqn_rl.foreground`; datasets rendered by
  ``gqn-rl data generate``).
- **Surprise**: KL(posterior || prior) of a view given its own scene's ``r`` and another's.
- **Context count**: a linear classifier of how many views were summed into ``r``.
- **Embedding**: per-view ``r`` of a few scenes in 2-D (PCA), with the silhouette by scene.

Modules: :mod:`~gqn_rl.probe.scenes` (config, scenes, targets), :mod:`~gqn_rl.probe.readouts`
(the readouts and their scores), :mod:`~gqn_rl.probe.ceilings` (the supervised ceilings),
:mod:`~gqn_rl.probe.fitting` (early-stopped training), :mod:`~gqn_rl.probe.measures` (the
measurements and :func:`probe`), :mod:`~gqn_rl.probe.quick` (:class:`QuickProbe`, for
pretraining), :mod:`~gqn_rl.probe.report` (the files) and :mod:`~gqn_rl.probe.curve`
(``gqn-rl curve``: every snapshot of a run probed, R² against steps, fitted); the objects'
masks come from :mod:`gqn_rl.foreground`.
"""

from gqn_rl.probe.measures import architecture_ceilings, probe
from gqn_rl.probe.quick import QuickProbe
from gqn_rl.probe.report import (
    CEILING_FILE,
    PROBE_FILE,
    REPORT_FILE,
    report_markdown,
    run_ceilings,
    run_probe,
)
from gqn_rl.probe.scenes import ProbeConfig, fresh_like, per_view_representations, state_targets

__all__ = ["CEILING_FILE", "PROBE_FILE", "REPORT_FILE", "ProbeConfig", "QuickProbe",
           "architecture_ceilings", "fresh_like", "per_view_representations", "probe",
           "report_markdown", "run_ceilings", "run_probe", "state_targets"]
