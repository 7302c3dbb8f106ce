"""The design's layering, read from the source: imports point one way only,
``agents -> gqn_rl -> {gqn, envs}``, and ``gqn`` and ``envs`` never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "gqn": {"gqn"},
    "envs": {"envs"},
    "gqn_rl": {"gqn_rl", "gqn", "envs"},
    "agents": {"agents", "gqn_rl", "gqn", "envs"},
}
"""The project's packages each package may import (itself included)."""
FORBIDDEN_LIBRARIES = {
    "gqn": {"gymnasium", "mujoco", "stable_baselines3"},
    "envs": {"torch", "stable_baselines3"},
}
"""Third-party libraries a package must not depend on (docs/design.md: gqn is torch + numpy, envs is
mujoco + gymnasium + numpy)."""


def imported_top_names(path: Path) -> set[str]:
    """Top-level names of every module that ``path`` imports, at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imported_top_names_sees_nested_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os.path\n\ndef f():\n    from agents.cli import main\n"
                      "    import torch as t\n")
    assert imported_top_names(source) == {"os", "agents", "torch"}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    breaches = []
    for path in files:
        names = imported_top_names(path)
        project = names & ALLOWED.keys()
        for name in sorted(project - ALLOWED[package]):
            breaches.append(f"{path.relative_to(ROOT)} imports {name}")
        for name in sorted(names & FORBIDDEN_LIBRARIES.get(package, set())):
            breaches.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not breaches, "\n".join(breaches)
