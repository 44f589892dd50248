"""Finished windows travel to rank 0 point-to-point (torch.distributed send/recv of CPU tensors).

Protocol, per window ``i`` run by rank ``r = i mod N`` (``r != 0``):

1. rank 0, when it is ready to stitch window ``i`` (all earlier windows stitched), sends ``[i]``
   (int64) to rank ``r``: "ready for window i";
2. rank ``r`` (which has finished window ``i`` and waits for that go-ahead before computing its
   next window, so it never holds more than one finished window) sends a header (JSON: window
   index, its info dict, array names/dtypes/shapes) as length + bytes, then each array.

Every wait polls (``vggt_mv.distributed.wait_for``) so SIGTERM is handled, and gives up after the
collective timeout with an error naming the window and the rank.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from vggt_mv.distributed import wait_for

__all__ = ["WindowPayload", "RankFailure", "send_window", "receive_window"]


class RankFailure(RuntimeError):
    """Another rank failed (or this run was stopped) while a window was awaited: names rank and window."""


@dataclass
class WindowPayload:
    """What one window contributes to the result: named CPU arrays plus its info dict."""

    index: int
    arrays: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))


def _send(tensor: torch.Tensor, dst: int, what: str, timeout: float | None) -> None:
    import torch.distributed as dist

    wait_for(dist.isend(tensor, dst), what, timeout)


def _recv(tensor: torch.Tensor, src: int, what: str, timeout: float | None) -> torch.Tensor:
    import torch.distributed as dist

    wait_for(dist.irecv(tensor, src), what, timeout)
    return tensor


def send_window(payload: WindowPayload, dst: int = 0, timeout: float | None = None,
                before_send: Callable[[], None] | None = None) -> int:
    """Wait until ``dst`` asks for ``payload.index``, then (after ``before_send``, a test hook) send
    it; returns the bytes sent."""
    ready = _recv(torch.full((1,), -1, dtype=torch.int64), dst, f"rank {dst} to ask for window {payload.index}",
                  timeout)
    if int(ready.item()) != payload.index:
        raise RankFailure(f"rank {dst} asked for window {int(ready.item())} but window {payload.index} is next here "
                          "(ranks disagree on the window plan)")
    if before_send is not None:
        before_send()
    names = sorted(payload.arrays)
    arrays = [np.ascontiguousarray(payload.arrays[n]) for n in names]
    header = json.dumps({"index": payload.index, "info": payload.info,
                         "arrays": [[n, a.dtype.str, list(a.shape)] for n, a in zip(names, arrays)]}).encode()
    what = f"rank {dst} to take window {payload.index}"
    head = torch.frombuffer(bytearray(header), dtype=torch.uint8)
    _send(torch.tensor([len(header)], dtype=torch.int64), dst, what, timeout)
    _send(head, dst, what, timeout)
    for a in arrays:
        _send(torch.from_numpy(a), dst, what, timeout)
    return 8 + len(header) + int(sum(a.nbytes for a in arrays))


def receive_window(index: int, src: int, timeout: float | None = None) -> tuple[WindowPayload, int]:
    """Ask rank ``src`` for window ``index`` and receive it -> ``(payload, bytes received)``."""
    what = f"window {index} from rank {src}"
    _send(torch.tensor([index], dtype=torch.int64), src, what, timeout)
    length = int(_recv(torch.zeros(1, dtype=torch.int64), src, what, timeout).item())
    header = json.loads(bytes(_recv(torch.empty(length, dtype=torch.uint8), src, what, timeout).numpy()))
    if header["index"] != index:
        raise RankFailure(f"rank {src} sent window {header['index']} when window {index} was asked for")
    arrays = {}
    total = 8 + length
    for name, dtype, shape in header["arrays"]:
        buf = np.empty(shape, np.dtype(dtype))
        _recv(torch.from_numpy(buf), src, what, timeout)
        arrays[name] = buf
        total += buf.nbytes
    return WindowPayload(index, arrays, header["info"]), total
