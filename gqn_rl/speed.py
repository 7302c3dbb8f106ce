"""Benchmarks behind ``gqn-rl speed``: each prints its figure next to a baseline measured in
the same run."""

from __future__ import annotations

import importlib.util
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from envs.keys import IMAGE_SIZE
from gqn import GQN, PRESETS, GQNConfig
from gqn.precision import autocast


def _best_seconds(step: Callable[[], None], repeats: int, warmup: int) -> float:
    """Fastest of ``repeats`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(size: int = 2048, seconds: float = 1.0) -> float:
    """This machine's float32 matrix-multiply rate, GFLOP/s (the roofline we compare with)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        calls += 1
    return 2 * size**3 * calls / (time.perf_counter() - start) / 1e9


@dataclass
class TrainStepResult:
    """One implementation's training-step timing."""

    name: str
    seconds: float
    """Best wall time of one step (forward, backward, Adam)."""
    scenes_per_s: float
    gflop: float
    """Floating-point operations of one forward and backward, GFLOP (counted by
    ``torch.utils.flop_counter``: convolutions and matrix products)."""

    @property
    def gflops(self) -> float:
        """Achieved GFLOP/s."""
        return self.gflop / self.seconds


def _synthetic_batch(config: GQNConfig, batch: int, context: int):
    s = config.image_size
    return (torch.rand(batch, context, 3, s, s), torch.randn(batch, context, 7),
            torch.rand(batch, 3, s, s), torch.randn(batch, 7))


def time_gqn_step(config: GQNConfig, batch: int, context: int, repeats: int = 3,
                  warmup: int = 1, compile: bool = False, channels_last: bool = False,
                  precision: str = "fp32") -> TrainStepResult:
    """Time one training step of :class:`gqn.GQN` with fused Adam on synthetic data, its
    forward pass in ``precision`` (as ``gqn-rl pretrain --precision``)."""
    torch.manual_seed(0)
    model = GQN(config)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, fused=True)
    cx, cv, qx, qv = _synthetic_batch(config, batch, context)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast("cpu", precision):
            loss = forward(cx, cv, qx, qv, 2.0).loss
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    seconds = _best_seconds(step, repeats, warmup + (2 if compile else 0))
    name = ("gqn-rl" + (" compiled" if compile else "")
            + (" channels_last" if channels_last else "") + f" {precision}")
    return TrainStepResult(name, seconds, batch / seconds, counter.get_total_flops() / 1e9)


