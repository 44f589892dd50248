"""Device and precision selection for inference.

Rules (DESIGN §1/§5):

* ``device=None`` / ``"auto"``: CUDA when available, else CPU. Asking for ``"cuda"`` on a machine
  without CUDA is an error (no silent fallback), ``"mps"`` is accepted when PyTorch has it.
* Mixed precision is autocast on CUDA only: bfloat16 when the GPU supports it, else float16.
  On CPU the model always runs in float32; a reduced ``dtype`` asked for on CPU is ignored with a
  warning (CPU bf16 autocast is slow and changes numerics for no benefit here).
"""
from __future__ import annotations

import contextlib
import logging
from typing import ContextManager

import torch

log = logging.getLogger("vggt_mv.inference")

__all__ = ["select_device", "select_autocast_dtype", "autocast_context", "parse_dtype"]

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA if available else CPU; otherwise the named device, validated."""
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}; use 'auto', 'cpu', 'cuda[:N]' or 'mps'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                         "use cuda:0 .. cuda:N-1")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r} requested but MPS is not available; use 'cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {str(device)!r}; use 'auto', 'cpu', 'cuda[:N]' or 'mps'")
    return dev


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``/``"fp16"``/``"fp32"``/``"auto"``/a ``torch.dtype`` -> ``torch.dtype`` (None = auto)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key == "auto":
        return None
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of auto, bf16, fp16, fp32")
    return _DTYPES[key]


def select_autocast_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype | None:
    """The autocast dtype to run with on ``device``, or None for plain float32.

    CUDA: ``dtype`` if given (float32 = no autocast), else bfloat16 when supported, else float16.
    CPU / MPS: always None (float32); a reduced ``dtype`` is ignored with a warning.
    """
    want = parse_dtype(dtype)
    if device.type != "cuda":
        if want not in (None, torch.float32):
            log.warning("dtype %s requested on %s: mixed precision is used on CUDA only; running float32",
                        want, device.type)
        return None
    if want is torch.float32:
        return None
    if want is None:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if want is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError("bfloat16 requested but this GPU does not support it; use dtype='fp16' or 'fp32'")
    return want


def autocast_context(device: torch.device, autocast_dtype: torch.dtype | None) -> ContextManager:
    """``torch.autocast`` on CUDA with ``autocast_dtype``; a no-op context otherwise."""
    if autocast_dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=autocast_dtype)
