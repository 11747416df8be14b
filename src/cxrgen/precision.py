"""bfloat16 where the hardware runs it natively, float32 elsewhere.

Autocast to bfloat16 halves the cost of the encoder's convolutions and the decoder's matrix
products on CUDA GPUs with bf16 and on CPUs with AVX512-BF16 or AMX (docs/results.md, "bfloat16
on the CPU", measures it); on other CPUs bf16 is emulated and slower than float32, so there
everything stays float32. Training (`train.precision: auto`), the feature cache and inference all
decide here, so a model reads images the way it was trained to where it can.
"""
from __future__ import annotations

import torch


def bf16_is_fast(device: str | torch.device) -> bool:
    """Whether `device` runs bfloat16 matrix products natively."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu  # these probes are private in torch 2.x: a torch without them counts as "no"
        return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def autocast(device: str | torch.device, enabled: bool | None = None) -> torch.autocast:
    """bfloat16 autocast on `device` when `enabled` (default: `bf16_is_fast(device)`)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_is_fast(device) if enabled is None else enabled)
