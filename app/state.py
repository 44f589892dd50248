"""Run parameters of the viewer, the shared model cache, and the run function.

Per-tab sessions (viser server, results, files) live in ``sessions.py``.

Models are cached process-wide (loading the 1B model twice would double memory) and shared
between sessions; the per-run settings (λs, sparse strategy, layout) are applied and the model
run under one global lock, so concurrent tabs cannot see each other's settings.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vggt_mv.inference.pipeline import Cancelled
from vggt_mv.inference.pipeline import reconstruct
from vggt_mv.inference.reconstruction import Reconstruction
from vggt_mv.weights.demo import demo_weights

from .sessions import CancelToken, SessionExpired, SessionRegistry, SessionState  # noqa: F401 (re-exported)

log = logging.getLogger("vggt_mv.app")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "assets" / "sample"
PRESETS = ("tiny", "vggt_mv", "vggt_mv_fin10", "vggt", "page4d", "page4d_mask", "page4d_fin10")
EPIPOLAR = ("off", "gt", "previous")
STRATEGIES = ("none", "landmark", "dilated", "memory_bank")
LAYOUTS = ("auto", "factorized", "flat")
RESOLUTIONS = (56, 112, 168, 224, 280, 336, 392, 518)

RUN_LOCK = threading.Lock()
_MODEL_CACHE: dict[tuple, tuple[Any, str]] = {}
_MODEL_LOCK = threading.Lock()


class UserError(ValueError):
    """A problem with the user's input; its message is shown in the page as-is."""


class MemoryRefusal(UserError):
    """The memory estimate says the run will not fit; the message names what would."""


# ---------------------------------------------------------------------------- run parameters
@dataclass
class RunParams:
    views: list[str] = field(default_factory=lambda: [str(SAMPLE_DIR)])
    preset: str = "tiny"
    checkpoint: str | None = None
    pi3: str | None = None
    device: str = "cpu"
    resolution: int = 224
    window: int = 8
    overlap: int = 2
    lambda_pose: float = 0.0
    lambda_geo: float = 0.0
    lambda_pose_t: float = 0.0
    lambda_geo_t: float = 0.0
    strategy: str = "none"
    layout: str = "auto"
    frame_start: int = 0
    frame_stop: int = 0       # 0 = to the end
    stride: int = 1
    config: str | None = None        # a model_config.json instead of the preset
    time_bias: float = 0.0           # Time-SA relative-time bias -s*(dt)^2
    query_points: str | None = None  # .npy [N,2] reference-image pixels or [N,4] (t,x,y,z)
    epipolar: str = "off"            # off | gt (scene's GT cameras) | previous (this tab's last run)
    allow_partial: bool = False  # load weights that do not cover the model (banner says so)
    lambda_kpt: float = 0.0          # keypoint bias of the sparse layers: geo rows
    lambda_kpt_pose: float = 0.0     # ... and pose rows
    keypoints: str = "none"          # none | sift[:K] | a server-side SegAnyMo / keypoint folder

    def same_input(self, other: "RunParams | None") -> bool:
        """The same frames through the same weights: only settings (λ, sparse, keypoints, windows, ...)
        differ, so the viewer keeps its frame and the change shows as motion of the geometry."""
        keys = ("resolution", "frame_start", "frame_stop", "stride", "preset", "checkpoint", "pi3",
                "config", "allow_partial")
        same_views = other is not None and [Path(v).resolve() for v in self.views] == \
            [Path(v).resolve() for v in other.views]  # assets/sample == /abs/path/assets/sample
        return same_views and all(getattr(self, k) == getattr(other, k) for k in keys)


def parse_views(text: str) -> list[str]:
    """One camera (folder or video) per line, or a single scene root. Validates existence."""
    lines = [ln.strip().strip('"').strip("'") for ln in (text or "").replace(",", "\n").splitlines()]
    paths = [ln for ln in lines if ln]
    if not paths:
        raise UserError("No scene given: enter one camera folder (or video) per line, or a scene root "
                        f"such as {SAMPLE_DIR}.")
    for p in paths:
        if not Path(p).expanduser().exists():
            raise UserError(f"Path not found on the server: {p!r}. Paths are read on the machine running "
                            "vggt-mv-app; give one camera folder/video per line, or a scene root "
                            f"(e.g. {SAMPLE_DIR}).")
    return [str(Path(p).expanduser()) for p in paths]


