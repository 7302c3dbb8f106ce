"""Every command that README.md and docs/usage.md show runs as written.

The commands are read from the pages: each line of a ``bash`` block (continuation lines joined,
``&&`` chains split, comments dropped), and the ``gqn-rl`` synopses in their prose.

- Fast: each ``gqn-rl`` command is parsed by the real parser (a renamed flag, an unknown choice
  or a gone environment id fails), the install and rl-baselines3-zoo lines are checked against
  pyproject.toml and rl_zoo3's own parsers, and the cheap Python snippets run.
- Slow: each page's commands run in order in a fresh folder, shrunk by flags appended to them
  (argparse keeps a repeated flag's last value), and must exit 0; a bf16 pretraining is
  refused instead where the CPU lacks bf16, as the page says. A ``tensorboard`` line's
  ``--logdir`` must hold events by then. The snippet that needs a dataset runs there too.

A command that is not run is in :data:`EXEMPT`, with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import itertools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import pytest

from agents.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/usage.md")
FENCE = re.compile(r"^```(\w*)\s*$")
SYNOPSIS = re.compile(r"`(gqn-rl [^`]+)`")

EXEMPT = {
    # what a command starts with: why it is not run here
    "python3 -m venv": "makes the environment these tests run in",
    ". .venv/bin/activate": "makes the environment these tests run in",
    "pip install": "installs packages; its extras and torch pin are checked against the "
                   "project's metadata (tests/test_install.py installs the project)",
    "ruff check": "a check CONTRIBUTING.md lists, not a command of the project",
    "python -m pytest": "runs this very test",
    "gqn-rl demo": "at least one PPO rollout (1,024 steps) for each of six agents: about two "
                   "minutes; tests/agents/test_demo.py runs it at a tiny size",
    "python -m rl_zoo3.": "tests/gqn_rl/test_zoo.py runs these lines, read from this page",
}

ELLIPSIS = {
    # a documented command with "...": what the "..." stands for
    "gqn-rl pretrain ... --precision bf16": "--data data/sm7 --out runs/sm7-bf16",
    "gqn-rl pretrain ... --snapshot-at 1000 2000 4000 8000": "--data data/sm7 --out runs/sm7-long",
    "gqn-rl train ... --resume": "--env gqn_rl/ArmReach-v1 --encoder gqn-frozen --algo sac "
                                 "--steps 40000 --seed 0 --out runs/arm-frozen",
    "gqn-rl benchmark ... --hyperparams gamma=0.98 --eval-every 4000":
        "--env gqn_rl/ArmReach-v1 --encoder state --seeds 5 --out runs/bench-gamma",
    "gqn-rl benchmark ... --seeds 2 --first-seed 3":
        "--env gqn_rl/ArmReach-v1 --encoder state --out runs/bench-later",
    "gqn-rl ceiling ... --views 3 --save-checkpoint checkpoints/arm_near/ceiling-cameras.pt":
        "--data data/near32 --out runs/ceiling-cameras",
}

PLACEHOLDERS = {
    # a synopsis's placeholder: a value of its kind
    "NAME": "shepard_metzler_7", "DIR": "data/sm7", "RUN": "runs/run", "OUT": "runs/out",
    "CKPT": "checkpoints/shepard_metzler_7/checkpoint.pt", "PATH": "runs/weights.pt",
    "GIF": "runs/episode.gif", "ID": "gqn_rl/ArmReach-v1", "KIND": "gqn-frozen", "N": "2",
    "DEST": "runs/published", "FOLDER": "runs/pages",
}

TINY_SAC = "--hyperparams buffer_size=256"
"""A replay buffer that fits a tiny run: the recipe's allocates gigabytes of images."""
TINY_BENCHMARK = ("--seeds 1 --steps 64 --eval-every 32 --eval-episodes 1 --final-episodes 1 "
                  "--workers 1 --no-progress")

