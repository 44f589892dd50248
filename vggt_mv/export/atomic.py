"""Atomic writes for files inside an output that is already being written (no target checks).

User-facing targets go through :mod:`vggt_mv.export.output` (the output rule); this is the plain
temp-file-then-``os.replace`` used for the files of a temp output folder, checkpoints and logs.
"""
from __future__ import annotations

import os
from typing import IO, ContextManager

from vggt_mv.export.output import output_dir as atomic_dir
from vggt_mv.export.output import output_file

__all__ = ["atomic_file", "atomic_dir"]


def atomic_file(path: str | os.PathLike, mode: str = "wb") -> ContextManager[IO]:
    """Open a temp file next to ``path``; on success fsync + ``os.replace`` onto ``path``.

    On an exception the temp file is removed and ``path`` is left untouched.
    """
    return output_file(path, mode, check=False)
