"""Where a pretraining process stands in a run of one process or several under ``torchrun``
(DistributedDataParallel: gloo on CPU, nccl on GPU), and what the processes share."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Process:
    """Where this process stands in a (possibly distributed) run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_process(device: str | None) -> Process:
    """Join the process group when launched by torchrun; pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA requested but " + (
            "this torch build has no CUDA" if torch.version.cuda is None
            else "no CUDA device is visible (CUDA_VISIBLE_DEVICES, the driver)"))
    cuda = torch.cuda.is_available() and device in (None, "cuda")
    if world_size > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        rank = dist.get_rank()
        if cuda:
            torch.cuda.set_device(local_rank)
            return Process(rank, world_size, torch.device("cuda", local_rank))
        return Process(rank, world_size, torch.device("cpu"))
    return Process(device=torch.device(device or ("cuda" if cuda else "cpu")))


def gather(value: Any, process: Process) -> list[Any]:
    """The value of every process (a one-element list when not distributed)."""
    if process.world_size == 1:
        return [value]
    values: list[Any] = [None] * process.world_size
    dist.all_gather_object(values, value)
    return values


def mean_over_processes(value: torch.Tensor, process: Process) -> torch.Tensor:
    """``value``'s mean over the processes of a DDP run (itself on one)."""
    if process.world_size > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= process.world_size
    return value
