import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gqn.config
import gqn.distributed
import gqn.model
import gqn.precision
import gqn.train
from agents.cli import main
from gqn import GQNConfig, TrainConfig
from gqn.checkpoint import DATA_FIELDS, load_checkpoint, load_model
from gqn.data import SceneDataset
from gqn.losses import gaussian_nll
from gqn.model import GQN
from gqn.objectives import training_loss
from gqn.precision import autocast, missing_bf16_support
from gqn.schedules import learning_rate, pixel_sigma
from gqn.train import NonFiniteLossError, pretrain
from tests.gqn.conftest import write_synthetic_dataset

MODEL = GQNConfig(image_size=16, representation="pool", r_dim=16, h_dim=8, z_dim=4, L=2,
                  shared_core=False)
TRAIN = TrainConfig(steps=6, batch_size=4, log_every=2, eval_every=3, eval_batches=1,
                    checkpoint_every=3)


def test_schedules_follow_the_paper_scaled_to_the_run() -> None:
    paper = TrainConfig()
    assert learning_rate(0, paper) == pytest.approx(5e-4)
    assert learning_rate(800_000, paper) == pytest.approx(2.75e-4)
    assert learning_rate(1_600_000, paper) == learning_rate(1_999_999, paper) == pytest.approx(5e-5)
    assert pixel_sigma(0, paper) == pytest.approx(2.0)
    assert pixel_sigma(200_000, paper) == pixel_sigma(10**6, paper) == pytest.approx(0.7)
    short = TrainConfig(steps=1000)
    assert learning_rate(800, short) == pytest.approx(5e-5)
    assert pixel_sigma(50, short) == pytest.approx(1.35)


def test_pretrain_writes_checkpoint_metrics_and_tensorboard(dataset: Path, tmp_path: Path) -> None:
    result = pretrain(dataset, tmp_path / "run", MODEL, TRAIN, progress=False)
    assert result.step == 6 and len(result.history) == 6
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    state = load_checkpoint(result.checkpoint, MODEL, TRAIN)
    assert state["step"] == 6 and state["model_config"] == MODEL
    assert set(state) >= {"optimizer", "rng", "package_version", "train_config", "data"}
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [2, 4, 6]
    assert [x["step"] for x in lines if "eval/loss" in x] == [3, 6]
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    model = load_model(result.checkpoint)
    assert not model.training and model.config == MODEL


def test_exported_weights_load_but_do_not_resume(dataset: Path, tmp_path: Path) -> None:
    result = pretrain(dataset, tmp_path / "run", MODEL, TRAIN, until=3, progress=False)
    exported = tmp_path / "shipped" / "checkpoint.pt"
    assert main(["export", "--checkpoint", str(result.checkpoint), "--out", str(exported)]) == 0
    assert exported.stat().st_size < result.checkpoint.stat().st_size
    for a, b in zip(load_model(exported).parameters(), load_model(result.checkpoint).parameters(),
                    strict=True):
        assert torch.equal(a, b)
    exported.replace(result.checkpoint)
    with pytest.raises(ValueError, match="weights only"):
        pretrain(dataset, tmp_path / "run", MODEL, TRAIN, resume=True, progress=False)


