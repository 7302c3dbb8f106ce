import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from gqn import GQN, GQNConfig
from gqn.cores import ConvLSTMCore, tiled_conv2d
from gqn.losses import gaussian_kl, gaussian_nll

SIZE, B, K = 16, 2, 3
VARIANTS = list(itertools.product(["pool", "tower", "pyramid", "spatial", "keypoints", "world"],
                                  [True, False]))


def tiny_config(representation: str = "pool", shared_core: bool = True, **kw) -> GQNConfig:
    values = dict(image_size=SIZE, representation=representation, r_dim=16, h_dim=8, z_dim=4,
                  L=3, shared_core=shared_core)
    return GQNConfig(**{**values, **kw})


def inputs(batch: int = B, context: int = K, size: int = SIZE):
    return (torch.rand(batch, context, 3, size, size), torch.randn(batch, context, 7),
            torch.rand(batch, 3, size, size), torch.randn(batch, 7))


@pytest.mark.parametrize(("representation", "shared"), VARIANTS)
def test_shapes_of_every_variant(representation: str, shared: bool) -> None:
    config = tiny_config(representation, shared)
    model = GQN(config)
    cx, cv, qx, qv = inputs()
    out = model(cx, cv, qx, qv, sigma=1.0)
    assert out.loss.shape == ()
    assert out.nll.shape == out.kl.shape == out.mse.shape == out.bits_per_dim.shape == (B,)
    assert out.kl_per_step.shape == (B, config.L)
    assert out.mean.shape == (B, 3, SIZE, SIZE)
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.loss, (out.nll + out.kl).mean())
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"

    r = model.represent(cx, cv)
    assert r.shape == (B, 16, config.r_size, config.r_size)
    assert config.r_size == (SIZE // 4 if representation in ("tower", "spatial") else 1)
    assert model.generate(cx, cv, qv).shape == (B, 3, SIZE, SIZE)
    assert model.reconstruct(cx, cv, qx, qv).shape == (B, 3, SIZE, SIZE)
    trace = model.infer(r, qx, qv)
    s = SIZE // 4
    assert trace.hidden.shape == (B, config.L, 8, s, s)
    for name in ("posterior_mean", "posterior_std", "prior_mean", "prior_std"):
        assert getattr(trace, name).shape == (B, config.L, 4, s, s)
    assert trace.kl.shape == (B, config.L)
    assert (trace.kl >= 0).all()
    assert (trace.posterior_std > 0).all()


def test_unshared_cores_are_distinct_modules() -> None:
    model = GQN(tiny_config("tower", shared_core=False))
    assert len(model.generation_cores) == len(model.inference_cores) == 3
    assert len(GQN(tiny_config("tower", shared_core=True)).generation_cores) == 1


def test_representation_is_sum_over_views() -> None:
    model = GQN(tiny_config("tower"))
    cx, cv, _, _ = inputs()
    whole = model.represent(cx, cv)
    parts = sum(model.represent(cx[:, i:i + 1], cv[:, i:i + 1]) for i in range(K))
    torch.testing.assert_close(whole, parts, rtol=1e-5, atol=1e-5)


def test_kl_matches_torch_distributions() -> None:
    q_mean, p_mean = torch.randn(5, 4, 3), torch.randn(5, 4, 3)
    q_std, p_std = torch.rand(5, 4, 3) + 0.1, torch.rand(5, 4, 3) + 0.1
    expected = kl_divergence(Normal(q_mean, q_std), Normal(p_mean, p_std))
    torch.testing.assert_close(gaussian_kl(q_mean, q_std, p_mean, p_std), expected)


def test_nll_matches_torch_distributions() -> None:
    x, mean = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    expected = -Normal(mean, 0.7).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_nll(x, mean, 0.7), expected)


def test_model_kl_is_kl_of_its_posterior_and_prior() -> None:
    model = GQN(tiny_config("tower", shared_core=False))
    cx, cv, qx, qv = inputs()
    trace = model.infer(model.represent(cx, cv), qx, qv)
    expected = kl_divergence(Normal(trace.posterior_mean, trace.posterior_std),
                             Normal(trace.prior_mean, trace.prior_std)).flatten(2).sum(2)
    torch.testing.assert_close(trace.kl, expected)


def test_tiled_conv_equals_conv_of_tiled_input() -> None:
    vector, weight = torch.randn(3, 6, dtype=torch.float64), torch.randn(10, 6, 5, 5,
                                                                          dtype=torch.float64)
    tiled = vector[:, :, None, None].expand(-1, -1, 7, 7)
    torch.testing.assert_close(tiled_conv2d(vector, weight, 7), F.conv2d(tiled, weight, padding=2))


