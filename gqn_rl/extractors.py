"""SB3 features extractors: a GQN trained by the RL loss (and optionally its own), and
SB3's pixel encoder on randomly shifted images.

``GQNExtractor`` reads the image(s) and viewpoint(s) of a Dict observation (SB3 hands images
channels-first in [0, 1]) and returns the flat representations with the other entries. With
``aux_weight > 0`` it also adds the GQN's negative ELBO on the step's views, so the generator
keeps training and the representation stays grounded in the scene (``gqn-aux``).
``ShiftAugmentedExtractor`` is the ``pixels-aug`` baseline.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    NatureCNN,
)

from gqn import GQN, GQNConfig
from gqn.config import PRECISIONS, config_from_dict
from gqn.precision import autocast, native_precision
from gqn_rl.encoders import SceneEncoder, r_shape


class _AddLossGradient(torch.autograd.Function):
    """Identity on ``features`` whose backward also sends ``weight`` into ``loss``.

    Whatever loss the RL algorithm builds on the features, its gradient becomes that of
    ``rl_loss + weight * loss``: the auxiliary term joins the same backward pass, gradient
    clipping and optimiser step, without changing the algorithm's code.
    """

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, loss: torch.Tensor,
                weight: float) -> torch.Tensor:
        ctx.weight = weight
        return features.view_as(features)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        return grad, grad.new_tensor(ctx.weight), None


class GQNExtractor(BaseFeaturesExtractor):
    """A GQN's representation network as the agent's encoder.

    Args:
        observation_space: the environment's Dict space (images HWC or CHW uint8).
        gqn_config: the GQN's config as a dict (``dataclasses.asdict``): the weights come from
            :meth:`load_gqn` or the saved agent.
        context: ``current`` or ``cameras`` (see :class:`gqn_rl.encoders.SceneEncoder`).
        freeze: keep the GQN's weights fixed.
        lr_scale: the GQN's learning rate as a fraction of the agent's (see
            :class:`ScaledAdam`).
        aux_weight: weight of the GQN's negative ELBO, in nats per scene; needs context
            cameras: their views are the context, the agent's view the query.
        aux_sigma: pixel standard deviation of the auxiliary ELBO's observation model.
        aux_batch: the ELBO is taken on the first ``aux_batch`` observations of each batch
            (SB3's minibatches are already shuffled), which bounds its cost.
        precision: arithmetic of the GQN's forward passes, as ``gqn-rl pretrain
            --precision`` (:data:`gqn.config.PRECISIONS`): ``fp32``, ``bf16`` (autocast;
            refused where the CPU would emulate it) or ``auto`` (bf16 where the CPU computes
            it natively, else fp32: a saved agent loads on either; ``native`` is its older
            name). ``fp16`` is refused: SB3's optimiser step has no gradient scaler. The
            features handed to the policy are fp32 either way.
    """

    def __init__(self, observation_space: gym.spaces.Dict, gqn_config: dict[str, Any],
                 context: str = "current", freeze: bool = False, lr_scale: float = 1.0,
                 aux_weight: float = 0.0, aux_sigma: float = 0.7, aux_batch: int = 32,
                 precision: str = "fp32") -> None:
        choices = tuple(p for p in PRECISIONS if p != "fp16")
        if precision not in (*choices, "native"):
            raise ValueError(f"GQNExtractor precision: expected one of {choices}, got "
                             f"{precision!r}" + (" (fp16 needs a gradient scaler, which SB3's "
                                                 "optimiser step has not)"
                                                 if precision == "fp16" else ""))
        precision = native_precision() if precision in ("auto", "native") else precision
        autocast("cpu", precision)  # refuses bf16 early where the CPU would emulate it
        gqn = GQN(config_from_dict(GQNConfig, gqn_config, "gqn_config"))
        scene = SceneEncoder(observation_space, r_shape(gqn), context)
        if aux_weight > 0:
            scene.require_context_views("the auxiliary GQN loss")
        sizes = [int(np.prod(s.shape)) for s in scene.observation_space.spaces.values()]
        super().__init__(observation_space, features_dim=sum(sizes))
        self.gqn, self.scene = gqn, scene
        self.gqn.requires_grad_(not freeze)
        for p in self.gqn.parameters():
            p.lr_scale = lr_scale
        self.aux_weight, self.aux_sigma = float(aux_weight), float(aux_sigma)
        self.aux_batch = int(aux_batch)
        self.precision = precision
        self.last_aux_loss: float | None = None

    def load_gqn(self, model: GQN) -> None:
        """Start from ``model``'s weights (its config must match)."""
        if model.config != self.gqn.config:
            raise ValueError(f"the GQN's config {model.config} differs from the extractor's "
                             f"{self.gqn.config}")
        self.gqn.load_state_dict(model.state_dict())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._arithmetic(observations):
            representations = self.scene.represent(self.gqn, observations)
        representations = self.scene.flatten({k: v.float() for k, v in representations.items()})
        parts = [representations[k] if k in representations else observations[k].flatten(1)
                 for k in self.scene.observation_space.spaces]
        features = torch.cat(parts, dim=1)
        if self.aux_weight > 0 and self.training and torch.is_grad_enabled() and any(
                p.requires_grad for p in self.gqn.parameters()):  # else no step would use it
            with self._arithmetic(observations):
                loss = self.aux_loss(observations).float()
            self.last_aux_loss = float(loss.detach())
            features = _AddLossGradient.apply(features, loss, self.aux_weight)
        return features

    def aux_loss(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """Negative ELBO (nats per scene) of the agent's view given the context cameras',
        averaged over the first ``aux_batch`` observations."""
        observations = {k: v[:self.aux_batch] for k, v in observations.items()}
        return self.gqn(*self.scene.context_and_query(observations), sigma=self.aux_sigma).loss

    def _arithmetic(self, observations: dict[str, torch.Tensor]) -> Any:
        """The GQN's forward pass in ``precision`` on the observations' device."""
        return autocast(next(iter(observations.values())).device, self.precision)


class ScaledAdam(torch.optim.Adam):
    """Adam that steps each parameter with ``lr * p.lr_scale`` (default 1).

    SB3 sets one learning rate on every parameter group; this keeps a per-parameter fraction
    of it, which :class:`GQNExtractor` uses for its ``lr_scale``.
    """

    def __init__(self, params: Any, lr: float = 1e-3, **kwargs: Any) -> None:
        groups: dict[float, list[torch.nn.Parameter]] = {}
        for p in params:
            groups.setdefault(float(getattr(p, "lr_scale", 1.0)), []).append(p)
        super().__init__([{"params": ps, "lr_scale": scale} for scale, ps in groups.items()],
                         lr=lr, **kwargs)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        base = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            group["lr"] = group["lr"] * group["lr_scale"]
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, base, strict=True):
                group["lr"] = lr


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image ``[N, C, H, W]`` padded by ``pad`` pixels (edges repeated) and cropped back
    to ``H x W`` at its own random offset: shifts of up to ``pad`` pixels each way."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    width = w + 2 * pad
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), device=images.device)
    rows = (dy + torch.arange(h, device=images.device))[:, :, None]  # [N, H, 1]
    cols = (dx + torch.arange(w, device=images.device))[:, None, :]  # [N, 1, W]
    index = (rows * width + cols).reshape(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).reshape(n, c, h, w)  # one gather: 5x faster


class ShiftAugmentedExtractor(CombinedExtractor):
    """SB3's default Dict encoder (a NatureCNN per image, the vectors flattened) that sees
    randomly shifted images while the agent trains, and unshifted ones when it acts: the
    random-shift augmentation of DrQ, which Hansen et al. (2022) found competitive with
    pretrained visual encoders (the ``pixels-aug`` baseline)."""

    def __init__(self, observation_space: gym.spaces.Dict, cnn_output_dim: int = 256,
                 normalized_image: bool = False, pad: int = 4) -> None:
        super().__init__(observation_space, cnn_output_dim, normalized_image)
        self.pad = int(pad)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.training:
            observations = {k: random_shift(v.float(), self.pad)
                            if isinstance(self.extractors[k], NatureCNN) else v
                            for k, v in observations.items()}
        return super().forward(observations)