def test_resumed_run_reproduces_the_uninterrupted_loss_curve(dataset: Path,
                                                             tmp_path: Path) -> None:
    whole = pretrain(dataset, tmp_path / "whole", MODEL, TRAIN, progress=False)
    first = pretrain(dataset, tmp_path / "split", MODEL, TRAIN, until=3, progress=False)
    assert first.step == 3
    rest = pretrain(dataset, tmp_path / "split", MODEL, TRAIN, resume=True, progress=False)
    assert [h["loss"] for h in first.history + rest.history] == [h["loss"] for h in whole.history]
    a = load_checkpoint(whole.checkpoint)["model"]
    b = load_checkpoint(rest.checkpoint)["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)
    steps = [json.loads(x)["step"]
             for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "metrics of the resumed run continue, not repeat"


def test_resume_with_another_config_names_the_fields(dataset: Path, tmp_path: Path) -> None:
    pretrain(dataset, tmp_path / "run", MODEL, TRAIN, until=3, progress=False)
    other = GQNConfig(**{**MODEL.__dict__, "h_dim": 12, "L": 3})
    with pytest.raises(ValueError, match=r"L: 2 != 3.*h_dim: 8 != 12"):
        pretrain(dataset, tmp_path / "run", other, TRAIN, resume=True, progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        pretrain(dataset, tmp_path / "run", MODEL, TRAIN, progress=False)


def test_dataset_of_another_image_size_is_refused(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "d32", size=32)
    with pytest.raises(ValueError, match="images are 32x32, the GQN reads 16x16"):
        pretrain(data, tmp_path / "run", MODEL, TRAIN, progress=False)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = pretrain(dataset, tmp_path / "run", MODEL, TRAIN, until=3, progress=False)
    saved = first.checkpoint.read_bytes()
    nan_nll = lambda x, mean, sigma: torch.full((len(x),), float("nan"))  # noqa: E731
    monkeypatch.setattr(gqn.model, "gaussian_nll", nan_nll)  # a loss that became NaN
    with pytest.raises(NonFiniteLossError, match="at step 4.*last good checkpoint"):
        pretrain(dataset, tmp_path / "run", MODEL, TRAIN, resume=True, progress=False)
    assert first.checkpoint.read_bytes() == saved


def test_cli_pretrain_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_synthetic_dataset(tmp_path / "data", size=32)
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(data), "--out", str(run), "--steps", "4",
            "--batch-size", "2", "--no-progress"]
    assert main([*args, "--until", "2"]) == 0
    assert main(args) == 2
    assert "pass resume=True (--resume)" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--resume",
                 "--no-progress"]) == 0
    assert "step 4: checkpoint" in capsys.readouterr().out
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4
    lever = tmp_path / "lever"  # a continuation of the run's step 4 with its configs, levers on
    assert main(["pretrain", "--data", str(data), "--out", str(lever), "--from",
                 str(run / "checkpoint.pt"), "--steps", "8", "--until", "5", "--prior-weight",
                 "0.5", "--geco-target", "0.02", "--sigma-start", "0.7", "--no-progress"]) == 0
    state = load_checkpoint(lever / "checkpoint.pt")
    assert state["step"] == 5 and state["start"]["step"] == 4
    assert (state["train_config"].prior_weight, state["train_config"].geco_target,
            state["train_config"].batch_size) == (0.5, 0.02, 2)


@pytest.mark.slow
def test_two_cpu_processes_train_with_ddp(tmp_path: Path) -> None:
    data, run = write_synthetic_dataset(tmp_path / "data", size=32), tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: a rendezvous on a free port of this machine, so parallel runs don't collide
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "agents.cli", "pretrain", "--data", str(data),
               "--out", str(run), "--preset", "cpu-small", "--steps", "2", "--batch-size", "4",
               "--no-progress", "--device", "cpu"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 2
    assert len(state["rng"]["batches"]) == 2, "one batch stream per process"
    assert state["rng"]["batches"][0] != state["rng"]["batches"][1]