def _import_wohlert(checkout: Path):
    """Import the ``gqn`` package of a wohlert/generative-query-network-pytorch checkout
    under another name (ours is called ``gqn`` too)."""
    init = Path(checkout) / "gqn" / "__init__.py"
    if not init.is_file():
        raise FileNotFoundError(f"{init} not found: --wohlert takes the root of a checkout of "
                                "wohlert/generative-query-network-pytorch")
    spec = importlib.util.spec_from_file_location(
        "wohlert_gqn", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["wohlert_gqn"] = module
    spec.loader.exec_module(module)
    return module


def _reading_hidden_state(cell_class: type) -> type:
    """wohlert's ConvLSTM cell made to read its hidden state as the paper's cells (and
    gqn-rl's) do: its gates see ``[hidden, input]`` instead of ``input`` alone."""

    class CellReadingHiddenState(cell_class):
        def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
            super().__init__(in_channels + out_channels, out_channels, **kwargs)

        def forward(self, input: torch.Tensor, states: list) -> tuple:  # noqa: A002
            return super().forward(torch.cat([states[0], input], dim=1), states)

    return CellReadingHiddenState


def time_wohlert_step(checkout: Path, config: GQNConfig, batch: int, context: int,
                      repeats: int = 3, warmup: int = 1,
                      hidden_state: bool = False) -> TrainStepResult:
    """Time the same step in wohlert's implementation at identical hyperparameters.

    Its tower with ``pool=True`` is the pool representation; its generator takes the
    representation, L, the core sharing and the channel sizes of ``config``. The loss is its
    training script's: Gaussian NLL plus KL, Adam (PyTorch defaults). Its ConvLSTM cells
    compute their gates from the input alone; ``hidden_state=True`` times them reading their
    hidden state too, the paper's architecture, which is gqn-rl's.
    """
    if config.representation == "pyramid" or config.image_size != 64:
        raise ValueError("wohlert's implementation has tower/pool at 64x64 only")
    wohlert = _import_wohlert(checkout)
    torch.manual_seed(0)
    representation = wohlert.TowerRepresentation(3, 7, config.r_dim,
                                                 pool=config.representation == "pool")
    generator = wohlert.GeneratorNetwork(3, 7, config.r_dim, config.z_dim, config.h_dim, config.L,
                                         share=config.shared_core)
    if hidden_state:
        variant = _reading_hidden_state(sys.modules[f"{wohlert.__name__}.generator"].Conv2dLSTMCell)
        for name in ("inference_core", "generator_core"):
            cores = getattr(generator, name)
            shared = not isinstance(cores, torch.nn.ModuleList)
            new = [variant(c.in_channels, c.out_channels, kernel_size=c.forget.kernel_size,
                           padding=c.forget.padding) for c in ([cores] if shared else cores)]
            setattr(generator, name, new[0] if shared else torch.nn.ModuleList(new))
    parameters = [*representation.parameters(), *generator.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=5e-4)
    cx, cv, qx, qv = _synthetic_batch(config, batch, context)

    def step() -> None:
        optimizer.zero_grad()
        phi = representation(cx.flatten(0, 1), cv.flatten(0, 1))
        r = phi.unflatten(0, (batch, context)).sum(1)
        mean, kl = generator(qx, qv, r)
        nll = -torch.distributions.Normal(mean, 2.0).log_prob(qx).flatten(1).sum(1)
        (nll + kl.flatten(1).sum(1)).mean().backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    seconds = _best_seconds(step, repeats, warmup)
    name = "wohlert, cells read hidden" if hidden_state else "wohlert"
    return TrainStepResult(name, seconds, batch / seconds, counter.get_total_flops() / 1e9)


def describe_machine() -> str:
    """CPU model, threads and torch version, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def raw_render_rate(family_name: str, size: int, views: int = 2000) -> float:
    """Views/s of ``mujoco.Renderer`` re-rendering one scene of the family at random poses."""
    import mujoco

    from envs.camera import free_camera
    from envs.scenes import FAMILIES

    family = FAMILIES[family_name]
    rng = np.random.default_rng(0)
    spec = family.sample_spec(rng)
    poses = family.sample_poses(spec, rng, views)
    model = mujoco.MjModel.from_xml_string(family.xml(spec))
    model.vis.global_.offwidth = model.vis.global_.offheight = size
    data = mujoco.MjData(model)
    qpos = family.initial_qpos(spec)
    if qpos is not None:
        data.qpos[:] = qpos
    mujoco.mj_forward(model, data)
    with mujoco.Renderer(model, size, size) as renderer:
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        cameras = [free_camera(pose) for pose in poses]
        renderer.update_scene(data, camera=cameras[0])
        renderer.render()
        start = time.perf_counter()
        for camera in cameras:
            renderer.update_scene(data, camera=camera)
            renderer.render()
        return views / (time.perf_counter() - start)


def generate_rate(family_name: str, size: int, scenes: int, workers: int) -> float:
    """Views/s of ``gqn-rl data generate`` into a temporary directory (process start-up of
    the workers included)."""
    import tempfile

    from gqn_rl.datagen import GenerateConfig, generate

    shard = max(1, -(-scenes // max(workers, 1)))
    config = GenerateConfig(scene=family_name, scenes=scenes, test_scenes=0, size=size,
                            shard_size=shard)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        generate(config, out, workers=workers, progress=False)
        seconds = time.perf_counter() - start
    return scenes * config.view_count / seconds


def reader_versus_training(scene: str) -> tuple[float, float]:
    """Batches/s the dataset reader assembles for ``cpu-small`` (from 64 freshly rendered
    ``scene`` scenes) and ``cpu-small``'s training steps/s: the reader must not be the
    bottleneck."""
    from gqn_rl.datagen import GenerateConfig, generate

    small = PRESETS["cpu-small"]
    with tempfile.TemporaryDirectory() as data:
        generate(GenerateConfig(scene=scene, scenes=64, test_scenes=0,
                                size=small.model.image_size, shard_size=32), data,
                 progress=False)
        batches = reader_rate(Path(data), small.train.batch_size)
    step = time_gqn_step(small.model, small.train.batch_size, context=5)
    return batches, 1 / step.seconds


def reader_rate(dataset: Path, batch_size: int, batches: int = 50) -> float:
    """Batches/s that :meth:`gqn.data.SceneDataset.sample_batch` assembles."""
    from gqn.data import SceneDataset

    data = SceneDataset(dataset, "train")
    rng = np.random.default_rng(0)
    data.sample_batch(batch_size, rng)
    start = time.perf_counter()
    for _ in range(batches):
        data.sample_batch(batch_size, rng)
    return batches / (time.perf_counter() - start)


@dataclass
class EnvRate:
    """Steps/s of one environment, with the rates that bound it."""

    env_id: str
    image: float
    """Steps/s with one image per observation (random actions, resets included)."""
    state: float
    """Steps/s of ``obs_mode="state"``: the task and physics without rendering."""
    raw_render: float
    """Views/s of ``mujoco.Renderer`` on the environment's scene family."""


def env_rate(env_id: str, image_size: int = IMAGE_SIZE, steps: int = 2000) -> EnvRate:
    """Times ``steps`` random steps of ``env_id`` in image and in state mode."""
    import gymnasium as gym

    import envs  # registers the environments

    def rate(**kwargs: object) -> float:
        env = gym.make(env_id, **kwargs)
        env.action_space.seed(0)
        env.reset(seed=0)
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        seconds = time.perf_counter() - start
        env.close()
        return steps / seconds

    return EnvRate(env_id, rate(image_size=image_size), rate(obs_mode="state"),
                   raw_render_rate(envs.family_of(env_id), image_size, views=steps))

