"""The Generative Query Network (Eslami et al., Science 2018)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gqn.config import GQNConfig
from gqn.cores import ConvLSTMCore
from gqn.losses import bits_per_dim, gaussian_kl, gaussian_nll
from gqn.representation import make_representation
from gqn.viewpoint import VIEWPOINT_DIM


@dataclass
class GQNOutput:
    """What one training forward pass returns."""

    loss: torch.Tensor
    """Scalar: mean over the batch of the negative ELBO, nats per scene."""
    nll: torch.Tensor
    """``[B]`` reconstruction negative log-likelihood, nats."""
    kl: torch.Tensor
    """``[B]`` KL between posterior and prior summed over the L steps, nats."""
    kl_per_step: torch.Tensor
    """``[B, L]``."""
    mse: torch.Tensor
    """``[B]`` mean squared error of the predicted image, per pixel and channel."""
    bits_per_dim: torch.Tensor
    """``[B]`` negative ELBO in bits per dimension of the 8-bit image."""
    mean: torch.Tensor
    """``[B, 3, H, W]`` predicted image (observation mean), in [0, 1]."""
    prior_mean: torch.Tensor | None = None
    """``[B, 3, H, W]`` the image rendered with latents from the prior (``prior_pass``)."""


@dataclass
class InferenceTrace:
    """Per-step record of the inference core reading a query view against ``r``."""

    hidden: torch.Tensor
    """``[B, L, h_dim, s, s]`` inference-core hidden state after each step."""
    posterior_mean: torch.Tensor
    """``[B, L, z_dim, s, s]``."""
    posterior_std: torch.Tensor
    """``[B, L, z_dim, s, s]``."""
    prior_mean: torch.Tensor
    """``[B, L, z_dim, s, s]``."""
    prior_std: torch.Tensor
    """``[B, L, z_dim, s, s]``."""
    kl: torch.Tensor
    """``[B, L]`` KL(posterior || prior) of each step, nats (a surprise signal)."""
    mean: torch.Tensor
    """``[B, 3, H, W]`` reconstruction of the query view from the posterior samples."""


def _cat(*states: torch.Tensor | None) -> torch.Tensor | None:
    """Concatenate states along channels; trailing None (zero) states are left out."""
    present = [state for state in states if state is not None]
    return torch.cat(present, 1) if present else None


@dataclass
class _Rollout:
    mean: torch.Tensor                           # [B, 3, H, W] observation mean
    kl: torch.Tensor | None                      # [B, L], with a query image
    trace: dict[str, list[torch.Tensor]] | None  # per-step tensors, when asked for


class GQN(nn.Module):
    """Representation network, generation core and inference core of the paper.

    Images are float in [0, 1] (uint8 is accepted and scaled), CHW; viewpoints are the 7-D
    vectors of :func:`gqn.viewpoint.pose_to_viewpoint`.

    ``scene_family`` names the scene family of the data its weights were trained on, when
    known (a model loaded from a checkpoint that records it): the GQN wrappers refuse an
    environment of another family, as they refuse such a checkpoint path.
    """

    scene_family: str | None
    """Scene family of the data the weights were trained on; None: not known (fresh)."""

    def __init__(self, config: GQNConfig) -> None:
        super().__init__()
        self.config = config
        self.scene_family = None
        c = config
        image_channels = 3 * c.scale**2  # the query image, space-to-depth down-sampled
        spatial_r = c.r_dim if c.r_size > 1 else 0
        self.representation = make_representation(c)
        tiled = c.r_dim - spatial_r + VIEWPOINT_DIM  # channels given as vectors: v (and pooled r)
        # Generator core: reads [z, h_g] per step; r and the query viewpoint are constant.
        # Inference core: reads [h_e, h_g] per step; the query image, r, viewpoint constant.
        # Unshared first cores only ever see zero states, so they carry no weights for them.
        def state_channels(core: int, channels: int) -> int:
            return channels if core > 0 or c.shared_core else 0

        self.generation_cores = nn.ModuleList(
            ConvLSTMCore(c.z_dim + state_channels(i, c.h_dim), spatial_r, tiled, c.h_dim,
                         c.kernel_size) for i in range(c.n_cores))
        self.inference_cores = nn.ModuleList(
            ConvLSTMCore(state_channels(i, 2 * c.h_dim), image_channels + spatial_r, tiled,
                         c.h_dim, c.kernel_size) for i in range(c.n_cores))
        # The generator's skip connection: its hidden state, upsampled, adds to the canvas.
        self.canvas_updates = nn.ModuleList(
            nn.ConvTranspose2d(c.h_dim, c.h_dim, kernel_size=c.scale, stride=c.scale, bias=False)
            for _ in range(c.n_cores))
        padding = c.kernel_size // 2
        self.prior_density = nn.Conv2d(c.h_dim, 2 * c.z_dim, c.kernel_size, padding=padding)
        self.posterior_density = nn.Conv2d(c.h_dim, 2 * c.z_dim, c.kernel_size, padding=padding)
        self.observation_density = nn.Conv2d(c.h_dim, 3, kernel_size=1)

    # -- public interface -------------------------------------------------------------------

    def forward(self, context_x: torch.Tensor, context_v: torch.Tensor, query_x: torch.Tensor,
                query_v: torch.Tensor, sigma: float | torch.Tensor = 2.0,
                prior_pass: bool = False) -> GQNOutput:
        """Negative ELBO of the query view given the context, sampling from the posterior.

        Args:
            context_x: ``[B, K, 3, H, W]``; context_v: ``[B, K, 7]``.
            query_x: ``[B, 3, H, W]``; query_v: ``[B, 7]``.
            sigma: pixel standard deviation of the observation model.
            prior_pass: also render the query with latents from the prior
                (``GQNOutput.prior_mean``, with gradients).
        """
        if not bool((torch.as_tensor(sigma) > 0).all()):
            raise ValueError(f"sigma (the pixel standard deviation) must be > 0, got {sigma}")
        r = self.represent(context_x, context_v)
        self._check_viewpoint(query_v, len(r))  # before query_x: a mismatch names query_v
        query_x = self._check_query_image(query_x, len(r))
        rollout = self._rollout(r, query_v, query_x)
        mean = rollout.mean                                                 # [B, 3, H, W]
        nll = gaussian_nll(query_x, mean, sigma)
        kl = rollout.kl.sum(1)
        dims = query_x[0].numel()
        return GQNOutput(loss=(nll + kl).mean(), nll=nll, kl=kl, kl_per_step=rollout.kl,
                         mse=(query_x - mean).pow(2).flatten(1).mean(1),
                         bits_per_dim=bits_per_dim(nll + kl, dims), mean=mean,
                         prior_mean=self._rollout(r, query_v).mean if prior_pass else None)

    def represent(self, context_x: torch.Tensor, context_v: torch.Tensor) -> torch.Tensor:
        """Scene representation: the sum of per-view representations.

        ``[B, K, 3, H, W], [B, K, 7] -> [B, r_dim, h, w]`` (1x1 for pool and pyramid, H/4 for
        tower).
        """
        x, v = self._check_context(context_x, context_v)
        b, k = v.shape[:2]
        per_view = self.representation(x.flatten(0, 1), v.flatten(0, 1))   # [B K, r, h, w]
        return per_view.unflatten(0, (b, k)).sum(1)

    @torch.no_grad()
    def generate(self, context_x: torch.Tensor, context_v: torch.Tensor,
                 query_v: torch.Tensor) -> torch.Tensor:
        """Render the scene at ``query_v [B, 7]`` with latents from the prior: ``[B, 3, H, W]``."""
        r = self.represent(context_x, context_v)
        return self._rollout(r, query_v).mean

    @torch.no_grad()
    def reconstruct(self, context_x: torch.Tensor, context_v: torch.Tensor,
                    query_x: torch.Tensor, query_v: torch.Tensor) -> torch.Tensor:
        """Reconstruct the query view, sampling latents from the posterior: ``[B, 3, H, W]``."""
        return self.infer(self.represent(context_x, context_v), query_x, query_v).mean

    def infer(self, r: torch.Tensor, query_x: torch.Tensor, query_v: torch.Tensor
              ) -> InferenceTrace:
        """Run the inference core on one view against a representation.

        Args:
            r: ``[B, r_dim, h, w]`` as returned by :meth:`represent`.
            query_x: ``[B, 3, H, W]``; query_v: ``[B, 7]``.

        Returns:
            the per-step states, posterior and prior parameters and KL (:class:`InferenceTrace`).
        """
        self._check_representation(r)
        query_x = self._check_query_image(query_x, len(r))
        rollout = self._rollout(r, query_v, query_x, keep_trace=True)
        steps = {name: torch.stack(values, dim=1) for name, values in rollout.trace.items()}
        return InferenceTrace(kl=rollout.kl, mean=rollout.mean, **steps)

    # -- the one core loop shared by training, reconstruction, generation and inference ------

    def _rollout(self, r: torch.Tensor, query_v: torch.Tensor,
                 query_x: torch.Tensor | None = None, keep_trace: bool = False) -> _Rollout:
        """Run the L steps. With ``query_x [B, 3, H, W]`` latents come from the posterior
        (and per-step KL is returned), without it from the prior.

        States start at zero and are kept as None until first written, so the first step
        skips the convolutions of zero inputs (exactly: they would only add the biases).
        """
        c = self.config
        b, s = len(r), c.latent_size
        query_v = self._check_viewpoint(query_v, b)
        spatial_r = r if c.r_size > 1 else None
        tiled = query_v if spatial_r is not None else torch.cat([r.flatten(1), query_v], 1)
        gen_gates = [core.constant_gates(spatial_r, tiled, s) for core in self.generation_cores]
        if query_x is not None:
            image = F.pixel_unshuffle(query_x, c.scale)                        # [B, 48, s, s]
            spatial = image if spatial_r is None else torch.cat([image, spatial_r], 1)
            inf_gates = [core.constant_gates(spatial, tiled, s) for core in self.inference_cores]
        h_g = c_g = h_e = c_e = None
        hidden_g, kls = [], []
        trace = {name: [] for name in InferenceTrace.__dataclass_fields__
                 if name not in ("kl", "mean")} if keep_trace else None

        for step in range(c.L):
            core = step % c.n_cores
            if h_g is None:
                prior = self.prior_density.bias[None, :, None, None].expand(b, -1, s, s)
            else:
                prior = self.prior_density(h_g)
            p_mean, p_std = self._gaussian(prior)
            if query_x is None:
                z = p_mean + p_std * torch.randn_like(p_std)
            else:
                h_e, c_e = self.inference_cores[core](_cat(h_e, h_g), inf_gates[core], c_e)
                q_mean, q_std = self._gaussian(self.posterior_density(h_e))
                z = q_mean + q_std * torch.randn_like(q_std)
                kls.append(gaussian_kl(q_mean, q_std, p_mean, p_std).flatten(1).sum(1))
                if trace is not None:
                    for name, value in (("hidden", h_e), ("posterior_mean", q_mean),
                                        ("posterior_std", q_std), ("prior_mean", p_mean),
                                        ("prior_std", p_std)):
                        trace[name].append(value)
            h_g, c_g = self.generation_cores[core](_cat(z, h_g), gen_gates[core], c_g)
            hidden_g.append(h_g)

        kl = torch.stack(kls, dim=1) if query_x is not None else None
        return _Rollout(mean=self._observe(self._canvas(hidden_g)), kl=kl, trace=trace)

    def _canvas(self, hidden_g: list[torch.Tensor]) -> torch.Tensor:
        """The skip-connection canvas ``u_L = sum_l upsample_l(h^g_l)``: ``[B, h, H, W]``.

        The upsampling is linear, so the sum is one transposed convolution: of the summed
        states with a shared core, of the stacked states with one core per step.
        """
        if self.config.shared_core:
            return self.canvas_updates[0](torch.stack(hidden_g).sum(0))
        weight = torch.cat([update.weight for update in self.canvas_updates])  # [L h, h, 4, 4]
        return F.conv_transpose2d(torch.cat(hidden_g, 1), weight, stride=self.config.scale)

    @staticmethod
    def _gaussian(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split density-network output ``[B, 2 z, s, s]`` into mean and positive std."""
        mean, raw_std = params.chunk(2, dim=1)
        return mean, F.softplus(raw_std) + 1e-4

    def _observe(self, canvas: torch.Tensor) -> torch.Tensor:
        """Observation mean in [0, 1] from the canvas: ``[B, h, H, W] -> [B, 3, H, W]``."""
        return torch.sigmoid(self.observation_density(canvas))

    # -- input checks ------------------------------------------------------------------------

    def _check_images(self, name: str, x: torch.Tensor, rank: int, layout: str) -> torch.Tensor:
        """Check rank, channels and size of images; return them as float in [0, 1]."""
        size = self.config.image_size
        if x.dim() != rank:
            raise ValueError(f"{name} must have rank {rank} {layout}, got shape {tuple(x.shape)}")
        if x.shape[-3] != 3:
            raise ValueError(f"{name} must have 3 channels at dim {rank - 3} {layout}, "
                             f"got shape {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (size, size):
            raise ValueError(f"{name} must be {size}x{size} (GQNConfig.image_size), "
                             f"got shape {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError(f"{name} is empty: shape {tuple(x.shape)} {layout}")
        if x.dtype == torch.uint8:
            return x.float() / 255.0
        if not x.is_floating_point():
            raise ValueError(f"{name} must be float in [0, 1] or uint8, got dtype {x.dtype}")
        x = self._check_finite(name, x)  # also in the model's dtype, e.g. from float64
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 1:
            raise ValueError(f"{name} must be float in [0, 1] or uint8, got values in "
                             f"[{low:g}, {high:g}]" + (" (divide 8-bit images by 255)"
                                                        if high > 1.5 else ""))
        return x

    def _check_viewpoint(self, v: torch.Tensor, batch: int, name: str = "query_v") -> torch.Tensor:
        if v.dim() != 2 or v.shape != (batch, VIEWPOINT_DIM):
            raise ValueError(f"{name} must have shape [B={batch}, {VIEWPOINT_DIM}], "
                             f"got {tuple(v.shape)}")
        return self._check_finite(name, v)

    def _check_finite(self, name: str, v: torch.Tensor) -> torch.Tensor:
        """``v`` in the model's dtype; raises ValueError if it holds NaN or infinity."""
        if not v.is_floating_point():
            raise ValueError(f"{name} must be a float tensor, got dtype {v.dtype}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} holds NaN or infinite values")
        return v.to(self.observation_density.weight.dtype)

    def _check_query_image(self, query_x: torch.Tensor, batch: int) -> torch.Tensor:
        query_x = self._check_images("query_x", query_x, 4, "[B, 3, H, W]")
        if len(query_x) != batch:
            raise ValueError(f"query_x has batch size {len(query_x)}, expected {batch}")
        return query_x

    def _check_context(self, context_x: torch.Tensor, context_v: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        context_x = self._check_images("context_x", context_x, 5, "[B, K, 3, H, W]")
        if context_v.dim() != 3 or context_v.shape[-1] != VIEWPOINT_DIM:
            raise ValueError(f"context_v must have shape [B, K, {VIEWPOINT_DIM}], "
                             f"got {tuple(context_v.shape)}")
        if context_v.shape[:2] != context_x.shape[:2]:
            raise ValueError(f"context_x [B, K] = {tuple(context_x.shape[:2])} does not match "
                             f"context_v [B, K] = {tuple(context_v.shape[:2])}")
        return context_x, self._check_finite("context_v", context_v)

    def _check_representation(self, r: torch.Tensor) -> None:
        c = self.config
        expected = (c.r_dim, c.r_size, c.r_size)
        if r.dim() != 4 or tuple(r.shape[1:]) != expected:
            raise ValueError(f"r must have shape [B, {c.r_dim}, {c.r_size}, {c.r_size}], "
                             f"got {tuple(r.shape)}")
