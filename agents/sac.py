"""SB3's SAC with the same updates for less CPU: the project's ``sac`` (``ALGORITHM_CLASSES``).

Two changes that leave the updates as SB3 makes them (fused Adam rounds differently):

- **The actor's update does not differentiate the critic's weights.** SB3 builds the actor's
  loss on the critic's Q-values with the critic trainable, so the backward pass runs through
  the critic's encoder (a CNN, or a GQN with its auxiliary ELBO) into gradients that the
  critic's next ``zero_grad`` throws away. Here the critic is frozen from its own optimiser
  step until the actor's: the actor's gradient (through the actions) is the same, and the
  critic's encoder is evaluated without a graph (DrQ and CURL detach it there too).
- **Adam's fused kernel** (``optimizer_kwargs`` ``fused=True`` unless the run's settings name
  it): the same update in one pass over each parameter group, not a dozen kernels a tensor.

On ArmReach-v1 they make a training step 1.2-1.4x faster: ``gqn-aux``'s 1.73 s -> 1.21 s,
``gqn-frozen``'s 104 -> 76 ms, ``pixels-aug``'s 135 -> 105 ms (``gqn-rl speed sac``,
docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3 import SAC as _SB3SAC


class SAC(_SB3SAC):
    """:class:`stable_baselines3.SAC` whose actor update skips the critic's weight gradients,
    with fused Adam (module docstring); saved agents load into either class."""

    def _setup_model(self) -> None:
        optimizer_kwargs = dict(self.policy_kwargs.get("optimizer_kwargs") or {})
        optimizer_kwargs.setdefault("fused", True)
        self.policy_kwargs = {**self.policy_kwargs, "optimizer_kwargs": optimizer_kwargs}
        super()._setup_model()
        self._trainable: list[tuple[torch.nn.Parameter, bool]] = []
        self.critic.optimizer.register_step_post_hook(self._freeze_critic)
        self.actor.optimizer.register_step_post_hook(self._thaw_critic)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_trainable"]

    def _freeze_critic(self, *_: Any) -> None:
        """After the critic's step: its weights need no gradient until the actor's step. (A
        subclass's ``step`` that calls Adam's runs the hooks twice: the second call is idle.)"""
        if self._trainable:
            return
        self._trainable = [(p, p.requires_grad) for p in self.critic.parameters()]
        self.critic.requires_grad_(False)

    def _thaw_critic(self, *_: Any) -> None:
        """After the actor's step: the critic's weights train again as they did before."""
        for parameter, trainable in self._trainable:
            parameter.requires_grad_(trainable)
        self._trainable = []
