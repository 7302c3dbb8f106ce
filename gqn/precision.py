"""The one precision knob of forward passes, for pretraining and extractors alike:
``fp32`` (fp32 on every device), ``bf16``, ``fp16`` (GPU) or ``auto`` (bf16 where the device
computes it natively, else fp32)."""

from __future__ import annotations

import contextlib

import torch

from gqn.config import PRECISIONS


def missing_bf16_support(device: torch.device | str = "cpu") -> str | None:
    """None when ``device`` runs bf16 natively, else one line saying what it lacks."""
    device = torch.device(device)
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else (
            f"{torch.cuda.get_device_name(device)} has no bf16 support")
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        return None
    return ("this CPU has neither AVX512-BF16 nor AMX, so bf16 would be emulated (slower than "
            "fp32): use --precision fp32")


def native_precision(device: torch.device | str = "cpu") -> str:
    """``bf16`` where ``device`` computes it natively, else ``fp32``."""
    return "fp32" if missing_bf16_support(device) else "bf16"


def resolved_precision(device: torch.device | str, precision: str) -> str:
    """``precision`` on ``device`` with ``auto`` settled (bf16 where native, else fp32);
    ValueError naming what the device lacks for bf16 or fp16, or an unknown precision."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return native_precision(device)
    if precision == "bf16" and (missing := missing_bf16_support(device)):
        raise ValueError(f"precision bf16: {missing}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a GPU (a CPU would emulate fp16): use fp32, "
                         "bf16 or auto")
    return precision


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The forward pass's arithmetic on ``device``: nothing for ``fp32`` (fp32 on every
    device), else bf16 or fp16 autocast (``auto``: bf16 where native, else fp32).

    Raises ValueError when the device would emulate what is asked for."""
    device = torch.device(device)
    precision = resolved_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
