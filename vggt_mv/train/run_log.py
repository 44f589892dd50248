"""``OUT/log.jsonl``: the training run's log, one JSON object per line (rank 0 writes it).

The first record describes the run (``"kind": "run"``: train and model configs, ``world_size``,
strategy, the trainable-parameter table); then one ``"kind": "step"`` record per logged step
(``step``, ``loss``, every loss term, lr, λ, images/s, peak memory) and ``"kind": "val"`` records.
A resumed run rewrites the file without the records past its checkpoint's step (temp + rename),
then appends. With the optional ``tensorboard`` package (extra ``train``) the same scalars also go
to TensorBoard event files in ``OUT/tensorboard/``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from vggt_mv.export.atomic import atomic_file

LOG_NAME = "log.jsonl"


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become None (strict JSON), tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a ``log.jsonl``."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class RunLog:
    """Appends records to ``out_dir/log.jsonl`` (and TensorBoard) when ``enabled`` (rank 0)."""

    def __init__(self, out_dir: str | os.PathLike | None, enabled: bool = True, tensorboard: bool = True) -> None:
        self.path = Path(out_dir) / LOG_NAME if out_dir is not None and enabled else None
        self._tb = None
        if self.path is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: the JSONL log alone
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def start(self, run: dict[str, Any], resume_step: int | None = None) -> None:
        """A new log whose first record is ``run``; or, resuming, keep the records up to
        ``resume_step`` (the run record first) and drop later ones."""
        if self.path is None:
            return
        keep: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            keep = [r for r in read_log(self.path) if r.get("kind") == "run" or r.get("step", 0) <= resume_step]
        if not keep:
            keep = [{"kind": "run", **run}]
        with atomic_file(self.path, "w") as f:
            f.write("".join(json.dumps(_clean(r)) + "\n" for r in keep))

    def append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_clean(record)) + "\n")
        if self._tb is not None:
            step = int(record.get("step", 0))
            prefix = "val/" if record.get("kind") == "val" else "train/"
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(prefix + key, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