def test_split_core_equals_one_convolution_over_all_inputs() -> None:
    """The per-step / constant split is exactly the ConvLSTM over concatenated inputs."""
    core = ConvLSTMCore(step_channels=5, spatial_channels=4, tiled_channels=3, h_dim=6,
                        kernel_size=5).double()
    step, spatial = torch.randn(2, 5, 8, 8, dtype=torch.float64), torch.randn(
        2, 4, 8, 8, dtype=torch.float64)
    tiled, cell = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 6, 8, 8,
                                                                       dtype=torch.float64)
    hidden, new_cell = core(step, core.constant_gates(spatial, tiled, 8), cell)

    weight = torch.cat([core.step_conv.weight, core.spatial_conv.weight, core.tiled_weight], 1)
    everything = torch.cat([step, spatial, tiled[:, :, None, None].expand(-1, -1, 8, 8)], 1)
    i, f, o, g = F.conv2d(everything, weight, core.bias, padding=2).chunk(4, 1)
    expected_cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(new_cell, expected_cell)
    torch.testing.assert_close(hidden, torch.sigmoid(o) * torch.tanh(expected_cell))


def test_uint8_images_equal_float_images() -> None:
    model = GQN(tiny_config("tower"))
    cx = torch.randint(0, 256, (B, K, 3, SIZE, SIZE), dtype=torch.uint8)
    cv = torch.randn(B, K, 7)
    torch.testing.assert_close(model.represent(cx, cv), model.represent(cx.float() / 255, cv))


def test_generation_samples_from_the_prior() -> None:
    model = GQN(tiny_config("pool", shared_core=False))
    cx, cv, _, qv = inputs()
    first, second = model.generate(cx, cv, qv), model.generate(cx, cv, qv)
    assert not torch.equal(first, second), "two prior samples should differ"
    torch.manual_seed(1)
    again = model.generate(cx, cv, qv)
    torch.manual_seed(1)
    torch.testing.assert_close(model.generate(cx, cv, qv), again)


def test_loss_falls_on_a_tiny_multi_view_problem() -> None:
    """Scenes are one random colour seen from every viewpoint: the context tells the colour."""
    torch.manual_seed(0)
    model = GQN(tiny_config("pool", image_size=8, r_dim=16, h_dim=16, z_dim=2, L=2))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)

    def batch(n: int = 16):
        colour = torch.rand(n, 1, 3, 1, 1)
        images = colour.expand(n, 3, 3, 8, 8).clone()
        return images[:, :2], torch.randn(n, 2, 7), images[:, 2], torch.randn(n, 7)

    probe = batch(32)
    mse_before = model(*probe, sigma=0.1).mse.mean().item()
    losses = []
    for _ in range(150):
        loss = model(*batch(), sigma=0.1).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.5 * abs(first), (first, last)
    assert model(*probe, sigma=0.1).mse.mean() < 0.5 * mse_before


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, cx, cv, qx, qv: m(cx[0], cv, qx, qv), r"context_x must have rank 5"),
        (lambda m, cx, cv, qx, qv: m(cx[:, :, :1], cv, qx, qv), r"context_x must have 3 channels"),
        (lambda m, cx, cv, qx, qv: m(cx[..., :8, :8], cv, qx, qv), r"16x16"),
        (lambda m, cx, cv, qx, qv: m(cx, cv[..., :5], qx, qv), r"context_v must have shape"),
        (lambda m, cx, cv, qx, qv: m(cx, cv[:, :2], qx, qv), r"does not match"),
        (lambda m, cx, cv, qx, qv: m(cx, cv, qx[:, :2], qv), r"query_x must have 3 channels"),
        (lambda m, cx, cv, qx, qv: m(cx, cv, qx[:1], qv), r"query_x has batch size 1"),
        (lambda m, cx, cv, qx, qv: m(cx, cv, qx, qv[:, :5]), r"query_v must have shape"),
        (lambda m, cx, cv, qx, qv: m(cx.long(), cv, qx, qv), r"float in \[0, 1\] or uint8"),
        (lambda m, cx, cv, qx, qv: m.infer(torch.zeros(B, 16, 2, 2), qx, qv), r"r must have shape"),
    ],
)
def test_bad_input_is_named(call, message: str) -> None:
    model = GQN(tiny_config("pool"))
    with pytest.raises(ValueError, match=message):
        call(model, *inputs())


def test_bad_configs_are_named() -> None:
    with pytest.raises(ValueError, match="representation"):
        GQNConfig(representation="grid")
    with pytest.raises(ValueError, match="image_size must be a multiple of 8"):
        GQNConfig(image_size=20, representation="pyramid")
    with pytest.raises(ValueError, match="GQNConfig.L"):
        GQNConfig(L=0)