def test_kl_weight_scales_the_kl_of_the_training_loss(dataset: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``kl_weight`` the optimiser minimises ``nll + w kl``; the logged loss stays the
    ELBO's, so runs of different weights compare."""
    seen = []
    backward = torch.Tensor.backward

    def record(loss: torch.Tensor, *args, **kwargs) -> None:
        seen.append(float(loss.detach()))
        backward(loss, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", record)
    result = pretrain(dataset, tmp_path / "run", MODEL,
                      dataclasses.replace(TRAIN, kl_weight=3.0), until=2, progress=False)
    history = result.history
    assert len(seen) == 2
    for loss, h in zip(seen, history, strict=True):
        assert h["loss"] == pytest.approx(h["nll"] + h["kl"], rel=1e-5)
        assert loss == pytest.approx(h["nll"] + 3.0 * h["kl"], rel=1e-5)
    with pytest.raises(ValueError, match="kl_weight must be > 0"):
        TrainConfig(kl_weight=0.0)


def test_bf16_runs_where_supported_and_is_refused_by_name_elsewhere(dataset: Path,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp8")
    bf16 = dataclasses.replace(TRAIN, precision="bf16")
    missing = missing_bf16_support("cpu")
    if missing is None:
        result = pretrain(dataset, tmp_path / "run", MODEL, bf16, until=2, progress=False)
        assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
        with autocast("cpu", "bf16"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    else:
        assert "AVX512-BF16" in missing
        with pytest.raises(ValueError, match="precision bf16: this CPU has neither"):
            pretrain(dataset, tmp_path / "run", MODEL, bf16, until=2, progress=False)
        assert not (tmp_path / "run").exists()  # refused before anything was written
    with autocast("cpu", "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_object_weight_weighs_the_masked_pixels_of_the_query(dataset: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """With masks beside the dataset, the optimiser minimises the likelihood with the
    objects' pixels weighted; a batch draws the same scenes and views with or without them."""
    train = SceneDataset(dataset, "train")
    masks = np.random.default_rng(0).random((len(train), train.views, 16, 16)) < 0.1
    plain = train.sample_batch(4, np.random.default_rng(3))
    np.save(train.masks_path, masks)
    masked = SceneDataset(dataset, "train").sample_batch(4, np.random.default_rng(3))
    assert torch.equal(plain.query_x, masked.query_x) and plain.query_mask is None
    assert masked.query_mask.shape == (4, 16, 16)
    model = GQN(MODEL)
    out = model(masked.context_x, masked.context_v, masked.query_x, masked.query_v, 0.5)
    config = dataclasses.replace(TRAIN, object_weight=5.0)
    weighted = training_loss(out, masked, 0.5, config)
    per_pixel = 0.5 * ((masked.query_x.float() / 255 - out.mean) / 0.5) ** 2 + math.log(
        0.5 * math.sqrt(2 * math.pi))
    weight = 1 + 4 * masked.query_mask[:, None].float()
    torch.testing.assert_close(weighted, ((per_pixel * weight).flatten(1).sum(1)
                                          + out.kl).mean())
    assert training_loss(out, masked, 0.5, TRAIN) is out.loss
    np.save(train.masks_path, masks[:, :2])
    with pytest.raises(ValueError, match="masks must be bool"):
        SceneDataset(dataset, "train").masks()


def test_precision_is_one_knob_and_fp32_means_fp32_everywhere(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """``TrainConfig.amp`` is gone: ``precision`` alone says the arithmetic, ``fp32`` on a
    GPU too; ``auto`` is bf16 where native, else fp32; fp16 is for GPUs."""
    assert "amp" not in {f.name for f in dataclasses.fields(TrainConfig)}
    assert gqn.config.PRECISIONS == ("fp32", "bf16", "fp16", "auto")
    monkeypatch.setattr(gqn.precision, "missing_bf16_support", lambda device="cpu": None)
    process = gqn.distributed.Process(device=torch.device("cuda", 0))
    context, scaler = gqn.train._autocast(process, TRAIN)  # fp32 on a GPU
    assert scaler is None and isinstance(context(), type(contextlib.nullcontext()))
    assert gqn.precision.resolved_precision("cuda", "auto") == "bf16"
    assert gqn.precision.resolved_precision("cuda", "fp16") == "fp16"
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        gqn.precision.resolved_precision("cpu", "fp16")
    monkeypatch.setattr(gqn.precision, "missing_bf16_support", lambda device="cpu": "no bf16")
    assert gqn.precision.resolved_precision("cpu", "auto") == "fp32"


def test_a_checkpoint_written_with_amp_still_loads(dataset: Path, tmp_path: Path) -> None:
    result = pretrain(dataset, tmp_path / "run", MODEL, TRAIN, until=1, progress=False)
    state = torch.load(result.checkpoint, weights_only=False)
    state["train_config"]["amp"] = True  # as checkpoints were written before precision alone
    torch.save(state, result.checkpoint)
    loaded = load_checkpoint(result.checkpoint, MODEL)
    assert loaded["legacy_amp"] and loaded["train_config"] == dataclasses.replace(TRAIN)
    assert pretrain(dataset, tmp_path / "run", MODEL, TRAIN, until=2, resume=True,
                    progress=False).step == 2


def test_cuda_asked_for_without_cuda_is_one_line(dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert main(["pretrain", "--data", str(dataset), "--out", str(tmp_path / "run"),
                 "--device", "cuda", "--no-progress", "--no-probe"]) == 2
    err = capsys.readouterr().err
    assert "CUDA requested but this torch build has no CUDA" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_resume_refuses_another_dataset_naming_the_field(dataset: Path, tmp_path: Path) -> None:
    """A run resumed on other data would be a mix of two datasets under one label: the
    checkpoint's record of its data (family, sizes, scene counts, the manifest's content)
    must match, and the refusal names what differs."""
    run = tmp_path / "run"
    pretrain(dataset, run, MODEL, TRAIN, until=2, progress=False)
    data = load_checkpoint(run / "checkpoint.pt")["data"]
    assert "path" not in data and data["scene"] == "synthetic"
    assert set(data) == set(DATA_FIELDS)
    more = write_synthetic_dataset(tmp_path / "more", scenes=24)
    with pytest.raises(ValueError, match=r"train_scenes: the run's 16, the data's 24") as info:
        pretrain(more, run, MODEL, TRAIN, resume=True, progress=False)
    assert "manifest_sha256" not in str(info.value)
    other = write_synthetic_dataset(tmp_path / "other", seed=1)  # same sizes, other pixels
    with pytest.raises(ValueError, match="manifest_sha256: the run's"):
        pretrain(other, run, MODEL, TRAIN, resume=True, progress=False)
    moved = tmp_path / "moved"
    dataset.rename(moved)  # the same data elsewhere resumes
    assert pretrain(moved, run, MODEL, TRAIN, resume=True, progress=False).step == 6


def test_max_context_beyond_the_data_is_refused_before_a_run_folder(
        dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--max-context 5: .* 5 views per scene, so at most 4"):
        pretrain(dataset, tmp_path / "run", MODEL, dataclasses.replace(TRAIN, max_context=5),
                 progress=False)
    assert not (tmp_path / "run").exists()


def test_pretrain_refuses_a_disk_without_room_for_its_checkpoints(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = gqn.train.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(gqn.train.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(OSError, match=r"no space left for checkpoints under .*run"):
        pretrain(dataset, tmp_path / "run", MODEL, TRAIN, progress=False)
    assert not (tmp_path / "run").exists()


# -- objective levers and continuations ----------------------------------------------------


def test_the_prior_pass_adds_the_likelihood_of_a_rendering_from_the_prior(dataset: Path) -> None:
    batch = SceneDataset(dataset, "train").sample_batch(4, np.random.default_rng(3))
    model = GQN(MODEL)
    out = model(batch.context_x, batch.context_v, batch.query_x, batch.query_v, 0.5,
                prior_pass=True)
    assert out.prior_mean.shape == out.mean.shape and out.prior_mean.requires_grad
    config = dataclasses.replace(TRAIN, prior_weight=0.5)
    prior_nll = gaussian_nll(batch.query_x.float() / 255, out.prior_mean, 0.5)
    torch.testing.assert_close(training_loss(out, batch, 0.5, config),
                               (out.nll + out.kl + 0.5 * prior_nll).mean())
    training_loss(out, batch, 0.5, config).backward()  # r learns from the prior's rendering
    assert model.representation.parameters().__next__().grad is not None
    plain = model(batch.context_x, batch.context_v, batch.query_x, batch.query_v, 0.5)
    with pytest.raises(ValueError, match="prior_pass"):
        training_loss(plain, batch, 0.5, config)


def test_geco_raises_the_pixel_precision_while_the_error_is_above_its_target() -> None:
    from gqn.objectives import Geco

    geco = Geco(target=0.01, sigma=0.5, largest=2.0)
    assert geco.sigma == pytest.approx(0.5)
    for _ in range(50):
        geco.update(0.02)
    assert geco.sigma < 0.5
    low = geco.sigma
    for _ in range(500):
        geco.update(0.005)
    assert geco.sigma > low
    with pytest.raises(ValueError, match="GECO state for target 0.01"):
        Geco(target=0.02, sigma=0.5, largest=2.0).load_state_dict(geco.state_dict())
    for _ in range(5000):  # an unreachable target: sigma stops at its floor
        geco.update(1.0)
    assert geco.sigma == pytest.approx(0.05 * 2.0)


def test_a_geco_run_with_the_prior_pass_resumes_exactly(dataset: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(TRAIN, geco_target=0.05, prior_weight=1.0)
    whole = pretrain(dataset, tmp_path / "whole", MODEL, config, progress=False)
    pretrain(dataset, tmp_path / "split", MODEL, config, until=3, progress=False)
    rest = pretrain(dataset, tmp_path / "split", MODEL, config, resume=True, progress=False)
    assert [h["sigma"] for h in whole.history][3:] == [h["sigma"] for h in rest.history]
    assert len({h["sigma"] for h in whole.history}) > 1  # GECO moves sigma
    assert load_checkpoint(rest.checkpoint)["objective"]["target"] == 0.05


def test_a_continuation_starts_from_another_run_s_weights_and_step(dataset: Path,
                                                                   tmp_path: Path) -> None:
    base = pretrain(dataset, tmp_path / "base", MODEL, TRAIN, until=3, progress=False)
    plain = pretrain(dataset, tmp_path / "plain", MODEL, TRAIN, until=5, progress=False,
                     start_from=base.checkpoint)
    assert plain.step == 5 and [h["step"] for h in plain.history] == [4, 5]
    start = load_checkpoint(plain.checkpoint)["start"]
    assert start["step"] == 3 and start["file"] == "checkpoint.pt"
    assert start["fresh_weights"] == [] and not start["fresh_optimizer"]
    smaller = GQNConfig(**{**MODEL.__dict__, "z_dim": 2})
    lever = pretrain(dataset, tmp_path / "z2", smaller, TRAIN, until=4, progress=False,
                     start_from=base.checkpoint)
    start = load_checkpoint(lever.checkpoint)["start"]
    assert start["fresh_weights"] and all("density" in k or "core" in k
                                          for k in start["fresh_weights"])
    assert start["fresh_optimizer"]
    shared = load_checkpoint(base.checkpoint)["model"]
    kept = load_model(tmp_path / "z2" / "checkpoint.pt").state_dict()
    assert not any(k.startswith("representation") for k in start["fresh_weights"])
    assert set(kept) == set(shared)
    with pytest.raises(ValueError, match="at step 3: --until .* 3 leaves nothing"):
        pretrain(dataset, tmp_path / "late", MODEL, TRAIN, until=3, progress=False,
                 start_from=base.checkpoint)


def test_snapshots_are_kept_at_the_steps_asked_for(dataset: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(TRAIN, snapshot_at=(5, 2))
    pretrain(dataset, tmp_path / "run", MODEL, config, until=4, progress=False)
    pretrain(dataset, tmp_path / "run", MODEL, config, resume=True, progress=False)
    kept = sorted((tmp_path / "run" / "snapshots").glob("step-*.pt"))
    assert [p.name for p in kept] == ["step-2.pt", "step-5.pt"]
    assert [load_checkpoint(p)["step"] for p in kept] == [2, 5]
    assert config.snapshot_at == (2, 5)
