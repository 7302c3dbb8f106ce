"""SB3's SAC with the same updates for less CPU: the project's ``sac`` (``ALGORITHM_CLASSES``),
and the option of DrQ's encoder for agents that read images (``critic_encoder``, below).

Two changes that leave the updates as SB3 makes them (fused Adam rounds differently):

- **The actor's update does not differentiate the critic's weights.** SB3 builds the actor's
  loss on the critic's Q-values with the critic trainable, so the backward pass runs through
  the critic's encoder (a CNN, or a GQN with its auxiliary ELBO) into gradients that the
  critic's next ``zero_grad`` throws away. Here the critic is frozen from its own optimiser
  step until the actor's: the actor's gradient (through the actions) is the same, and the
  critic's encoder is evaluated without a graph (DrQ and CURL detach it there too).
- **Adam's fused kernel** (``optimizer_kwargs`` ``fused=True`` unless the run's settings name
  it): the same update in one pass over each parameter group, not a dozen kernels a tensor.

``gqn-rl speed sac`` times a step of each class per encoder kind
(docs/benchmarks.md#sac-training-steps-gqn-rl-speed-sac).

**DrQ's encoder** (``policy_kwargs={"critic_encoder": True}``): SB3's SAC gives the actor and
the critic a features extractor each, and the actor's is trained by the actor's loss alone.
SAC-AE (Yarats et al. 2019) found that the actor's gradient does not teach an image encoder,
and DrQ and its successors share one encoder, trained by the critic's loss, that the actor
reads without a gradient. With ``critic_encoder`` the policy is built that way (SB3's own
``share_features_extractor`` trains the shared encoder by the actor's loss instead); a GQN
in the policy then takes its auxiliary ELBO once an update, not twice.
"""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3 import SAC as _SB3SAC
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import Actor, CnnPolicy, MlpPolicy, MultiInputPolicy, SACPolicy


class _ActorOnCriticEncoder(Actor):
    """SB3's actor reading the critic's features extractor without training it: its loss
    trains the layers after the features only."""

    def extract_features(self, obs: PyTorchObs,
                         features_extractor: BaseFeaturesExtractor) -> torch.Tensor:
        with torch.no_grad():
            return super().extract_features(obs, features_extractor)


class _CriticEncoder(SACPolicy):
    """A SAC policy that can give its actor the critic's features extractor (``critic_encoder``,
    module docstring); without it, SB3's policy as it is."""

    def __init__(self, *args: Any, critic_encoder: bool = False, **kwargs: Any) -> None:
        self.critic_encoder = bool(critic_encoder)  # read by _build, which SB3's __init__ calls
        if self.critic_encoder and kwargs.get("share_features_extractor"):
            raise ValueError("policy_kwargs: critic_encoder shares the critic's encoder with the "
                             "actor already; share_features_extractor (the actor's, SB3) "
                             "cannot be set with it")
        super().__init__(*args, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "critic_encoder": self.critic_encoder}

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return (_ActorOnCriticEncoder if self.critic_encoder else Actor)(**kwargs).to(self.device)

    def _build(self, lr_schedule: Schedule) -> None:
        if not self.critic_encoder:
            return super()._build(lr_schedule)
        self.critic = self.make_critic()
        self.actor = self.make_actor(features_extractor=self.critic.features_extractor)
        self.actor.optimizer = self.optimizer_class(
            [p for name, p in self.actor.named_parameters()
             if not name.startswith("features_extractor.")],
            lr=lr_schedule(1), **self.optimizer_kwargs)
        self.critic.optimizer = self.optimizer_class(self.critic.parameters(), lr=lr_schedule(1),
                                                     **self.optimizer_kwargs)
        self.critic_target = self.make_critic()
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.set_training_mode(False)


class _Mlp(_CriticEncoder, MlpPolicy):
    pass


class _Cnn(_CriticEncoder, CnnPolicy):
    pass


class _MultiInput(_CriticEncoder, MultiInputPolicy):
    pass


class SAC(_SB3SAC):
    """:class:`stable_baselines3.SAC` whose actor update skips the critic's weight gradients,
    with fused Adam, and the option of DrQ's encoder (module docstring); saved agents load
    into either class."""

    policy_aliases = {"MlpPolicy": _Mlp, "CnnPolicy": _Cnn, "MultiInputPolicy": _MultiInput}

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