def resolution_choices(preset: str) -> list[int]:
    """The widths the page offers for ``preset``: ``RESOLUTIONS`` up to the preset's training size."""
    from vggt_mv.config import ModelConfig

    top = ModelConfig.preset(preset).img_size if preset in PRESETS else max(RESOLUTIONS)
    return [r for r in RESOLUTIONS if r <= top]


def lambda_bound(preset: str) -> float:
    from vggt_mv.config import ModelConfig

    cfg = ModelConfig.preset(preset)
    return float(cfg.mask.lambda_bound) if cfg.mask.enabled else 0.0


def kpt_bound(preset: str) -> float:
    """Bound of the keypoint-bias lambdas (``sparse.lambda_kpt_bound``) of a preset."""
    from vggt_mv.config import ModelConfig

    return float(ModelConfig.preset(preset).sparse.lambda_kpt_bound)


def load_params_keypoints(params: RunParams, scene: Any) -> Any:
    """``params.keypoints`` loaded for ``scene`` into ``scene.keypoints`` (``[T,V,H,W]``) or None."""
    src = (params.keypoints or "none").strip()
    if src == "none":
        return None
    from vggt_mv.data.keypoints import load_keypoints, parse_keypoint_source

    try:
        parsed = parse_keypoint_source(src if src.startswith("sift") else str(Path(src).expanduser()))
        scene.keypoints = load_keypoints(parsed, scene)
    except (ValueError, OSError) as exc:
        raise UserError(str(exc)) from exc
    scene.source["keypoints"] = parsed.describe()
    return scene.keypoints


def resolve_device(device: str) -> str:
    import torch

    device = (device or "cpu").strip()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"Device {device!r} requested but no CUDA GPU is visible to torch; choose 'cpu'.")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError("Device 'mps' requested but not available; choose 'cpu'.")
    return device


def get_model(preset: str, checkpoint: str | None, pi3: str | None, device: str,
              strategy: str, allow_partial: bool = False, config: str | None = None) -> tuple[Any, str]:
    """Cached ``(model, banner)``; ``memory_bank`` builds its own model (it owns memory tokens).
    ``config``: a model_config.json used instead of ``preset`` (no bundled demo weights then)."""
    from vggt_mv.config import ModelConfig

    from vggt_mv.weights.hub import resolve_weights

    try:  # names and hf:// URIs become cached files (downloaded once) before anything stats them
        checkpoint = str(resolve_weights(checkpoint, "checkpoint")) if checkpoint else None
        pi3 = str(resolve_weights(pi3, "Pi3 weights")) if pi3 else None
    except (ValueError, OSError) as exc:
        raise UserError(str(exc)) from exc
    if config and not Path(config).expanduser().is_file():
        raise UserError(f"model config file not found: {config!r} (give a local model_config.json path)")
    bank = strategy == "memory_bank"
    auto = None if (checkpoint or pi3 or config) else demo_weights(preset)
    cfg_id = None if not config else f"{Path(config).resolve()}:{Path(config).stat().st_mtime_ns}"
    key = (preset, checkpoint, pi3, device, bank, str(auto), allow_partial, cfg_id)
    with _MODEL_LOCK:
        if key in _MODEL_CACHE:
            return _MODEL_CACHE[key]
        try:
            cfg = ModelConfig.from_json(config) if config else ModelConfig.preset(preset)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        if bank:
            cfg.sparse.strategy = "memory_bank"
            cfg.validate()
        ckpt = checkpoint or (str(auto) if auto else None)
        from vggt_mv.weights import load_model
        from vggt_mv.weights.loader import partial_weights_note

        try:
            model, report = load_model(cfg, checkpoint=ckpt, pi3=pi3, device=device, strict=not allow_partial)
        except ValueError as exc:  # wrong file / role / variant: show it, keep the app running
            raise UserError(str(exc)) from exc
        if ckpt or pi3:
            names = ", ".join(Path(p).name for p in (ckpt, pi3) if p)
            loaded = "; ".join(f"{src} {100 * report.fraction_loaded(src):.0f}% loaded" for src in report.source_totals)
            banner = f"weights: {names} ({'bundled demo weights' if auto else 'user files'}) — {loaded}"
        else:
            banner = f"random {preset if not config else Path(config).name} weights: geometry is not meaningful"
        if report.mask_head_reason and (ckpt or pi3):
            banner += f" · mask head {report.mask_head or 'none'}, track head {'on' if report.track_head else 'off'}"
        partial = partial_weights_note(model)
        if partial:
            banner = f"{partial.upper()[:1]}{partial[1:]}: " + banner
        if bank:
            banner += " · memory_bank: model rebuilt with fresh (untrained) memory tokens"
        model.eval()
        _MODEL_CACHE[key] = (model, banner)
        return model, banner


