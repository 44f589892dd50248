"""``vggt-mv reconstruct``: load a scene, build/load the model, reconstruct window by window, save.

Examples::

    vggt-mv reconstruct --views cam0 cam1 cam2 --preset tiny --resolution 84 --out out/
    vggt-mv reconstruct --scene assets/sample --checkpoint page4d.pt --pi3 model.safetensors \\
        --window 8 --overlap 2 --lambda-pose 0.5 --out out/
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("vggt_mv.inference")

__all__ = ["register", "run_reconstruct", "MAX_RESOLUTION"]

#: default ceiling of --resolution (2 x VGGT's 518): larger inputs need --max-resolution
MAX_RESOLUTION = 1036


def _frames(text: str | None) -> tuple[int | None, int | None] | None:
    if not text:
        return None
    try:
        a, b = text.split(":")
        return (int(a) if a else None, int(b) if b else None)
    except ValueError:
        raise ValueError(f"--frames must look like START:STOP (either may be empty), got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reconstruct`` subcommand to the ``vggt-mv`` parser."""
    p = sub.add_parser("reconstruct", help="reconstruct a multi-view sequence and save it",
                       description="Reconstruct a multi-view, multi-timestep sequence (temporal windows "
                                   "aligned by Sim(3)) and write its arrays (.npy) / PLY / GLB / cameras.json / COLMAP.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--views", nargs="+", metavar="DIR", help="one folder of frames (or video) per camera")
    src.add_argument("--scene", metavar="ROOT", help="a scene root (cam*/ folders or time_XX/viewN.png dump)")
    p.add_argument("--masks", nargs="+", metavar="DIR", help="external dynamic-mask folders (one per camera, "
                   "or one folder holding a subfolder per camera); default: auto-detect")
    p.add_argument("--no-masks", action="store_true", help="ignore external masks even if present")
    p.add_argument("--preset", default=None, help="model preset: vggt, page4d, page4d_mask, page4d_fin10, vggt_mv_fin10, "
                   "vggt_mv, tiny (default: vggt_mv with --pi3, vggt with --checkpoint, else tiny)")
    p.add_argument("--config", help="a model_config.json instead of a preset")
    p.add_argument("--checkpoint", help="VGGT-1B / PAGE-4D .pt or .safetensors: a local path, hf://[datasets/]"
                   "OWNER/REPO[@REV]/FILE, or vggt-1b | page4d-mask | page4d-nomask (downloaded into the Hugging "
                   "Face cache; the name implies its preset). A vggt-mv .safetensors also supplies its config")
    p.add_argument("--pi3", help="Pi3 model.safetensors: a local path, hf://..., or pi3")
    p.add_argument("--recipe", default="seed", choices=["seed", "checkpoint_first"])
    p.add_argument("--allow-partial", action="store_true",
                   help="load weights that do not cover the whole model (the rest stays random; the result "
                        "says 'partial weights'); without it such a load is an error")
    p.add_argument("--window", type=int, default=8, help="timesteps per model call (default 8)")
    p.add_argument("--overlap", type=int, default=2, help="timesteps shared by consecutive windows (default 2)")
    p.add_argument("--layout", choices=["flat", "factorized"], default=None, help="default: the preset's")
    p.add_argument("--resolution", type=int, default=None, help="target width, multiple of 14 "
                   "(default 518 on CUDA, 252 on CPU)")
    p.add_argument("--max-resolution", type=int, default=MAX_RESOLUTION,
                   help="ceiling for --resolution (default %(default)s; raise it deliberately for larger inputs)")
    p.add_argument("--mode", choices=["crop", "pad"], default="crop", help="VGGT preprocessing mode")
    p.add_argument("--frames", default=None, metavar="START:STOP", help="frame range (python slice bounds)")
    p.add_argument("--stride", type=int, default=1, help="take every N-th frame")
    for name in ("pose", "geo", "pose-t", "geo-t"):
        p.add_argument(f"--lambda-{name}", type=float, default=None, dest=f"lambda_{name.replace('-', '_')}",
                       help=f"mask-bias lambda_{name.replace('-', '_')} (default: the preset's)")
    p.add_argument("--sparse", choices=["none", "landmark", "dilated", "memory_bank"], default=None,
                   help="sparse Global-SA strategy (default: the preset's)")
    p.add_argument("--landmarks", choices=["saliency", "confidence", "keypoints"], default=None,
                   help="landmark strategy's anchors: feature saliency (default), a first pass's confidence, or "
                        "the top-K keypoint patches per image (needs --keypoints)")
    p.add_argument("--conf-landmarks", action="store_true", help="the same as --landmarks confidence")
    p.add_argument("--keypoints", nargs="+", metavar="SRC",
                   help="keypoint source for the sparse layers' bias and --landmarks keypoints: sift[:K] (OpenCV "
                        "SIFT, top K=64 per frame), a SegAnyMo output folder (moseg/view_N/dynamic_traj.npy), or "
                        "one folder per camera (or one holding a subfolder per camera) of heat-map PNGs / .npy "
                        "[N,2] point lists, one per frame")
    for name in ("kpt", "kpt-pose"):
        p.add_argument(f"--lambda-{name}", type=float, default=None, dest=f"lambda_{name.replace('-', '_')}",
                       help=f"keypoint-bias lambda_{name.replace('-', '_')} on the sparse layers' "
                            f"{'geo' if name == 'kpt' else 'pose'} rows (default: the preset's, 0)")
    p.add_argument("--time-bias", type=float, default=None, metavar="S",
                   help="Time-SA relative-time bias -S*(dt)^2 on the logits (0 = none; default: the config's)")
    p.add_argument("--epipolar", choices=["off", "gt", "previous"], default="off",
                   help="epipolar prior on View-SA (factorized layout): cameras from the scene's ground truth "
                        "or from a previous run (--epipolar-from); penalty -strength*(d/band)^2")
    p.add_argument("--epipolar-from", metavar="DIR", help="--epipolar previous: a previous output folder of this scene")
    p.add_argument("--epipolar-strength", type=float, default=1.0, help="epipolar penalty strength (logits)")
    p.add_argument("--epipolar-band", type=float, default=28.0, help="epipolar band in model-input pixels")
    p.add_argument("--query-points", metavar="FILE", help=".npy [N,2] pixel (x, y) in the reference image (t=0, "
                   "first view) or MVTracker [N,4] (t, x, y, z) world points (projected with the GT cameras); "
                   "needs a track head; tracks are stored in the result")
    p.add_argument("--query-space", choices=["model", "original"], default="model",
                   help="[N,2] query pixels are in the model-input image (default, after preprocessing) or in "
                        "the original reference frame (mapped through its resize/crop)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", help="autocast dtype on CUDA: auto (bf16), bf16, fp16, fp32")
    p.add_argument("--out", default="reconstruction",
                   help="output folder: new or empty, or a previous vggt-mv result holding only its own files "
                        "(replaced); never the current folder, an input or a folder holding one "
                        "(default: %(default)s)")
    p.add_argument("--conf-percentile", type=float, default=None, help="drop points below this confidence "
                   "percentile in the PLY/GLB exports")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-memory-check", action="store_true", help="run even when the memory estimate says the "
                   "run will not fit in free RAM / GPU memory (the check runs before weights load)")
    p.set_defaults(func=run_reconstruct)


