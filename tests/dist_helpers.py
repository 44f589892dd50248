"""Spawn small gloo worlds for tests: one process per rank, one torch thread per rank, a free port,
a timeout, and ``destroy_process_group`` always called.

``run_world(fn, world_size, *args)`` runs ``fn(rank, world_size, *args)`` on every rank (``fn`` must
be importable: a module-level function) and returns the ranks' return values (pickled through files).
"""
from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, fn: Callable, world: int, port: int, results: str, args: tuple) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        value = fn(rank, world, *args)
        with open(Path(results) / f"rank{rank}.pkl", "wb") as handle:
            pickle.dump(value, handle)
    finally:
        from vggt_mv import distributed

        distributed.shutdown()
        if dist.is_initialized():
            dist.destroy_process_group()


def run_world(fn: Callable, world_size: int, *args: Any, timeout: float = 120.0) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` spawned gloo ranks; their results, by rank.

    Raises ``TimeoutError`` (after killing the ranks) when the world does not finish in ``timeout`` s,
    and ``torch.multiprocessing.ProcessRaisedException`` when a rank raised.
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="vggt_mv_world_") as results:
        ctx = mp.start_processes(_rank_main, args=(fn, world_size, free_port(), results, args), nprocs=world_size,
                                 start_method="spawn", join=False)
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gloo world of {world_size} did not finish in {timeout:.0f}s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join(5)
        out = []
        for rank in range(world_size):
            with open(Path(results) / f"rank{rank}.pkl", "rb") as handle:
                out.append(pickle.load(handle))
        return out
