"""Shared fixtures: the reference folder (``../shared/reference`` beside the checkout) and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("VGGT_MV_REFERENCE", REPO.parent / "shared" / "reference"))
PARITY = REFERENCE / "parity"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def reference_case(name: str) -> Path:
    path = PARITY / name
    if not path.is_dir():
        pytest.skip(f"reference fixture {path} not found (expected ../shared/reference beside the checkout)")
    return path


@pytest.fixture
def tiny_images() -> torch.Tensor:
    """A small deterministic 6-D batch ``[1, T=3, V=2, 3, 56, 70]`` in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 2, 3, 56, 70, generator=g)