def _check_options(args: argparse.Namespace) -> None:
    """Option ranges (no I/O); raises ValueError naming the option and the fix."""
    from vggt_mv.data.preprocess import check_resolution
    from vggt_mv.inference.device import parse_dtype

    if args.window < 1:
        raise ValueError(f"--window must be >= 1 timestep, got {args.window}")
    if not 0 <= args.overlap < args.window:
        raise ValueError(f"--overlap must be in [0, --window) = [0, {args.window}), got {args.overlap}")
    if args.stride < 1:
        raise ValueError(f"--stride must be >= 1, got {args.stride}")
    if args.conf_percentile is not None and not 0.0 <= args.conf_percentile <= 100.0:
        raise ValueError(f"--conf-percentile must be in [0, 100], got {args.conf_percentile:g}")
    if args.resolution is not None:
        try:
            check_resolution(args.resolution)
        except ValueError as e:
            raise ValueError(f"--resolution: {e}") from None
        if args.resolution > args.max_resolution:
            raise ValueError(f"--resolution {args.resolution} is above the ceiling {args.max_resolution} (memory "
                             "grows with its square); use a smaller one or raise --max-resolution")
    for name in ("lambda_pose", "lambda_geo", "lambda_pose_t", "lambda_geo_t", "lambda_kpt", "lambda_kpt_pose",
                 "time_bias"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    if args.conf_landmarks and args.landmarks not in (None, "confidence"):
        raise ValueError(f"--conf-landmarks means --landmarks confidence, but --landmarks {args.landmarks} was "
                         "given; keep one of them")
    if args.landmarks == "keypoints" and not args.keypoints:
        raise ValueError("--landmarks keypoints needs a keypoint source: add --keypoints sift (or a folder)")
    parse_dtype(args.dtype)


def _inputs(args: argparse.Namespace) -> list[str]:
    """Every local path the run reads: an output may be none of them nor hold one."""
    from vggt_mv.weights.hub import parse_weights_ref

    weights = [w for w in (args.checkpoint, args.pi3) if w and parse_weights_ref(w) is None]
    keypoints = [k for k in (args.keypoints or []) if not k.startswith("sift")]
    return [p for p in [*(args.views or []), args.scene, *(args.masks or []), *weights,
                        args.query_points, args.epipolar_from, *keypoints] if p]


def _check_priors(args: argparse.Namespace, layout: str, num_views: int):
    """Check --query-points / --epipolar before weights load; returns the previous run for
    ``--epipolar previous`` (else None)."""
    from vggt_mv.inference.priors import check_epipolar_layout, read_query_file

    if args.query_points:
        read_query_file(args.query_points)
    check_epipolar_layout(args.epipolar, layout, num_views)
    if args.epipolar == "previous":
        if not args.epipolar_from:
            raise ValueError("--epipolar previous needs --epipolar-from DIR (a previous output folder of this scene)")
        from vggt_mv.export.bundle import has_result_arrays
        from vggt_mv.inference.reconstruction import Reconstruction

        folder = Path(args.epipolar_from)
        if not (folder.is_dir() and has_result_arrays(folder)):
            raise ValueError(f"--epipolar-from {args.epipolar_from} is not a vggt-mv result folder; give the --out "
                             "folder of an earlier reconstruct run of this scene")
        return Reconstruction.load(folder)
    return None


def _check_memory(args: argparse.Namespace, cfg, source, masks, frames, device) -> None:
    """Refuse (ValueError naming the fix) a run the estimate says will not fit in memory."""
    from vggt_mv.data.preprocess import default_resolution
    from vggt_mv.inference.estimate import RunShape, check_memory, scene_shape

    if args.no_memory_check:
        return
    resolution = args.resolution or default_resolution(device.type)
    t, v, h, w, gt = scene_shape(source, resolution=resolution, mode=args.mode, frame_range=frames,
                                 stride=args.stride, masks=masks)
    choices = list(range(14, resolution, 14))
    problem = check_memory(cfg, RunShape(t, v, h, w, args.window, args.overlap), device=str(device),
                           resolutions=choices, gt=gt, layout=args.layout or cfg.layout, streamed=True)
    if problem:
        raise ValueError(f"{problem}; pass those options (--resolution / --window / --frames), or "
                         "--no-memory-check to run anyway")


def _build_config(args: argparse.Namespace, checkpoint=None):
    """The model config: --config, else the one a vggt-mv ``checkpoint`` file carries, else --preset
    (default: the one a short weights name implies, vggt_mv with --pi3, vggt with --checkpoint, else tiny)."""
    from vggt_mv.weights.autoconfig import base_config

    cfg = base_config(config=args.config, preset=args.preset, checkpoint=checkpoint, checkpoint_ref=args.checkpoint,
                      pi3_ref=args.pi3, fallback="vggt" if args.checkpoint else "tiny")
    if args.sparse is not None:
        cfg.sparse.strategy = args.sparse
    if args.time_bias is not None:
        cfg.time_bias.strength = float(args.time_bias)
    for name in ("lambda_pose", "lambda_geo", "lambda_pose_t", "lambda_geo_t"):  # before any weights load
        value, option = getattr(args, name), f"--{name.replace('_', '-')}"
        if value is None:
            continue
        if not cfg.mask.enabled:
            raise ValueError(f"{option}: the {cfg.name!r} model has no dynamic-mask head, so it has no effect; "
                             "use a page4d*/vggt_mv/tiny preset or leave it out")
        if not abs(value) <= cfg.mask.lambda_bound:
            raise ValueError(f"{option} {value:g} is outside +-{cfg.mask.lambda_bound:g} (the {cfg.name!r} "
                             "model's mask.lambda_bound); use a value within it")
    for name in ("lambda_kpt", "lambda_kpt_pose"):  # range-checked here, before any weights load
        if getattr(args, name) is not None:
            setattr(cfg.sparse, name, float(getattr(args, name)))
    try:
        return cfg.validate()
    except ValueError as e:
        if "lambda_kpt" in str(e):
            raise ValueError(f"--lambda-kpt / --lambda-kpt-pose: {e}") from None
        raise


def _load_model(cfg, args: argparse.Namespace, device: str, checkpoint=None, pi3=None):
    from vggt_mv.weights import load_model
    from vggt_mv.weights.demo import demo_weights
    from vggt_mv.weights.loader import partial_weights_note

    if not (checkpoint or pi3):
        checkpoint = demo_weights(cfg.name) if not args.config else None
        if checkpoint:
            log.info("using the bundled demo weights %s (trained on synthetic scenes; use the real "
                     "checkpoints for real data)", checkpoint)
        else:
            log.warning("no --checkpoint / --pi3 given: the %r model runs with RANDOM weights (useful for "
                        "smoke tests only)", cfg.name)
    model, report = load_model(cfg, checkpoint=checkpoint, pi3=pi3, device=device, recipe=args.recipe,
                               strict=not args.allow_partial)
    if checkpoint or pi3:
        log.info("weights loaded:\n%s", report)
    note = partial_weights_note(model)
    if note:
        log.warning("%s: %s", note, report.strict_problems())
    return model


def run_reconstruct(args: argparse.Namespace) -> int:
    """Entry point of ``vggt-mv reconstruct`` (returns the exit status).

    Everything that can be checked without the model is checked first (options, device, output
    target, the scene's length against window/frames), then weights load, then frames decode.
    """
    from vggt_mv.data.scene import load_scene, scan_scene
    from vggt_mv.export.output import check_output, is_result_dir, manifest_files
    from vggt_mv.inference.device import select_device
    from vggt_mv.inference.pipeline import reconstruct
    from vggt_mv.inference.priors import epipolar_cameras, load_query_points
    from vggt_mv.inference.windows import plan_windows
    from vggt_mv.weights.hub import implied_preset, resolve_weights
    from vggt_mv.weights.loader import partial_weights_note

    from vggt_mv import distributed
    from vggt_mv.export.bundle import ARRAYS_DIR, write_reconstruction
    from vggt_mv.export.output import output_dir
    from vggt_mv.inference.exchange import RankFailure

    _check_options(args)
    device = select_device("cpu" if args.device == "cpu" else "auto") if distributed.under_torchrun() \
        else select_device(args.device)
    inputs = _inputs(args)
    check_output(args.out, kind="dir", inputs=inputs, is_ours=is_result_dir, written=manifest_files)
    masks = args.masks
    if args.no_masks:
        masks = False
    elif masks and len(masks) == 1 and not (args.views and len(args.views) == 1):
        masks = masks[0]  # one folder holding a subfolder per camera
    source = args.views if args.views else args.scene
    frames = _frames(args.frames)
    num_t, num_v = scan_scene(source, masks=masks, frame_range=frames, stride=args.stride)
    if args.keypoints:
        from vggt_mv.data.keypoints import check_keypoint_source

        check_keypoint_source(args.keypoints, num_v, num_t)
    try:
        plan_windows(num_t, args.window, args.overlap)
    except ValueError as e:
        raise ValueError(f"--window {args.window} / --overlap {args.overlap} with {num_t} timesteps: {e}") from None
    # the config is checked before a Hub name downloads, unless it comes from that file's header
    from_file = args.checkpoint and not (args.config or args.preset or implied_preset(args.checkpoint, args.pi3))
    cfg = None if from_file else _build_config(args)
    previous = None if cfg is None else _check_priors(args, args.layout or cfg.layout, num_v)
    if cfg is not None:
        _check_memory(args, cfg, source, masks, frames, device)
    # under torchrun: every rank checked the same things above; now join the group (rank 0 alone downloads)
    env = distributed.init_from_env(args.device)
    if env.distributed:
        device = env.device
    checkpoint = resolve_weights(args.checkpoint, "--checkpoint")
    pi3 = resolve_weights(args.pi3, "--pi3")
    if cfg is None:
        cfg = _build_config(args, checkpoint)
        previous = _check_priors(args, args.layout or cfg.layout, num_v)
        _check_memory(args, cfg, source, masks, frames, device)
    layout = args.layout or cfg.layout
    t0 = time.perf_counter()
    try:
        with distributed.on_sigterm():  # torchrun stopping every rank when one failed, before any window
            model = _load_model(cfg, args, str(device), checkpoint, pi3)
            scene = load_scene(source, masks=masks, resolution=args.resolution, mode=args.mode, frame_range=frames,
                               stride=args.stride, device_hint=device.type, lazy=True)  # frames decoded per window
    except distributed.Terminated:
        if env.is_main:
            print("vggt-mv reconstruct: error: rank 0 was stopped (SIGTERM: torchrun stops every rank when one "
                  "fails) while loading the model and scene; no output written", file=sys.stderr)
        raise
    log.info("scene: %d timesteps x %d views at %dx%d (%s)", scene.T, scene.V, scene.H, scene.W,
             ", ".join(scene.view_names))
    query_points = load_query_points(args.query_points, scene, args.query_space) if args.query_points else None
    epipolar = epipolar_cameras(args.epipolar, scene, previous, layout=layout if scene.V > 1 else "flat",
                                strength=args.epipolar_strength, band=args.epipolar_band)
    if args.keypoints:
        from vggt_mv.data.keypoints import load_keypoints, parse_keypoint_source

        src = parse_keypoint_source(args.keypoints)
        scene.keypoints = load_keypoints(src, scene)
        scene.source["keypoints"] = src.describe()
    lambdas = {k: getattr(args, k) for k in ("lambda_pose", "lambda_geo", "lambda_pose_t", "lambda_geo_t")}
    if any(v is not None for v in lambdas.values()):
        model.set_lambdas(**lambdas)
    if args.lambda_kpt is not None or args.lambda_kpt_pose is not None:
        model.set_keypoint_lambdas(lambda_kpt=args.lambda_kpt, lambda_kpt_pose=args.lambda_kpt_pose)
    if (args.keypoints or args.lambda_kpt or args.lambda_kpt_pose) and cfg.sparse.strategy == "none":
        log.warning("--keypoints / --lambda-kpt act on the sparse global layers only; with --sparse none they "
                    "have no effect (choose --sparse landmark|dilated|memory_bank)")

    bar = None
    if not args.no_progress and env.is_main:
        from tqdm import tqdm

        bar = tqdm(total=100, desc="reconstruct", unit="%", bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}]{postfix}")

    def progress(fraction: float, message: str) -> None:
        if bar is not None:
            bar.n = round(100 * fraction)
            bar.set_postfix_str(message, refresh=True)

    options = dict(window=args.window, overlap=args.overlap, layout=args.layout, device=device, dtype=args.dtype,
                   progress=progress, conf_landmarks=args.conf_landmarks, query_points=query_points,
                   epipolar=epipolar, landmarks=args.landmarks, dist_env=env if env.distributed else None)
    try:
        if not env.is_main:  # a worker rank: its windows go to rank 0, which writes the output
            reconstruct(scene, model, **options)
            distributed.shutdown()
            return 0
        # the stitched arrays are memory-mapped straight into the output's temp folder; SIGTERM (torchrun
        # stopping the ranks after one failed) or any error removes that folder: no partial output
        with distributed.on_sigterm(), output_dir(args.out, inputs=inputs, is_ours=is_result_dir) as tmp:
            rec = reconstruct(scene, model, store=tmp / ARRAYS_DIR, **options)
            rec.meta["cli"] = {k: v for k, v in vars(args).items() if k != "func"}
            write_reconstruction(rec, tmp, conf_percentile=args.conf_percentile)
            del rec  # its memory maps point into tmp, which is renamed now
    except RankFailure as e:
        print(f"vggt-mv reconstruct: error: {e}", file=sys.stderr)
        sys.stderr.flush()
        # the output's temp folder is gone already; skip interpreter teardown, which would wait on (or
        # abort over) the process group's pending point-to-point work with the failed rank
        os._exit(1)
    except distributed.Terminated:
        print("vggt-mv reconstruct: error: rank 0 was stopped (SIGTERM) while writing the output; no output "
              "written", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    distributed.shutdown()
    out = args.out
    note = partial_weights_note(model)
    log.info("wrote %s (%d timesteps x %d views, %d rank(s), %.1fs total)%s", out, scene.T, scene.V,
             env.world_size, time.perf_counter() - t0, f"; {note}" if note else "")
    print(out)
    return 0
