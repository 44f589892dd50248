"""Per-window cache of aggregator state, so λ / sparse re-runs skip everything upstream.

What is stored: for each window, the ``AggregatorState`` at the input of
``L = model.aggregator.first_affected_layer()`` (the first layer a λ or sparse setting can change),
plus the window's patch-grid confidence (landmark scores for a later ``conf_landmarks`` run).
A hit resumes the layer loop at L: the encoder and layers ``< L`` are not run.

Cache key rule (``window_key``): a hash of everything the snapshot depends on —

* the window's image content (float32 bytes + shape, so resolution is included) and the external
  masks' content (or their absence);
* L itself, the layout (``flat``/``factorized``), the device type and the autocast dtype;
* the epipolar prior (``--epipolar``; it acts on View-SA from layer 0): "off" or a content hash of
  the window's cameras, strength and band;
* the model config **except** the λ values (``mask.lambda_*``, ``mask.learnable_lambdas``), all of
  ``sparse.*``, and head-only settings (``camera_head``, ``depth_head``, ``point_head``,
  ``track_head``, ``enable_*``) and the cosmetic ``name`` / ``notes``. Any other field (e.g.
  ``mask.mask_layer``, ``mask.bias_layers``, ``aa_order``, ``time_bias``) invalidates;
* ``weights_fingerprint(model, L)``: a content fingerprint of the tensors the snapshot depends on
  (every ``aggregator.*`` parameter/buffer except blocks ``>= L``, the separate pose-stream block
  copies, sparse ``memory_tokens``, ``mask_bias`` λ/gains and ``keypoint_bias`` λ_kpt). Tensors of up to 2^16 elements are
  hashed byte for byte; larger ones by a 4096-element strided sample plus their float64 sum and
  sum of squares. It is computed once per (model, L) and recomputed only when a tensor's
  identity or in-place version counter changes (``load_state_dict``, an optimiser step and
  ``p.data = ...`` all do), so it is stable across runs and processes, unlike data pointers.

Eviction: least recently used first, under a byte budget (``max_bytes``); an entry bigger than
the whole budget is not stored. States are kept on CPU by default (``storage="cpu"``) so cached
windows do not hold GPU memory; ``storage="device"`` keeps them where they were computed.
To save memory, snapshot layer outputs that no head reads (not in any DPT head's
``intermediate_layer_idx``) are replaced by zero-stride placeholders before storing.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vggt_mv.model.aggregator import AggregatorState

__all__ = ["PipelineCache", "CacheEntry", "window_key", "weights_fingerprint", "upstream_config"]

_HEAD_FIELDS = ("camera_head", "depth_head", "point_head", "track_head", "enable_camera", "enable_depth",
                "enable_point", "enable_track", "name", "notes")
_MASK_DOWNSTREAM = ("lambda_pose", "lambda_geo", "lambda_pose_t", "lambda_geo_t", "learnable_lambdas")
_FULL_HASH_NUMEL = 1 << 16
_SAMPLE = 4096


def upstream_config(config: Any) -> dict:
    """The config fields the snapshot depends on (see module doc): a JSON-able dict."""
    d = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    for k in _HEAD_FIELDS + ("sparse",):
        d.pop(k, None)
    if isinstance(d.get("mask"), dict):
        d["mask"] = {k: v for k, v in d["mask"].items() if k not in _MASK_DOWNSTREAM}
    return d


def _upstream_tensors(model: torch.nn.Module, layer: int) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of every aggregator parameter/buffer the state at ``layer`` depends on, sorted."""
    agg = model.aggregator
    out = []
    for name, t in list(agg.named_parameters()) + list(agg.named_buffers()):
        parts = name.split(".")
        if parts[0] in ("frame_blocks", "global_blocks") and int(parts[1]) >= layer:
            continue
        if parts[0] in ("pose_frame_blocks", "pose_global_blocks", "memory_tokens", "mask_bias",
                        "keypoint_bias"):
            continue
        out.append((name, t))
    return sorted(out, key=lambda x: x[0])


def _tensor_digest(h: "hashlib._Hash", name: str, t: torch.Tensor) -> None:
    x = t.detach()
    h.update(f"{name}|{tuple(x.shape)}|{x.dtype}|".encode())
    flat = x.reshape(-1)
    if flat.numel() <= _FULL_HASH_NUMEL:
        h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        return
    idx = torch.linspace(0, flat.numel() - 1, _SAMPLE, device=flat.device).long()
    h.update(flat[idx].cpu().contiguous().view(torch.uint8).numpy().tobytes())
    f64 = flat.double()
    h.update(np.array([f64.sum().item(), (f64 * f64).sum().item()]).tobytes())


def weights_fingerprint(model: torch.nn.Module, layer: int | None = None) -> str:
    """Content fingerprint of the weights upstream of ``layer`` (default: first affected layer).

    Cached on the model; recomputed when any involved tensor is replaced or modified in place.
    """
    if layer is None:
        layer = model.aggregator.first_affected_layer()
    tensors = _upstream_tensors(model, layer)
    try:
        signature = tuple((n, id(t), t.data_ptr(), t._version, t.dtype, t.device.type) for n, t in tensors)
    except RuntimeError:  # inference tensors have no version counter: hash every time
        signature = None
    memo: dict = model.__dict__.setdefault("_vggt_mv_fingerprints", {})
    hit = memo.get(layer)
    if signature is not None and hit is not None and hit[0] == signature:
        return hit[1]
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in tensors:
            _tensor_digest(h, name, t)
    digest = h.hexdigest()[:32]
    memo[layer] = (signature, digest)
    return digest


