import pytest
import torch

import envs  # noqa: F401  first: chooses MuJoCo's GL backend before anything imports mujoco


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