SHRINK = [
    # (the first pattern that a command matches, the flags appended to it in the slow run)
    (r"data generate .*--out data/near32", "--scenes 20 --test-scenes 10 --workers 1 "
                                            "--no-progress"),  # what ceiling needs at least
    (r"data generate", "--scenes 4 --test-scenes 2 --workers 1 --no-progress"),
    (r"data (masks|import-deepmind)", "--workers 1 --no-progress"),
    (r"pretrain .*--from", "--steps 8 --until 4 --batch-size 2 --no-progress"),  # from step 2
    (r"pretrain", "--steps 2 --batch-size 2 --no-progress"),
    (r"gqn-rl train", f"--steps 64 --eval-every 64 --eval-episodes 1 {TINY_SAC} --no-progress"),
    (r"gqn-rl evaluate", "--episodes 1"),
    (r"speed wrapper", "--envs 1 --steps 16"),
    (r"speed sac", "--steps 2 --repeats 1"),
    (r"benchmark .*--track bc", "--encoder random state --seeds 1 --demos 2 --final-episodes 1 "
                                "--no-progress"),
    (r"benchmark .*--encoder random", f"--encoder random state {TINY_BENCHMARK}"),  # ten kinds
    (r"benchmark .*--checkpoint", f"--encoder gqn-frozen {TINY_SAC} {TINY_BENCHMARK}"),
    (r"benchmark", TINY_BENCHMARK),
    (r"ceiling", "--scenes 20 --epochs 1 --no-progress"),
]


@dataclass(frozen=True)
class Command:
    """One documented command: its words, where it stands, and whether it is a synopsis."""

    page: str
    line: int
    words: tuple[str, ...]
    synopsis: bool = False

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def gqn_rl_args(self) -> list[str] | None:
        """The arguments it gives ``gqn-rl`` (also under ``torchrun -m agents.cli``), with its
        ``...`` filled in from :data:`ELLIPSIS`; None for another program."""
        words = list(self.words)
        if words[0] == "torchrun":
            words = ["gqn-rl", *words[words.index("agents.cli") + 1:]]
        if words[0] != "gqn-rl":
            return None
        if "..." in words:
            assert self.text in ELLIPSIS, f"{self.where}: say in ELLIPSIS what its ... is"
            at = words.index("...")
            words[at:at + 1] = ELLIPSIS[self.text].split()
        return words[1:]


def fenced_blocks(page: str) -> list[tuple[str, int, list[str]]]:
    """A page's fenced blocks: (language, number of the first line inside, lines)."""
    blocks, current = [], None
    for number, line in enumerate((ROOT / page).read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if current is None and fence:
            current = (fence.group(1), number + 1, [])
        elif current is not None and line.startswith("```"):
            blocks.append(current)
            current = None
        elif current is not None:
            current[2].append(line)
    return blocks


def block_commands(page: str) -> list[Command]:
    """The commands of a page's ``bash`` blocks, in order."""
    found = []
    for language, first, lines in fenced_blocks(page):
        if language != "bash":
            continue
        pending: list[str] = []  # a command's lines so far
        for number, line in enumerate(lines, first):
            pending.append(line.rstrip().removesuffix("\\"))
            if line.rstrip().endswith("\\"):
                continue
            words = shlex.split(" ".join(pending), comments=True)
            begun, pending = number + 1 - len(pending), []
            found += [Command(page, begun, tuple(part))
                      for is_and, part in itertools.groupby(words, "&&".__eq__) if not is_and]
    return found


def expand(word: str) -> list[str]:
    """A synopsis's word as real values: ``[--flag`` and ``N]`` lose their brackets,
    ``KIND..`` is one KIND, ``{a,b}`` is each of a and b, and placeholders get values."""
    word = word.strip("[]").removesuffix("..")
    choices = word[1:-1].split(",") if word.startswith("{") else [word]
    return [re.sub(r"\b[A-Z]+\b", lambda m: PLACEHOLDERS.get(m.group(), m.group()), choice)
            for choice in choices]


def synopses(page: str) -> list[Command]:
    """The ``gqn-rl`` synopses in a page's prose (table rows, and spans with a flag), each
    choice of a ``{a,b}`` word as its own command."""
    found, fenced = [], False
    for number, line in enumerate((ROOT / page).read_text().splitlines(), 1):
        fenced ^= line.startswith("```")
        if fenced or line.startswith("```"):
            continue
        for span in SYNOPSIS.findall(line):
            if line.startswith("|") or " --" in span:
                for words in itertools.product(*map(expand, span.split())):
                    found.append(Command(page, number, words, synopsis=True))
    return found


COMMANDS = [c for page in PAGES for c in block_commands(page) + synopses(page)]


def exemption(command: Command) -> str | None:
    """Why ``command`` is not run, or None."""
    return next((why for start, why in EXEMPT.items() if command.text.startswith(start)), None)


@functools.cache
def parser() -> argparse.ArgumentParser:
    return build_parser()


def parse(args: list[str]) -> argparse.Namespace:
    """``gqn-rl``'s parse of ``args``; fails the test with argparse's message."""
    said = io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
        try:
            return parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"gqn-rl {' '.join(args)}: {said.getvalue().strip()}")


