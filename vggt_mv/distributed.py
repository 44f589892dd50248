"""torch.distributed plumbing shared by distributed inference and training (no model knowledge).

Runs launched by ``torchrun`` carry ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` in the environment; :func:`init_from_env` reads them, starts the default process
group with the backend ``cpu:gloo,cuda:nccl`` (CPU tensors go over gloo, CUDA tensors over NCCL)
and picks the device ``cuda:LOCAL_RANK`` (or the CPU when asked for, or when CUDA is absent).
Without those variables a run is one process and nothing is initialised.

Collective timeout: every blocking collective / point-to-point wait gives up after
``timeout_s`` seconds (default :data:`DEFAULT_TIMEOUT_S` = 1800 s = 30 min, or the
``VGGT_MV_DIST_TIMEOUT`` environment variable in seconds). It must exceed the longest time one rank
may wait for another: loading the model plus the longest window (inference), or the slowest step
plus a checkpoint write (training). A rank that dies is normally noticed much sooner: ``torchrun``
stops the other ranks with SIGTERM, which :func:`on_sigterm` turns into :class:`Terminated` so
``finally`` blocks (temp folders) run.

Output: only rank 0 logs at INFO and shows progress (:func:`quiet_other_ranks`,
:func:`is_main_process`); errors of other ranks are prefixed with their rank (:func:`rank_prefix`).
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

__all__ = ["DistEnv", "DEFAULT_TIMEOUT_S", "BACKEND", "Terminated", "under_torchrun", "env_rank", "timeout_s",
           "init_from_env", "backend", "shutdown", "is_main_process", "quiet_other_ranks", "rank_prefix", "on_sigterm",
           "wait_for", "current"]

log = logging.getLogger("vggt_mv.distributed")

#: default collective timeout in seconds (override with VGGT_MV_DIST_TIMEOUT)
DEFAULT_TIMEOUT_S = 1800.0
TIMEOUT_ENV = "VGGT_MV_DIST_TIMEOUT"
#: one process group for both kinds of tensors (``cpu:gloo`` alone on a torch built without NCCL)
BACKEND = "cpu:gloo,cuda:nccl"


def backend() -> str:
    """:data:`BACKEND`, or ``cpu:gloo`` when this torch has no NCCL (CPU-only builds)."""
    import torch.distributed as dist

    return BACKEND if dist.is_nccl_available() else "cpu:gloo"
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM (torchrun stopping the ranks after one failed)."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + int(signum))
        self.signum = int(signum)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the run: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    timeout_s: float = DEFAULT_TIMEOUT_S
    initialized: bool = False  # this process group was started by init_from_env

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_CURRENT: DistEnv | None = None


def under_torchrun() -> bool:
    """True when torchrun's variables (RANK, WORLD_SIZE, ...) are all set."""
    return all(v in os.environ for v in _TORCHRUN_VARS)