_CACHE: list[Any] = []


def _pipeline_cache() -> Any:
    """One process-wide ``PipelineCache`` (keys are content hashes, so sharing across tabs is safe)."""
    if not _CACHE:
        from vggt_mv.inference.cache import PipelineCache

        _CACHE.append(PipelineCache(max_bytes=1 << 30))
    return _CACHE[0]


def _gt_dict(scene: Any) -> dict | None:
    gt = getattr(scene, "gt", None)
    if gt is None:
        return None
    out = {k: getattr(gt, k) for k in ("depth", "intrinsic", "extrinsic", "dynamic_mask")
           if getattr(gt, k, None) is not None}
    return out or None


def load_params_scene(params: RunParams, check_only: bool = False) -> Any:
    """The scene a run would use (validated options, frame range, resolution); ``check_only``:
    validate the options and return None without reading the scene."""
    from vggt_mv.data.scene import load_scene

    if params.preset not in PRESETS:
        raise UserError(f"unknown preset {params.preset!r}; choose one of {', '.join(PRESETS)}")
    if params.strategy not in STRATEGIES:
        raise UserError(f"unknown sparse strategy {params.strategy!r}")
    if params.resolution % 14:
        raise UserError(f"resolution must be a multiple of 14, got {params.resolution}")
    if params.resolution > max(resolution_choices(params.preset)):
        raise UserError(f"resolution {params.resolution} is above the largest offered for preset {params.preset} "
                        f"({max(resolution_choices(params.preset))}); pick one from the list")
    if check_only:
        return None
    views: Any = params.views[0] if len(params.views) == 1 else list(params.views)
    stop = params.frame_stop if params.frame_stop and params.frame_stop > 0 else None
    try:
        scene = load_scene(views, resolution=int(params.resolution),
                           frame_range=(int(params.frame_start) or None, stop), stride=max(1, int(params.stride)))
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise UserError(f"could not load the scene from {', '.join(params.views)}: {exc}") from exc
    if scene.T < 1:
        raise UserError("the frame range selects no frames; widen start/stop or lower the stride")
    return scene


def _params_config(params: RunParams) -> Any:
    from vggt_mv.config import ModelConfig

    try:
        cfg = ModelConfig.from_json(params.config) if params.config else ModelConfig.preset(params.preset)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if params.strategy == "memory_bank":
        cfg.sparse.strategy = "memory_bank"
    return cfg


def params_shape(params: RunParams) -> tuple[int, int, int, int, bool]:
    """``(T, V, H, W, has_gt)`` of the run ``params`` describe, from listings and image headers only."""
    from vggt_mv.inference.estimate import scene_shape

    load_params_scene(params, check_only=True)
    views: Any = params.views[0] if len(params.views) == 1 else list(params.views)
    stop = params.frame_stop if params.frame_stop and params.frame_stop > 0 else None
    try:
        return scene_shape(views, resolution=int(params.resolution),
                           frame_range=(int(params.frame_start) or None, stop), stride=max(1, int(params.stride)))
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise UserError(f"could not load the scene from {', '.join(params.views)}: {exc}") from exc


def _model_cached(params: RunParams, device: str) -> bool:
    return any(k[0] == params.preset and k[3] == device and k[4] == (params.strategy == "memory_bank")
               and k[1] is None and k[2] is None and k[7] is None for k in _MODEL_CACHE) and not (
        params.checkpoint or params.pi3 or params.config)


def memory_problem(params: RunParams) -> str | None:
    """None if the run fits in memory, else the page's refusal with the largest resolution / window /
    frame range that would fit (the same check as ``vggt-mv reconstruct``)."""
    from vggt_mv.inference.estimate import RunShape, check_memory

    device = resolve_device(params.device)
    t, v, h, w, gt = params_shape(params)
    layout = None if params.layout in ("auto", "", None) else params.layout
    problem = check_memory(_params_config(params), RunShape(t, v, h, w, int(params.window), int(params.overlap)),
                           device=device, resolutions=resolution_choices(params.preset), gt=gt, layout=layout,
                           model_loaded=_model_cached(params, device))
    if problem is None:
        return None
    return f"{problem}. Change one of those and press Run again."