def shrunk(command: Command) -> list[str]:
    """The arguments of a ``gqn-rl`` command as the slow run gives them: with :data:`SHRINK`'s
    flags."""
    args = command.gqn_rl_args()
    assert args is not None
    return args + next((f for pattern, f in SHRINK if re.search(pattern, command.text)),
                       "").split()


def gym_ids(args: argparse.Namespace) -> list[str]:
    env = getattr(args, "env", None)
    return [] if env is None else [env] if isinstance(env, str) else list(env)


# -- fast ------------------------------------------------------------------------------------


def test_the_pages_show_commands_of_every_kind() -> None:
    """The extraction works: a page edited into another shape does not pass by having none."""
    texts = [c.text for c in COMMANDS]
    for start in ("gqn-rl data generate", "gqn-rl pretrain", "gqn-rl train", "gqn-rl benchmark",
                  "gqn-rl report", "torchrun", "python -m rl_zoo3.train", "pip install"):
        assert any(t.startswith(start) for t in texts), start
    assert any(c.synopsis for c in COMMANDS)
    assert sum(c.text.startswith("gqn-rl") and not c.synopsis for c in COMMANDS) >= 30


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where} {' '.join(c.words[:3])}")
def test_every_documented_command_is_known(command: Command) -> None:
    """Each command is gqn-rl's (and parses, with registered environment ids), a tensorboard
    that the slow run checks, or exempt with a reason."""
    args = command.gqn_rl_args()
    if args is not None:
        for env_id in gym_ids(parse(args)):
            gym.spec(env_id)  # raises for an id that is not registered
    else:
        assert command.words[0] == "tensorboard" or exemption(command), (
            f"{command.where}: {command.text!r} is neither run nor exempt: give it a line in "
            "EXEMPT with its reason")


def test_every_exemption_and_ellipsis_names_a_documented_command() -> None:
    texts = [c.text for c in COMMANDS]
    stale = [k for k in EXEMPT if not any(t.startswith(k) for t in texts)]
    stale += [k for k in ELLIPSIS if k not in texts]
    assert not stale, f"no documented command for {stale}: drop them"


def test_the_install_lines_name_extras_and_a_torch_that_the_project_takes() -> None:
    from importlib.metadata import metadata

    from packaging.requirements import Requirement

    project = metadata("gqn-rl")  # pyproject.toml as installed (no tomllib on Python 3.10)
    extras = set(project.get_all("Provides-Extra"))
    torch = next(Requirement(r) for r in project.get_all("Requires-Dist")
                 if Requirement(r).name == "torch")
    installs = [c for c in COMMANDS if c.words[:2] == ("pip", "install")]
    assert installs
    for command in installs:
        for word in command.words[2:]:
            if word.startswith(".["):
                assert set(word[2:-1].split(",")) <= extras, f"{command.where}: {word}"
            elif word.startswith("torch=="):
                assert torch.specifier.contains(word.removeprefix("torch==")), (
                    f"{command.where}: {word}, but pyproject.toml asks for {torch}")


def test_the_shrinking_flags_parse() -> None:
    """The slow run's commands, shrunk, are still commands gqn-rl takes."""
    for command in COMMANDS:
        if command.gqn_rl_args() is not None and not command.synopsis and not exemption(command):
            parse(shrunk(command))