def _content_hash(t: torch.Tensor | None) -> str:
    if t is None:
        return "none"
    x = t.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(f"{tuple(x.shape)}|".encode())
    h.update(x.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def window_key(model: torch.nn.Module, images: torch.Tensor, ext_masks: torch.Tensor | None, *,
               layout: str, device: torch.device, autocast_dtype: torch.dtype | None,
               epipolar: str = "off") -> str:
    """Cache key of one window: images ``[..,3,H,W]``, ext_masks ``[..,H,W]`` or None (see module doc);
    ``epipolar``: the identity of the window's epipolar prior ("off" or a content hash of its cameras)."""
    layer = model.aggregator.first_affected_layer()
    parts = {
        "images": _content_hash(images),
        "ext_masks": _content_hash(ext_masks),
        "layer": layer,
        "layout": layout,
        "device": torch.device(device).type,
        "precision": str(autocast_dtype or torch.float32),
        "config": upstream_config(model.config),
        "weights": weights_fingerprint(model, layer),
        "epipolar": epipolar,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _heads_read(model: torch.nn.Module) -> set[int] | None:
    """Layer indices some head reads (None = unknown, keep everything)."""
    idx: set[int] = set()
    cfg = model.config
    for name, on in (("depth_head", cfg.enable_depth), ("point_head", cfg.enable_point)):
        if on:
            idx.update(getattr(cfg, name).intermediate_layer_idx)
    if cfg.enable_track:
        fe = cfg.track_head.feature_extractor
        if fe is None:
            return None
        idx.update(fe.intermediate_layer_idx)
    return {i % cfg.depth for i in idx}


def _map_state(state: AggregatorState, fn) -> AggregatorState:
    """A shallow copy of ``state`` with ``fn`` applied to every tensor."""
    new = copy.copy(state)
    new.streams = {k: fn(v) for k, v in state.streams.items()}
    new.outputs = [fn(o) for o in state.outputs]
    new.mask_logit = None if state.mask_logit is None else fn(state.mask_logit)
    new.external = None if state.external is None else fn(state.external)
    return new


def _placeholder(t: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """A zero-stride (no memory) stand-in with ``t``'s shape and dtype."""
    return torch.zeros((), dtype=t.dtype, device=device or t.device).expand(t.shape)


def _is_placeholder(t: torch.Tensor) -> bool:
    return t.dim() > 0 and t.numel() > 1 and all(s == 0 for s in t.stride())


def _move(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``; placeholders stay placeholders (never materialised)."""
    return _placeholder(t, device) if _is_placeholder(t) else t.detach().to(device)


def _nbytes(t: torch.Tensor | None) -> int:
    if t is None or _is_placeholder(t):
        return 0
    return t.numel() * t.element_size()


@dataclass
class CacheEntry:
    """One window's snapshot and the patch-grid confidence ``[1,Tw,V,h*w]`` of its latest run."""

    state: AggregatorState
    landmark_scores: torch.Tensor | None = None
    nbytes: int = 0
    hits: int = 0


@dataclass
class PipelineCache:
    """LRU cache of per-window ``AggregatorState`` snapshots under a byte budget (thread-safe)."""

    max_bytes: int = 2 << 30
    storage: str = "cpu"  # "cpu" or "device"
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    _entries: "OrderedDict[str, CacheEntry]" = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.storage not in ("cpu", "device"):
            raise ValueError(f"storage must be 'cpu' or 'device', got {self.storage!r}")

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, key: str, device: torch.device | str | None = None) -> CacheEntry | None:
        """The entry for ``key`` (marked most recently used), its tensors moved to ``device``; None on a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            entry.hits += 1
        if device is None:
            return entry
        scores = None if entry.landmark_scores is None else entry.landmark_scores.to(device)
        return CacheEntry(_map_state(entry.state, lambda t: _move(t, device)), scores, entry.nbytes, entry.hits)

    def put(self, key: str, state: AggregatorState, model: torch.nn.Module | None = None,
            landmark_scores: torch.Tensor | None = None) -> bool:
        """Store ``state`` (pruned of layer outputs no head of ``model`` reads); False if over budget."""
        read = _heads_read(model) if model is not None else None
        state = _map_state(state, lambda t: t)
        state.outputs = [o if read is None or i in read else _placeholder(o) for i, o in enumerate(state.outputs)]
        if self.storage == "cpu":
            state = _map_state(state, lambda t: _move(t, "cpu"))
        size = sum(_nbytes(t) for t in [*state.streams.values(), *state.outputs, state.mask_logit, state.external])
        if landmark_scores is not None:
            landmark_scores = landmark_scores.detach().to("cpu") if self.storage == "cpu" else landmark_scores.detach()
            size += _nbytes(landmark_scores)
        if size > self.max_bytes:
            return False
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = CacheEntry(state, landmark_scores, size)
            while self.nbytes > self.max_bytes:
                self._entries.popitem(last=False)
                self.evictions += 1
        return True

    def set_landmark_scores(self, key: str, scores: torch.Tensor) -> None:
        """Record a run's patch-grid confidence for the window ``key`` (if cached)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                old = _nbytes(entry.landmark_scores)
                entry.landmark_scores = scores.detach().to("cpu") if self.storage == "cpu" else scores.detach()
                entry.nbytes += _nbytes(entry.landmark_scores) - old

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "bytes": self.nbytes, "max_bytes": self.max_bytes, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions}