def estimate_params(params: RunParams) -> str:
    """A one-line time/memory estimate for the run ``params`` describe (before it starts)."""
    from vggt_mv.inference.estimate import estimate_run

    t, v, h, w, gt = params_shape(params)
    layout = None if params.layout in ("auto", "", None) else params.layout
    device = resolve_device(params.device)
    est = estimate_run(_params_config(params), t, v, h, w, window=int(params.window),
                       overlap=int(params.overlap), layout=layout, device=device, gt=gt,
                       model_loaded=_model_cached(params, device))
    return f"Estimated {est} for T={t} × V={v} at {h}×{w}."


def attention_diagnostics(params: RunParams) -> list[list[str]]:
    """Per bias layer: camera-token attention mass on dynamic patches with vs without the bias,
    on the first window of the scene with the current λ."""
    from vggt_mv.eval.attention_mass import camera_attention_mass

    scene = load_params_scene(params)
    device = resolve_device(params.device)
    model, _ = get_model(params.preset, params.checkpoint, params.pi3, device, params.strategy,
                         params.allow_partial, params.config)
    keypoints = load_params_keypoints(params, scene)
    kpt_on = keypoints is not None and params.strategy in ("landmark", "dilated")
    if not model.config.mask.enabled and not kpt_on:
        raise UserError(f"preset {params.preset} has no dynamic-mask head and no keypoints are given (with a "
                        "landmark / dilated sparse strategy): nothing to diagnose")
    layout = None if params.layout in ("auto", "", None) else params.layout
    images = scene.images[: int(params.window)][None].to(device)
    rows = []
    with RUN_LOCK:
        if model.config.mask.enabled:
            model.set_lambdas(lambda_pose=params.lambda_pose, lambda_geo=params.lambda_geo,
                              lambda_pose_t=params.lambda_pose_t, lambda_geo_t=params.lambda_geo_t)
            model.config.sparse.strategy = params.strategy
            rows = [{**r, "stream": f"{r['stream']} · dynamic"} for r in camera_attention_mass(model, images, layout=layout)]
        if kpt_on:
            from vggt_mv.eval.attention_mass import keypoint_attention_mass

            b = model.aggregator.keypoint_bias.bound
            model.set_keypoint_lambdas(lambda_kpt=float(np.clip(params.lambda_kpt, -b, b)),
                                       lambda_kpt_pose=float(np.clip(params.lambda_kpt_pose, -b, b)))
            model.config.sparse.strategy = params.strategy
            kp = keypoints[: int(params.window)][None].to(device)
            rows += [{**r, "stream": f"{r['stream']} · keypoints"}
                     for r in keypoint_attention_mass(model, images, kp, layout=layout)]
    return [[str(r["layer"]), r["stream"], f"{r['mass_without_bias']:.4f}", f"{r['mass_with_bias']:.4f}",
             f"{r['mass_with_bias'] - r['mass_without_bias']:+.4f}"] for r in rows]


def _run_inputs(params: RunParams, scene: Any, model: Any, layout: str | None,
                previous: Reconstruction | None) -> tuple[Any, Any]:
    """(query points ``[N,2]`` or None, ``EpipolarCameras`` or None) for a run; ``UserError`` when unusable."""
    from vggt_mv.inference.priors import epipolar_cameras, load_query_points

    try:
        qp = None
        if params.query_points:
            if not Path(params.query_points).expanduser().is_file():
                raise ValueError(f"query points file not found: {params.query_points!r} (a server-side .npy path)")
            if getattr(model, "track_head", None) is None:
                raise ValueError("query points need a model with a track head (a checkpoint with track_head.* "
                                 "tensors, or a config with enable_track=true)")
            qp = load_query_points(Path(params.query_points).expanduser(), scene)
        eff = layout or model.config.layout
        epi = epipolar_cameras(params.epipolar or "off", scene, previous,
                               layout=eff if scene.V > 1 else "flat")
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    return qp, epi