def zoo_commands() -> dict[str, list[str]]:
    """docs/usage.md's rl_zoo3 commands by script ("train", "enjoy"): their arguments."""
    found = {}
    for command in COMMANDS:
        if command.words[:2] == ("python", "-m") and command.words[2].startswith("rl_zoo3."):
            found[command.words[2].removeprefix("rl_zoo3.")] = list(command.words[3:])
    return found


def zoo_hyperparams() -> str:
    """docs/usage.md's ``hp.yml`` for rl-baselines3-zoo."""
    (text,) = ["\n".join(lines) for language, _, lines in fenced_blocks("docs/usage.md")
               if language == "yaml"]
    return text


PARSE_ARGS = argparse.ArgumentParser.parse_args


class _Parsed(Exception):  # noqa: N818 - a signal, not an error
    """Raised with the namespace once an rl_zoo3 script has parsed its arguments."""


def zoo_parse(script: str, args: list[str], monkeypatch: pytest.MonkeyPatch
              ) -> argparse.Namespace:
    """``python -m rl_zoo3.<script> <args>``'s parse by the script's own parser (built inside
    its main function), stopped before it trains or plays."""
    import importlib

    main = getattr(importlib.import_module(f"rl_zoo3.{script}"), script)

    def parsed(self: argparse.ArgumentParser, *_: object) -> None:
        raise _Parsed(PARSE_ARGS(self, args))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parsed)
    with pytest.raises(_Parsed) as caught:
        main()
    return caught.value.args[0]


