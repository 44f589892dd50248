"""Reading checkpoint files by content: torch ``.pt`` (zip or legacy), ``.safetensors``; Pi3 vs VGGT/PAGE.

Files are opened lazily: only the key/shape index is read up front, tensors are read one at a time
(safetensors by offset with plain file reads; torch zip through ``torch.load(mmap=True)`` with each
tensor's pages released after use), so loading never holds two full copies of a multi-GB model.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError

Kind = Literal["pi3", "vggt"]

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_WRAPPERS = ("model", "state_dict", "model_state_dict", "module")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the file named and a fix suggested."""


def _unpickler_reason(text: str) -> str:
    """torch's weights_only error text -> its one specific line (e.g. "Unsupported operand 94")."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(lines[:-1]):
        if "WeightsUnpickler error" in ln:
            return lines[i + 1][:200]
    return (lines[-1] if lines else "unreadable")[:200]


def _libc_madvise():
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc.madvise
    except OSError:  # not glibc: pages are simply released when the file is closed
        return None


_MADVISE = _libc_madvise()
_MADV_DONTNEED = 4


def release_pages(t: torch.Tensor) -> None:
    """Drop the resident pages of a tensor backed by a private file mapping (they re-read on access)."""
    if _MADVISE is None or t.device.type != "cpu" or t.numel() == 0:
        return
    page = mmap.PAGESIZE
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    lo, hi = -(-start // page) * page, end // page * page  # only whole pages inside the tensor
    if hi > lo:
        _MADVISE(lo, hi - lo, _MADV_DONTNEED)


@dataclass
class CheckpointFile:
    """A lazily read checkpoint: ``keys`` maps name -> (shape, dtype) in file order."""

    path: Path
    format: Literal["safetensors", "torch"]
    kind: Kind
    keys: dict[str, tuple[tuple[int, ...], torch.dtype]]
    wrapper: str | None = None
    stripped_prefix: str | None = None
    _tensors: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _offsets: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    def get(self, key: str) -> torch.Tensor:
        """The tensor stored under ``key`` (a fresh CPU tensor or a view of the mapped file)."""
        if self.format == "safetensors":
            shape, dtype = self.keys[key]
            start, end = self._offsets[key]
            buf = bytearray(end - start)
            with open(self.path, "rb") as f:
                f.seek(start)
                if f.readinto(buf) != len(buf):
                    raise CheckpointError(f"{self.path}: tensor {key!r} is truncated; the file is incomplete")
            if not buf:
                return torch.empty(shape, dtype=dtype)
            return torch.frombuffer(buf, dtype=dtype).reshape(shape)
        assert self._tensors is not None
        return self._tensors[key]

    def read_into(self, key: str, dst: torch.Tensor) -> bool:
        """Read ``key`` straight into ``dst``'s memory when no cast is needed (safetensors, CPU,
        contiguous, same dtype/shape): no transient copy. Returns False when it cannot."""
        shape, dtype = self.keys[key]
        if (self.format != "safetensors" or dst.device.type != "cpu" or not dst.is_contiguous()
                or dst.dtype != dtype or tuple(dst.shape) != tuple(shape) or dst.numel() == 0):
            return False
        start, end = self._offsets[key]
        view = memoryview(dst.detach().reshape(-1).view(torch.uint8).numpy())
        with open(self.path, "rb") as f:
            f.seek(start)
            if f.readinto(view) != end - start:
                raise CheckpointError(f"{self.path}: tensor {key!r} is truncated; the file is incomplete")
        return True

    def release(self, t: torch.Tensor) -> None:
        if self.format == "torch":
            release_pages(t)

    def close(self) -> None:
        self._tensors = None

    def describe(self) -> str:
        wrap = f", wrapped in {{'{self.wrapper}': ...}}" if self.wrapper else ""
        pre = f", '{self.stripped_prefix}' prefix stripped" if self.stripped_prefix else ""
        return f"{self.path} ({self.format}, {self.kind} keys, {len(self.keys)} tensors{wrap}{pre})"


def _detect_kind(path: Path, keys: list[str]) -> Kind:
    if any(k.startswith("aggregator.") for k in keys):
        return "vggt"
    if any(k.startswith("decoder.") for k in keys) and any(k.startswith("encoder.") for k in keys):
        return "pi3"
    sample = ", ".join(keys[:5])
    raise CheckpointError(
        f"{path}: neither a VGGT/PAGE-4D checkpoint (aggregator.* keys) nor a Pi3 model "
        f"(encoder.*/decoder.* keys); first keys: {sample or '(none)'}"
    )


def _safetensors_header(path: Path) -> tuple[dict | None, int]:
    """The parsed JSON header of a ``.safetensors`` file (None if it is not JSON) and its length."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > size - 8:
            raise CheckpointError(f"{path}: safetensors header claims {n} bytes but the file has {size}; truncated?")
        try:
            return json.loads(f.read(n)), n
        except ValueError:
            return None, n


