"""The probe's cheap figures, logged while pretraining."""

from __future__ import annotations

from gqn import GQN
from gqn.data import SceneDataset
from gqn_rl.foreground import foreground_masks
from gqn_rl.probe.measures import prediction_and_surprise, ridge, score
from gqn_rl.probe.scenes import (
    ProbeConfig,
    ReadoutData,
    load_scenes,
    one_view_source,
    per_view_representations,
)


class QuickProbe:
    """The cheap figures of :func:`probe`, flat, for logging while pretraining
    (``pretrain(..., probe=QuickProbe(dataset))``): ridge R² per target from one view's
    ``r``, held-out view error with 1 and ``V - 1`` context views (whole image and objects)
    and the surprise given the scene's own views and another's. The scenes and masks are
    loaded once; a call takes seconds and leaves the global random streams untouched. Unlike
    :func:`probe`, the ridge learns from ``dataset``'s own scenes (fit, validation and test
    parts), not from a train split: that is what keeps it cheap."""

    def __init__(self, dataset: SceneDataset, config: ProbeConfig = ProbeConfig(
            scenes=200, views_per_scene=4, mlp=False, cnn=False, prediction_scenes=50,
            resamples=0)) -> None:
        self.config = config
        self.scenes = load_scenes(dataset, config)
        self.data = ReadoutData.own(self.scenes, config, "the quick probe's own scenes")
        self.rows = self.data.test_rows[:config.prediction_scenes]
        masks = foreground_masks(dataset, self.rows)
        self.masks = None if masks is None else masks[:, -1]

    def __call__(self, model: GQN) -> dict[str, float]:
        scenes, config = self.scenes, self.config
        figures: dict[str, float] = {}
        if scenes.targets is not None:
            r = per_view_representations(model, scenes.images, scenes.viewpoints)
            source = one_view_source(self.data, lambda _, rows, views: r[rows, :views])
            scored, _ = score(self.data, {"r": source}, {"ridge": ridge}, config)
            figures.update({f"r2_{target}": row["r, ridge"] for target, row in scored.items()})
        error, surprise = prediction_and_surprise(model, scenes, self.rows, self.masks, config)
        for name, values in error.items():
            if name != "K" and values:
                figures[f"mse_{name}_K1"] = values[0]
                figures[f"mse_{name}_K{error['K'][-1]}"] = values[-1]
        figures["surprise_own_scene"] = surprise["own_scene_nats"]
        figures["surprise_other_scene"] = surprise["other_scene_nats"]
        return figures