def test_the_zoo_lines_parse_and_enjoy_reads_what_train_wrote(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rl_zoo3")
    import yaml

    commands = zoo_commands()
    assert set(commands) == {"train", "enjoy"}
    train = zoo_parse("train", commands["train"], monkeypatch)
    enjoy = zoo_parse("enjoy", commands["enjoy"], monkeypatch)
    assert (enjoy.algo, enjoy.env.gym_id, enjoy.gym_packages, enjoy.env_kwargs) == (
        train.algo, train.env, train.gym_packages, train.env_kwargs)
    assert enjoy.folder == train.log_folder  # -f logs: enjoy's default is the model hub's
    assert enjoy.exp_id == 1 and enjoy.no_render
    assert train.conf_file == "hp.yml" and list(yaml.safe_load(zoo_hyperparams())) == [train.env]
    gym.spec(train.env)


SNIPPETS = {
    # heading of a python block: (heading it continues, prelude, {text: replacement}, epilogue)
    "Environments": (None, "", {}, """
assert obs["image"].shape == (64, 64, 3) and obs["viewpoint"].shape == (7,)
assert {"reward_distance", "reward_reach", "distance", "is_success"} <= set(info)
"""),
    "Frozen encoders in your own code": (None, "", {}, """
obs, _ = env.reset(seed=0)
assert set(obs) == {"r", "goal", "viewpoint"}, obs.keys()
assert obs["r"].shape == obs["goal"].shape == (model.config.r_dim,)
assert set(reacher.reset(seed=0)[0]) >= {"r", "viewpoint"}
"""),
    "The inference core: belief and surprise": ("Frozen encoders in your own code", "", {}, """
assert {k: v.shape for k, v in obs.items()} == {"r": (64,), "belief": (40,), "surprise": (1,),
                                                 "goal": (3,), "viewpoint": (7,)}
"""),
    "Python API": (None, """
import torch
context_x, context_v = torch.rand(1, 2, 3, 64, 64), torch.rand(1, 2, 7)
query_x, query_v = torch.rand(1, 3, 64, 64), torch.rand(1, 7)
""", {'"DATA"': '"data/sm7"'}, """
assert out.loss.isfinite() and x.shape == (1, 3, 64, 64) and r.shape[:2] == (1, 256)
assert images.dtype.name == "uint8" and images.shape[-1] == 3 and poses.shape[-1] == 5
"""),
}
SLOW_SNIPPETS = {"Python API"}
"""The paper's GQN: a few seconds, and a dataset of the slow run's."""


def python_snippets(page: str = "docs/usage.md") -> dict[str, str]:
    """A page's ``python`` blocks by the heading they stand under."""
    text = (ROOT / page).read_text().splitlines()
    found = {}
    for language, first, lines in fenced_blocks(page):
        if language == "python":
            heading = next(line for line in reversed(text[:first]) if line.startswith("#"))
            found[heading.lstrip("# ")] = "\n".join(lines)
    return found


def snippet_script(heading: str) -> str:
    """The script that runs the snippet under ``heading``: the one it continues, its prelude,
    the snippet with its placeholders replaced, and the checks of what its comments say."""
    continues, prelude, replace, epilogue = SNIPPETS[heading]
    code = python_snippets()[heading]
    for old, new in replace.items():
        assert old in code, f"{heading}: no {old} in the snippet"
        code = code.replace(old, new)
    before = "" if continues is None else snippet_script(continues)
    return "\n".join([before, prelude, code, epilogue])


def run_python(script: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=tiny_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def tiny_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def test_every_python_snippet_is_run_or_exempt() -> None:
    assert set(python_snippets()) == set(SNIPPETS)
    assert not [b for b in fenced_blocks("README.md") if b[0] == "python"], (
        "README.md has a python block: give it an entry like SNIPPETS'")


CONTINUED = {continues for continues, *_ in SNIPPETS.values()}
"""Snippets that run as the start of another's script, with their checks."""


@pytest.mark.parametrize("heading", sorted(set(SNIPPETS) - SLOW_SNIPPETS - CONTINUED))
def test_python_snippet_runs(heading: str) -> None:
    run_python(snippet_script(heading), ROOT)  # its paths are the repository's


# -- slow ------------------------------------------------------------------------------------


def deepmind_source(workspace: Path, command: Command) -> None:
    """A tiny folder of DeepMind's layout at the command's ``--src``."""
    from tests.gqn.test_deepmind import NAME, make_source

    src = workspace / command.words[command.words.index("--src") + 1]
    make_source(workspace / "deepmind")
    src.parent.mkdir(parents=True, exist_ok=True)
    (workspace / "deepmind" / NAME).rename(src)


SETUP: dict[str, Callable[[Path, Command], None]] = {
    # what a command starts with: what it needs that no documented command makes
    "gqn-rl data import-deepmind": deepmind_source,
}


def may_refuse_bf16(command: Command) -> bool:
    """A pretraining in bf16, which the page says is refused where the CPU would emulate it
    (the refusal is tested with the precision, in tests/gqn)."""
    return command.text.startswith("gqn-rl pretrain") and "bf16" in command.words


def run_page(page: str, workspace: Path) -> list[str]:
    """Run a page's commands in order in ``workspace``; what went wrong."""
    failures = []
    for command in block_commands(page):
        if exemption(command):
            continue
        if command.words[0] == "tensorboard":
            logdir = workspace / command.words[command.words.index("--logdir") + 1]
            if not list(logdir.glob("events.out.tfevents.*")):
                failures.append(f"{command.where}: no TensorBoard events in {logdir}")
            continue
        for start, setup in SETUP.items():
            if command.text.startswith(start):
                setup(workspace, command)
        prefix = [sys.executable, "-m"] + (
            ["torch.distributed.run", *command.words[1:command.words.index("agents.cli") + 1]]
            if command.words[0] == "torchrun" else ["agents.cli"])
        done = subprocess.run(prefix + shrunk(command), cwd=workspace, env=tiny_env(),
                              capture_output=True, text=True, timeout=600)
        refused = done.returncode == 2 and "bf16" in (done.stderr.splitlines() or [""])[-1]
        if done.returncode != 0 and not (refused and may_refuse_bf16(command)):
            failures.append(f"{command.where}: {command.text} -> exit {done.returncode}:\n"
                            + (done.stdout[-1000:] + done.stderr[-2000:]).strip())
    return failures


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_each_page_runs_its_commands_in_order(page: str, tmp_path: Path) -> None:
    failures = run_page(page, tmp_path)
    if page == "docs/usage.md":  # its data/sm7 now exists
        for heading in sorted(SLOW_SNIPPETS):
            try:
                run_python(snippet_script(heading), tmp_path)
            except AssertionError as error:
                failures.append(f"python snippet under {heading!r}: {error}")
    assert not failures, "\n\n".join(failures)