def _read_safetensors_index(path: Path) -> tuple[dict, dict]:
    size = path.stat().st_size
    header, n = _safetensors_header(path)
    if not isinstance(header, dict) or not all(
            isinstance(v, dict) and {"dtype", "shape", "data_offsets"} <= set(v) for k, v in header.items()
            if k != "__metadata__"):
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON of tensor entries; the file is "
                              "truncated or corrupt (re-download or re-save it)")
    header.pop("__metadata__", None)
    keys, offsets = {}, {}
    base = 8 + n
    for name, info in header.items():
        if info["dtype"] not in _ST_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        if base + end > size:
            raise CheckpointError(
                f"{path}: tensor {name!r} ends at byte {base + end} but the file has {size} bytes; "
                "the file is truncated (re-download or re-save it)"
            )
        keys[name] = (tuple(info["shape"]), _ST_DTYPES[info["dtype"]])
        offsets[name] = (base + start, base + end)
    return keys, offsets


def _unwrap(path: Path, obj) -> tuple[dict[str, torch.Tensor], str | None, str | None]:
    wrapper = None
    if isinstance(obj, dict):
        for w in _WRAPPERS:
            if w in obj and isinstance(obj[w], dict) and obj[w] and all(isinstance(k, str) for k in obj[w]):
                if any(isinstance(v, torch.Tensor) for v in obj[w].values()):
                    obj, wrapper = obj[w], w
                    break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{path}: expected a state_dict (a dict of tensors, optionally under 'model'), "
            f"got {type(obj).__name__}{' (empty)' if isinstance(obj, dict) else ''}"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: the dict holds no tensors (keys: {list(obj)[:5]})")
    prefix = None
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
        prefix = "module."
    return tensors, wrapper, prefix


def embedded_config(path: str | Path) -> dict | None:
    """The model config a vggt-mv ``.safetensors`` carries in its header (``vggt_mv_config``), else None."""
    try:
        header, _ = _safetensors_header(Path(path))
        meta = header.get("__metadata__") or {}
        return json.loads(meta["vggt_mv_config"]) if "vggt_mv_config" in meta else None
    except (OSError, ValueError, struct.error, AttributeError):  # CheckpointError is a ValueError
        return None


def open_checkpoint(path: str | Path, expect: Kind | None = None, role: str = "checkpoint") -> CheckpointFile:
    """Open ``path`` by content. ``expect`` checks the kind (a Pi3 file given as ``checkpoint`` is an error)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{role} file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the {role} file itself (.pt or .safetensors)")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or save did not complete")
    with open(path, "rb") as f:
        head = f.read(16)
    is_zip = head[:4] == b"PK\x03\x04"
    is_st = len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < size
    if path.suffix == ".safetensors" and not is_st and not is_zip:
        raise CheckpointError(f"{path}: not a safetensors file (no valid header: cut short, or not a checkpoint); "
                              "re-download or re-save it")
    if is_st and not is_zip:
        keys, offsets = _read_safetensors_index(path)
        ck = CheckpointFile(path, "safetensors", _detect_kind(path, list(keys)), keys, _offsets=offsets)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
        except pickle.UnpicklingError as e:
            text = str(e)
            needs_code = [ln.strip() for ln in text.splitlines() if "Unsupported global" in ln or "GLOBAL" in ln]
            if not needs_code:
                raise CheckpointError(
                    f"{path}: cannot read as a torch checkpoint ({_unpickler_reason(text)}); the file is "
                    "truncated or corrupt, or not a checkpoint"
                ) from None
            raise CheckpointError(
                f"{path}: refusing to unpickle: the file needs code to load ({needs_code[0][:200]}), and "
                "checkpoints are read with weights_only=True. Re-save it as a plain state_dict in a trusted "
                "environment, e.g. torch.save(torch.load(p, weights_only=False)['model'], 'clean.pt')"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError, SafetensorError) as e:
            raise CheckpointError(
                f"{path}: cannot read as a torch checkpoint ({str(e).splitlines()[0]}); the file is "
                "truncated or corrupt, or not a checkpoint"
            ) from None
        tensors, wrapper, prefix = _unwrap(path, obj)
        keys = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
        ck = CheckpointFile(path, "torch", _detect_kind(path, list(keys)), keys, wrapper, prefix, _tensors=tensors)
    if expect is not None and ck.kind != expect:
        hint = {
            "pi3": "it looks like a VGGT/PAGE-4D checkpoint: pass it as --checkpoint / checkpoint=",
            "vggt": "it looks like a Pi3 model.safetensors: pass it as --pi3 / pi3=",
        }[expect]
        raise CheckpointError(f"{path} was given as the {role} but {hint}")
    return ck