def run_reconstruction(params: RunParams, progress: Callable[[float, str], None] | None = None,
                       cancel: CancelToken | None = None,
                       previous: Reconstruction | None = None) -> tuple[Reconstruction, dict[str, Any]]:
    """Load the scene, configure the (cached) model and reconstruct. Raises ``UserError`` for bad input.
    ``previous``: this tab's last run (cameras for ``epipolar="previous"``)."""
    cancel = cancel or CancelToken()
    report = progress or (lambda frac, msg: None)
    t0 = time.time()
    device = resolve_device(params.device)
    report(0.01, "checking memory")
    problem = memory_problem(params)
    if problem:
        raise MemoryRefusal(problem)
    report(0.02, "loading scene")
    scene = load_params_scene(params)
    keypoints = load_params_keypoints(params, scene)
    if cancel.is_set():
        raise Cancelled()
    report(0.1, "loading model")
    model, banner = get_model(params.preset, params.checkpoint, params.pi3, device, params.strategy,
                              params.allow_partial, params.config)
    notes: list[str] = []
    layout = None if params.layout in ("auto", "", None) else params.layout
    query_points, epipolar = _run_inputs(params, scene, model, layout, previous)
    if epipolar is not None:
        notes.append(f"epipolar prior from the {'ground-truth cameras' if epipolar.source == 'gt' else 'previous run'}")
    with RUN_LOCK:
        bound = float(model.config.mask.lambda_bound) if model.config.mask.enabled else 0.0
        lam = dict(lambda_pose=params.lambda_pose, lambda_geo=params.lambda_geo,
                   lambda_pose_t=params.lambda_pose_t, lambda_geo_t=params.lambda_geo_t)
        if model.config.mask.enabled:
            clipped = {k: float(np.clip(v, -bound, bound)) for k, v in lam.items()}
            if clipped != {k: float(v) for k, v in lam.items()}:
                notes.append(f"λ clamped to ±{bound:g} (bound of preset {params.preset})")
            model.set_lambdas(**clipped)
        elif any(lam.values()):
            notes.append(f"preset {params.preset} has no mask head: λ sliders have no effect")
        model.config.sparse.strategy = params.strategy
        kb = model.aggregator.keypoint_bias.bound
        kl = {"lambda_kpt": float(params.lambda_kpt or 0.0), "lambda_kpt_pose": float(params.lambda_kpt_pose or 0.0)}
        if any(abs(v) > kb for v in kl.values()):
            notes.append(f"λ_kpt clamped to ±{kb:g}")
        model.set_keypoint_lambdas(**{k: float(np.clip(v, -kb, kb)) for k, v in kl.items()})
        if any(kl.values()) and (params.strategy == "none" or keypoints is None):
            notes.append("λ_kpt acts on the sparse layers' keypoint patches: choose a sparse strategy and a "
                         "keypoints source")
        model.config.time_bias.strength = float(params.time_bias or 0.0)  # read live by Time-SA
        report(0.15, "reconstructing")
        def prog(*args: Any, **kwargs: Any) -> None:
            frac = next((a for a in args if isinstance(a, (int, float))), None)
            if isinstance(frac, (int, float)) and len(args) >= 2 and isinstance(args[1], (int, float)) and args[1]:
                frac = frac / args[1]  # (done, total)
            msg = kwargs.get("desc") or next((a for a in args if isinstance(a, str)), "reconstructing")
            if cancel.is_set():
                raise Cancelled()
            report(0.15 + 0.8 * float(np.clip(frac if frac is not None else 0.5, 0, 1)), str(msg))

        cache = _pipeline_cache()
        hits0 = cache.hits
        rec = reconstruct(scene, model, window=int(params.window), overlap=int(params.overlap),
                          layout=layout, device=device, progress=prog, cancel=cancel, cache=cache,
                          query_points=query_points, epipolar=epipolar)
        if cache.hits - hits0:
            notes.append(f"reused cached upstream layers for {cache.hits - hits0} window(s)")
    if cancel.is_set():
        raise Cancelled()
    if rec.gt is None:
        rec.gt = _gt_dict(scene)
    rec.keypoints = None if keypoints is None else keypoints.numpy()  # drawn on the per-view images
    info = {"banner": banner, "notes": notes, "seconds": time.time() - t0, "T": scene.T, "V": scene.V,
            "H": scene.H, "W": scene.W, "device": device, "layout": layout or "preset default"}
    report(1.0, "done")
    return rec, info
