"""Reliability: nothing already written is lost or silently wrong, and every refusal is one
line naming the flag, file, field or shape (the reproductions of issue 14, one test each)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agents.cli import main
from gqn.data import DatasetBusyError, DatasetWriter, SceneDataset
from gqn.fileio import sha256

STATE_RUN = ["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "state", "--no-progress",
             "--eval-every", "64", "--eval-episodes", "1", "--checkpoint-every", "64"]
TINY_PPO = ["--hyperparams", "n_envs=2", "n_steps=32", "batch_size=32", "n_epochs=1"]


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    """Run ``gqn-rl argv``; it must fail with exit 2 and one stderr line holding ``needles``."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def generate_arm(out: Path, *extra: str) -> list[str]:
    argv = ["data", "generate", "--scene", "arm", "--out", str(out), "--scenes", "4",
            "--test-scenes", "2", "--image-size", "32", "--views", "3", "--shard-size", "2",
            "--workers", "1", "--no-progress", *extra]
    assert main(argv) == 0
    return argv


def test_failed_train_setup_leaves_nothing_and_can_be_rerun(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = [*STATE_RUN, "--steps", "64", "--out", str(out)]
    one_line_error(capsys, [*args, "--hyperparams", "notakey=3"], "notakey", "--hyperparams")
    assert not out.exists()
    one_line_error(capsys, [*args, "--hyperparams", "n_steps=abc"], "--hyperparams")
    assert not out.exists()
    assert main([*args, *TINY_PPO]) == 0  # the same directory, now with good settings
    assert json.loads((out / "run.json").read_text())["config"]["steps"] == 64


def test_flipped_byte_is_named_by_pretrain_and_repaired_by_generate(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    argv = generate_arm(data)
    shard = data / "train" / "00001.images.npy"
    good = shard.read_bytes()
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    shard.write_bytes(bytes(corrupt))
    one_line_error(capsys, ["pretrain", "--data", str(data), "--out", str(tmp_path / "run"),
                            "--steps", "1", "--no-progress", "--no-probe"],
                   str(shard), "SHA-256 mismatch")
    assert main(argv) == 0  # the rerun renders the corrupt shard again
    assert "rendering shard 1 of the train split again" in capsys.readouterr().err
    assert shard.read_bytes() == good
    SceneDataset(data, "train", verify=True)


def test_a_second_writer_is_refused_naming_the_first(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with DatasetWriter(tmp_path / "data", image_size=16, views=3) as first:
        with pytest.raises(DatasetBusyError, match="pid"):
            DatasetWriter(tmp_path / "data", image_size=16, views=3)
        one_line_error(capsys, ["data", "generate", "--scene", "arm", "--out",
                                str(tmp_path / "data"), "--scenes", "2", "--image-size", "16",
                                "--no-progress"], "is being written by pid")
        first.write_shard("train", 0, *_shard())
    assert not list((tmp_path / "data").glob("*.tmp"))
    with DatasetWriter(tmp_path / "data", image_size=16, views=3) as again:  # released
        assert again.has_shard("train", 0)


def _shard():
    import numpy as np

    return np.zeros((1, 3, 16, 16, 3), np.uint8), np.zeros((1, 3, 5), np.float32)


def test_pretrain_checkpoint_interval(tmp_path: Path) -> None:
    from gqn.checkpoint import load_checkpoint

    data = tmp_path / "data"
    generate_arm(data)
    run = ["pretrain", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "4",
           "--batch-size", "2", "--no-progress", "--no-probe"]
    assert main([*run, "--checkpoint-every", "1", "--until", "1"]) == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 1
    assert main([*run, "--resume", "--checkpoint-every", "2"]) == 0  # may change on resume
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 4


def test_a_changed_gqn_checkpoint_is_refused_by_evaluate_and_resume(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gqn = tmp_path / "gqn.pt"
    shutil.copy(Path(__file__).resolve().parents[2] / "checkpoints/arm/checkpoint.pt", gqn)
    out = tmp_path / "run"
    args = ["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "gqn-frozen", "--checkpoint",
            str(gqn), "--out", str(out), "--no-progress", "--eval-every", "64",
            "--eval-episodes", "1", "--checkpoint-every", "64", *TINY_PPO]
    assert main([*args, "--steps", "64"]) == 0
    assert json.loads((out / "run.json").read_text())["checkpoint_sha256"] == sha256(gqn)
    gqn.write_bytes(gqn.read_bytes() + b"\0")  # another file at the same path
    one_line_error(capsys, ["evaluate", str(out), "--episodes", "1"], str(gqn), "SHA-256")
    one_line_error(capsys, [*args, "--steps", "128", "--resume"], "not the GQN checkpoint")


def test_export_refuses_to_replace_its_input(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    import torch

    from gqn import GQN, GQNConfig, TrainConfig
    from gqn.checkpoint import save_checkpoint

    checkpoint = tmp_path / "checkpoint.pt"  # resumable: it has optimiser state
    model = GQN(GQNConfig(image_size=16, representation="pool", r_dim=8, h_dim=4, z_dim=2, L=1))
    save_checkpoint(checkpoint, model, torch.optim.Adam(model.parameters()), 0, TrainConfig(),
                    rng={}, data={"scene": "arm"})
    before = checkpoint.read_bytes()
    one_line_error(capsys, ["export", "--checkpoint", str(checkpoint), "--out",
                            str(tmp_path / "." / "checkpoint.pt")], "--out")
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize(("argv", "needles"), [
    (["train", "--env", "Nonsense-v9", "--encoder", "state", "--steps", "8"], ["--env"]),
    (["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "gqn-frozen", "--steps", "8",
      "--checkpoint", "{text}"], ["{text}", "not a gqn-rl checkpoint"]),
    (["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "gqn-frozen", "--steps", "8",
      "--checkpoint", "{binary}"], ["{binary}", "not a gqn-rl checkpoint"]),
    (["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "gqn-frozen", "--steps", "8",
      "--checkpoint", "{tmp}"], ["{tmp}"]),
    (["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "state", "--steps", "1024",
      "--out", "{text}/run"], ["{text}"]),
    (["train", "--env", "gqn_rl/MentalRotation-v0", "--encoder", "state", "--steps", "64"],
     ["--steps 64", "shorter than a rollout", "1024 steps"]),
    (["train", "--env", "gqn_rl/MentalRotation-v0", "--encoder", "state", "--steps", "2048",
      "--eval-every", "100"], ["--eval-every 100", "shorter than a rollout"]),
    (["train", "--env", "gqn_rl/MentalRotation-v0", "--encoder", "state", "--steps", "2048",
      "--checkpoint-every", "100"], ["--checkpoint-every 100", "shorter than a rollout"]),
    (["train", "--env", "gqn_rl/ArmReach-v1", "--encoder", "state", "--algo", "sac",
      "--steps", "200", "--eval-every", "500"], ["--eval-every 500", "past --steps 200"]),
    (["benchmark", "--env", "gqn_rl/MentalRotation-v0", "--encoder", "state", "--seeds", "1",
      "--steps", "64", "--out", "{tmp}/grid"], ["--steps 64", "shorter than a rollout"]),
    (["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "pixels", "--steps", "8",
      "--hyperparams", "env_kwargs={{'image_size': 16}}"], ["NatureCNN", "16"]),
    (["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "pixels", "--steps", "8",
      "--checkpoint", "{text}"], ["--encoder pixels uses no GQN"]),
    (["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "gqn-frozen", "--steps", "8",
      "--hyperparams", "env_kwargs={{'image_size': 64}}"], ["image_size 64", "32x32"]),
    (["data", "generate", "--scene", "arm", "--out", "{tmp}/d", "--scenes", "2",
      "--image-size", "7"],
     ["size must be a multiple of 4"]),
    (["probe", "--checkpoint", "{binary}", "--data", "{tmp}", "--out", "{tmp}/p"],
     ["{binary}"]),
])
def test_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
                               needles: list[str]) -> None:
    files = {"text": tmp_path / "notes.txt", "binary": tmp_path / "random.bin", "tmp": tmp_path}
    files["text"].write_text("not a checkpoint\n")
    files["binary"].write_bytes(bytes(range(256)) * 4)

    def fill(text: str) -> str:
        return text.format(**{k: str(v) for k, v in files.items()})

    argv = [fill(a) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    one_line_error(capsys, argv, *(fill(n) for n in needles))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", [["--seed", "-1"], ["--test-scenes", "-3"]])
def test_negative_counts_are_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture, flag: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "generate", "--scene", "arm", "--out", str(tmp_path / "d"), "--scenes",
              "2", *flag])
    assert f"argument {flag[0]}: must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_unexpected_errors_are_one_line_with_their_type_and_debug_shows_them(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import agents.cli.training as cli

    def broken(args: object) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "_episode", broken)
    argv = ["episode", "--env", "gqn_rl/ArmReach-v0"]
    one_line_error(capsys, argv, "KeyError", "--debug")
    with pytest.raises(KeyError):
        main(["--debug", *argv])


def test_an_unwritable_out_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "locked" / "run"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self == out:  # as a directory the user may not write to (root ignores modes)
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    one_line_error(capsys, [*STATE_RUN, "--steps", "64", "--out", str(out), *TINY_PPO],
                   "Permission denied", str(out))


def test_a_run_wall_file_in_another_format_is_named(tmp_path: Path) -> None:
    from agents.callbacks import WALL_FILE, training_seconds

    (tmp_path / WALL_FILE).write_text(json.dumps({"seconds": 3.0}))  # an older layout
    with pytest.raises(ValueError, match=f"{WALL_FILE}: expected training seconds"):
        training_seconds(tmp_path)
    (tmp_path / WALL_FILE).write_text(json.dumps({"100": 3.0, "200": 5.5}))
    assert training_seconds(tmp_path) == 5.5
    assert training_seconds(tmp_path / "missing") == 0.0


SAC_RUN = ["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "state", "--algo", "sac",
           "--no-progress", "--eval-every", "100", "--eval-episodes", "1",
           "--checkpoint-every", "50", "--hyperparams", "learning_starts=20", "batch_size=8"]


def test_a_sac_resume_point_is_whole_or_skipped_by_name(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file of a resume point is written atomically (a kill mid-write leaves the final
    name untouched), and a broken replay buffer is named and skipped, never stopped at."""
    import stable_baselines3.common.save_util as save_util

    import agents.callbacks

    out = tmp_path / "sac"
    assert main([*SAC_RUN, "--steps", "100", "--out", str(out)]) == 0
    points = out / "checkpoints"
    assert sorted(p.name for p in points.glob("*_replay_buffer_*")) == [
        "model_replay_buffer_100_steps.pkl"]  # only the newest is kept
    whole = (points / "model_replay_buffer_100_steps.pkl").read_bytes()

    def killed(path, obj, verbose=0):  # a kill while the buffer is written
        path.write(whole[:len(whole) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(agents.callbacks, "save_to_pkl", killed)
    with pytest.raises(KeyboardInterrupt):
        main([*SAC_RUN, "--steps", "200", "--out", str(out), "--resume"])
    monkeypatch.undo()
    assert (points / "model_replay_buffer_100_steps.pkl").read_bytes() == whole
    assert not list(points.glob("*150_steps*")) and not list(points.glob("*.tmp"))
    capsys.readouterr()

    (points / "model_replay_buffer_100_steps.pkl").write_bytes(whole[:len(whole) // 2])
    assert main([*SAC_RUN, "--steps", "200", "--out", str(out), "--resume"]) == 2
    said = capsys.readouterr()
    assert "skipping the resume point at 100 steps" in said.out
    assert "model_replay_buffer_100_steps.pkl" in said.out  # the broken file, named
    assert "no resume point to continue from" in said.err  # the older points lack buffers
    assert main([*SAC_RUN, "--steps", "200", "--out", str(out), "--start-over"]) == 0
    assert save_util.load_from_pkl(points / "model_replay_buffer_200_steps.pkl") is not None


def test_a_resumed_ppo_run_makes_the_updates_of_an_uninterrupted_one(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """PPO's resume points lie between an update and the next rollout (here 2 envs x 32 steps
    = 64), so a run resumed from one trains to the same steps and updates as one that was
    never stopped; a resume with no resume point refuses unless told to start over."""
    from stable_baselines3 import PPO

    run = [*STATE_RUN, *TINY_PPO, "--checkpoint-every", "64"]
    assert main([*run, "--steps", "256", "--out", str(tmp_path / "whole")]) == 0
    assert main([*run, "--steps", "150", "--out", str(tmp_path / "cut")]) == 0
    points = tmp_path / "cut" / "checkpoints"
    assert sorted(p.name for p in points.glob("model_*_steps.zip")) == [
        "model_128_steps.zip", "model_192_steps.zip", "model_64_steps.zip"]  # after updates
    for path in points.glob("*192_steps*"):  # as if killed in the third rollout
        path.unlink()
    assert main([*run, "--steps", "256", "--out", str(tmp_path / "cut"), "--resume"]) == 0
    whole, cut = (PPO.load(tmp_path / name / "final_model.zip") for name in ("whole", "cut"))
    assert cut.num_timesteps == whole.num_timesteps == 256
    assert cut._n_updates == whole._n_updates > 0

    shutil.rmtree(tmp_path / "cut" / "checkpoints")
    one_line_error(capsys, [*run, "--steps", "256", "--out", str(tmp_path / "cut"), "--resume"],
                   "no resume point to continue from", "--start-over")
    assert main([*run, "--steps", "64", "--out", str(tmp_path / "cut"), "--start-over"]) == 0
    assert PPO.load(tmp_path / "cut" / "final_model.zip").num_timesteps == 64


def test_a_resume_with_other_settings_is_refused(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    run = ["train", "--env", "gqn_rl/ArmReach-v0", "--encoder", "gqn-inference",
           "--fresh-encoder", "--intrinsic-bonus", "--no-progress", "--eval-every", "64",
           "--eval-episodes", "1", "--checkpoint-every", "64", *TINY_PPO,
           "--out", str(tmp_path / "run")]
    assert main([*run, "--steps", "64"]) == 0
    without = [a for a in run if a != "--intrinsic-bonus"]
    one_line_error(capsys, [*without, "--steps", "128", "--resume"],
                   "intrinsic_bonus is True, not False")
    other = [a for a in run if a != "--fresh-encoder"]
    one_line_error(capsys, [*other, "--steps", "128", "--resume", "--checkpoint",
                            str(tmp_path / "x.pt")], "fresh_encoder is True, not False")
    assert main([*run, "--steps", "128", "--resume"]) == 0


def test_probe_names_a_too_small_scenes_and_another_family_s_data(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    arm = Path(__file__).resolve().parents[2] / "checkpoints/arm/checkpoint.pt"
    rooms = tmp_path / "rooms"
    assert main(["data", "generate", "--scene", "rooms_free", "--out", str(rooms), "--scenes",
                 "2", "--test-scenes", "12", "--image-size", "32", "--views", "3",
                 "--workers", "1", "--no-progress"]) == 0
    generate_arm(tmp_path / "arm")
    capsys.readouterr()
    one_line_error(capsys, ["probe", "--checkpoint", str(arm), "--data", str(tmp_path / "arm"),
                            "--out", str(tmp_path / "p"), "--scenes", "1"], "--scenes 1",
                   "at least 10")
    one_line_error(capsys, ["probe", "--checkpoint", str(arm), "--data", str(rooms), "--out",
                            str(tmp_path / "p")], "pretrained on arm scenes", "rooms_free")
    assert not (tmp_path / "p").exists()