def naive_loss(model: GQN, cx, cv, qx, qv, sigma: float) -> torch.Tensor:
    """The GQN written the plain way: every input of every core concatenated and convolved at
    every step, zero initial states convolved too, the canvas added to at every step."""
    c = model.config
    b, s = len(qx), c.latent_size
    r = model.represent(cx, cv)
    r_grid = r.expand(-1, -1, s, s)
    v_grid = qv[:, :, None, None].expand(-1, -1, s, s)
    image = F.pixel_unshuffle(qx, c.scale)
    zeros = torch.zeros(b, c.h_dim, s, s, dtype=qx.dtype)
    h_g, c_g, h_e, c_e = zeros, zeros, zeros, zeros
    canvas = torch.zeros(b, c.h_dim, c.image_size, c.image_size, dtype=qx.dtype)
    kl = 0
    tiled_r = c.r_size == 1

    def lstm(core, inputs, spatial, tiled, cell):
        step_channels = sum(len(t[0]) for t in inputs)
        # an unshared first core has no weights for the zero states it reads: zeros stand in
        step_weight = torch.zeros(4 * c.h_dim, step_channels, 5, 5, dtype=qx.dtype)
        if core.step_conv is not None:
            step_weight[:, :core.step_conv.in_channels] = core.step_conv.weight
        weight = [step_weight] + ([core.spatial_conv.weight] if spatial else [])
        weight = torch.cat(weight + [core.tiled_weight], 1)
        gates = F.conv2d(torch.cat(inputs + spatial + tiled, 1), weight, core.bias, padding=2)
        i, f, o, g = gates.chunk(4, 1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell

    for step in range(c.L):
        core = step % c.n_cores
        p_mean, p_std = model._gaussian(model.prior_density(h_g))
        inf_spatial = [image] + ([] if tiled_r else [r_grid])
        tiled = ([r_grid] if tiled_r else []) + [v_grid]
        h_e, c_e = lstm(model.inference_cores[core], [h_e, h_g], inf_spatial, tiled, c_e)
        q_mean, q_std = model._gaussian(model.posterior_density(h_e))
        z = q_mean + q_std * torch.randn_like(q_std)
        kl = kl + kl_divergence(Normal(q_mean, q_std), Normal(p_mean, p_std)).flatten(1).sum(1)
        gen_spatial = [] if tiled_r else [r_grid]
        h_g, c_g = lstm(model.generation_cores[core], [z, h_g], gen_spatial, tiled, c_g)
        canvas = canvas + model.canvas_updates[core](h_g)
    mean = torch.sigmoid(model.observation_density(canvas))
    nll = -Normal(mean, sigma).log_prob(qx).flatten(1).sum(1)
    return (nll + kl).mean()


@pytest.mark.parametrize(("representation", "shared"), VARIANTS)
def test_fast_rollout_equals_the_naive_gqn(representation: str, shared: bool) -> None:
    model = GQN(tiny_config(representation, shared)).double()
    cx, cv, qx, qv = (t.double() for t in inputs())
    torch.manual_seed(3)
    fast = model(cx, cv, qx, qv, sigma=0.5).loss
    fast_grads = torch.autograd.grad(fast, list(model.parameters()))
    torch.manual_seed(3)
    naive = naive_loss(model, cx, cv, qx, qv, sigma=0.5)
    naive_grads = torch.autograd.grad(naive, list(model.parameters()))
    torch.testing.assert_close(fast, naive)
    for fast_grad, naive_grad in zip(fast_grads, naive_grads, strict=True):
        torch.testing.assert_close(fast_grad, naive_grad)


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: {**a, "query_v": a["query_v"][:1]}, r"query_v must have shape \[B=2"),
    (lambda a: {**a, "context_x": a["context_x"][:, :0], "context_v": a["context_v"][:, :0]},
     "context_x is empty"),
    (lambda a: {**a, "query_x": a["query_x"] * 255}, r"divide 8-bit images by 255"),
    (lambda a: {**a, "query_x": a["query_x"].clone().fill_(float("nan"))}, "query_x holds NaN"),
    (lambda a: {**a, "context_v": a["context_v"] * float("inf")}, "context_v holds NaN"),
    (lambda a: {**a, "sigma": 0.0}, "sigma .* must be > 0"),
    (lambda a: {**a, "sigma": -1.0}, "sigma .* must be > 0"),
])
def test_bad_inputs_are_named(change, message) -> None:
    config = GQNConfig(image_size=16, representation="pool", r_dim=8, h_dim=8, z_dim=2, L=2)
    model = GQN(config)
    args = {"context_x": torch.rand(2, 3, 3, 16, 16), "context_v": torch.rand(2, 3, 7),
            "query_x": torch.rand(2, 3, 16, 16), "query_v": torch.rand(2, 7), "sigma": 0.7}
    with pytest.raises(ValueError, match=message):
        model(**change(args))


def test_float64_inputs_are_read_as_the_models_dtype() -> None:
    config = GQNConfig(image_size=16, representation="pool", r_dim=8, h_dim=8, z_dim=2, L=2)
    model = GQN(config)
    out = model(torch.rand(2, 3, 3, 16, 16, dtype=torch.float64),
                torch.rand(2, 3, 7, dtype=torch.float64),
                torch.rand(2, 3, 16, 16, dtype=torch.float64),
                torch.rand(2, 7, dtype=torch.float64))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