def env_rank() -> int:
    """This process's rank from the environment (0 outside torchrun), usable before init."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def timeout_s(value: float | None = None) -> float:
    """The collective timeout: ``value``, else ``VGGT_MV_DIST_TIMEOUT``, else the default."""
    if value is None:
        text = os.environ.get(TIMEOUT_ENV, "")
        try:
            value = float(text) if text else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ValueError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds") from None
    if not value > 0:
        raise ValueError(f"the collective timeout must be > 0 seconds, got {value}")
    return float(value)


def _pick_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    """``cpu`` stays on the CPU; ``auto``/``cuda``/None -> ``cuda:LOCAL_RANK`` when CUDA exists."""
    text = "auto" if device is None else str(device)
    if text == "cpu":
        return torch.device("cpu")
    if text in ("auto", "cuda") or text.startswith("cuda"):
        if torch.cuda.is_available():
            if local_rank >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) on "
                                 "this machine; use --nproc_per_node <= the number of GPUs")
            return torch.device("cuda", local_rank)
        if text != "auto":
            raise ValueError(f"--device {text}: CUDA is not available on this machine; use --device cpu")
        return torch.device("cpu")
    raise ValueError(f"--device {text} under torchrun: use auto, cuda or cpu (each rank takes cuda:LOCAL_RANK)")


def init_from_env(device: str | torch.device | None = None, timeout: float | None = None) -> DistEnv:
    """Start the process group from torchrun's environment (a 1-process ``DistEnv`` outside it).

    Idempotent: a second call returns the first call's ``DistEnv``. An already initialised group
    (a test world) is adopted as is.
    """
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    import torch.distributed as dist

    seconds = timeout_s(timeout)
    if dist.is_available() and dist.is_initialized():  # e.g. a test world started by the caller
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        _CURRENT = DistEnv(dist.get_rank(), dist.get_world_size(), local, _pick_device(device, local), seconds)
        return _CURRENT
    if not under_torchrun():
        dev = torch.device("cpu") if str(device) == "cpu" else None
        return DistEnv(device=dev or torch.device("cpu"), timeout_s=seconds)
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    dev = _pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend(), timeout=datetime.timedelta(seconds=seconds),
                            device_id=dev if dev.type == "cuda" else None)
    _CURRENT = DistEnv(rank, world, local, dev, seconds, initialized=True)
    log.debug("rank %d/%d on %s (backend %s, timeout %.0fs)", rank, world, dev, BACKEND, seconds)
    return _CURRENT


def current() -> DistEnv | None:
    """The ``DistEnv`` of :func:`init_from_env`, or None before it."""
    return _CURRENT


def shutdown() -> None:
    """Destroy the process group this module started (safe to call twice)."""
    global _CURRENT
    env, _CURRENT = _CURRENT, None
    if env is not None and env.initialized:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0 (or a single process); works before the group is initialised."""
    if _CURRENT is not None:
        return _CURRENT.is_main
    return env_rank() == 0


def rank_prefix() -> str:
    """``"rank N: "`` on ranks other than 0 under a multi-process run, else ``""``."""
    world = _CURRENT.world_size if _CURRENT is not None else int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = _CURRENT.rank if _CURRENT is not None else env_rank()
    return f"rank {rank}: " if world > 1 and rank != 0 else ""


def quiet_other_ranks() -> None:
    """Ranks other than 0 log warnings and errors only (rank 0 keeps the configured level)."""
    if not is_main_process():
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
        logging.getLogger("vggt_mv").setLevel(logging.WARNING)


@contextlib.contextmanager
def on_sigterm(cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` in the main thread (after ``cleanup``),
    so ``finally`` / ``except BaseException`` blocks remove temp output; the previous handler is
    restored on exit. Blocking waits should poll (see :func:`wait_for`) so the signal is seen."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # signals are delivered to the main thread only
        return

    def handler(signum, _frame):
        if cleanup is not None:
            cleanup()
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_for(work, what: str, timeout: float | None = None, poll_s: float = 0.1) -> None:
    """Wait for an async ``torch.distributed`` work handle so that signals are still handled.

    gloo's point-to-point work completes only inside ``work.wait()``, which blocks in C++ where no
    Python signal handler runs; so a helper thread waits and the main thread joins it in short
    slices (SIGTERM then raises :class:`Terminated` here). ``what`` names what is awaited (e.g.
    ``"window 3 from rank 1"``); after ``timeout`` seconds (default: the collective timeout) raises
    ``TimeoutError`` naming it, and a failed work (a peer's connection closed) ``RuntimeError``.
    """
    import threading

    limit = timeout_s(timeout if timeout is not None else (_CURRENT.timeout_s if _CURRENT else None))
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            work.wait(datetime.timedelta(seconds=limit))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)

    thread = threading.Thread(target=waiter, name=f"wait {what}", daemon=True)
    thread.start()
    deadline = time.monotonic() + limit
    while thread.is_alive():
        thread.join(poll_s)
        if thread.is_alive() and time.monotonic() > deadline + 5.0:
            break
    if thread.is_alive() or (errors and "timed out" in str(errors[0]).lower()):
        raise TimeoutError(f"timed out after {limit:.0f}s waiting for {what} (the collective timeout; raise "
                           f"{TIMEOUT_ENV} if loading the model plus one window takes longer)")
    if errors:
        e = errors[0]
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(f"lost {what}: {first}")
