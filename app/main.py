"""``vggt-mv-app``: command line and launch of the Gradio page + per-session viser servers.

    vggt-mv-app [--views DIR ...] [--scene ROOT] [--preset P | --config JSON] [--checkpoint X] [--pi3 Y]
                [--query-points NPY] [--epipolar off|gt|previous] [--time-bias S]
                [--device D] [--port N] [--viser-port M] [--host 127.0.0.1] [--no-autorun]

With no arguments it opens the bundled sample (``assets/sample``) with the ``tiny`` preset and runs
it when a page first loads, so the viewer opens on a reconstruction (``--no-autorun``: wait for Run).
Binds 127.0.0.1 by default; a port in use moves to the next free one (Gradio and viser both).
A tab's viser server, results and files are released when the tab closes and at exit (SIGTERM too).
"""

from __future__ import annotations

import argparse
import contextlib
import atexit
import inspect
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from vggt_mv.cli import Parser

from .state import (EPIPOLAR, PRESETS, RESOLUTIONS, SAMPLE_DIR, STRATEGIES, RunParams, SessionRegistry,
                    resolution_choices)

log = logging.getLogger("vggt_mv.app")


def free_port(start: int, host: str = "127.0.0.1", tries: int = 200) -> int:
    """First port >= ``start`` that can be bound on ``host``."""
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in [{start}, {start + tries}) on {host}")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="vggt-mv-app", description="vggt-mv interactive viewer (Gradio + viser)")
    p.add_argument("--views", nargs="+", metavar="DIR", help="one folder of frames (or video) per camera")
    p.add_argument("--scene", metavar="ROOT", help="a scene root (cam*/ folders or time_XX/viewN.png dump)")
    p.add_argument("--preset", default=None, choices=PRESETS,
                   help="model preset (default: the one a weights name implies, e.g. vggt-1b -> vggt; else tiny)")
    p.add_argument("--checkpoint", help="VGGT / PAGE-4D checkpoint: local .pt / .safetensors path, "
                   "hf://[datasets/]OWNER/REPO[@REV]/FILE, or vggt-1b | page4d-mask | page4d-nomask")
    p.add_argument("--pi3", help="Pi3 model.safetensors: local path, hf://..., or pi3")
    p.add_argument("--config", help="a model_config.json instead of --preset (design-notes names accepted)")
    p.add_argument("--allow-partial", action="store_true",
                   help="load weights that do not cover the whole model (the banner says 'partial weights')")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--resolution", type=int, default=112, help=f"image width, one of {RESOLUTIONS} "
                   "(up to the preset's training size; default %(default)s: the sample runs in seconds on CPU)")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--overlap", type=int, default=2)
    p.add_argument("--sparse", default="none", choices=STRATEGIES)
    p.add_argument("--time-bias", type=float, default=0.0, metavar="S", help="Time-SA relative-time bias -S*(dt)^2")
    p.add_argument("--query-points", metavar="NPY", help=".npy [N,2] pixels in the reference image (model-input "
                   "resolution) or MVTracker [N,4] (t,x,y,z); needs a track head; tracks are drawn")
    p.add_argument("--keypoints", default="none", metavar="SRC",
                   help="keypoint source for the sparse layers' bias: none, sift[:K], or a server-side SegAnyMo "
                        "output / per-camera keypoint folder (drawn on the per-view images)")
    p.add_argument("--lambda-kpt", type=float, default=0.0, help="keypoint bias on the sparse layers' geo rows")
    p.add_argument("--epipolar", default="off", choices=EPIPOLAR,
                   help="epipolar prior on View-SA: scene GT cameras, or the previous run of the tab")
    p.add_argument("--port", type=int, default=7860, help="Gradio port (next free one if taken)")
    p.add_argument("--viser-port", type=int, default=8081, help="first viser port (one per open tab)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1 = this machine only)")
    p.add_argument("--max-sessions", type=int, default=16,
                   help="open tabs served at most; the oldest is evicted and told 'session expired'")
    p.add_argument("--autorun", action=argparse.BooleanOptionalAction, default=True,
                   help="run the scene in the box when a page first loads (default on; --no-autorun waits for Run)")
    return p


def defaults_from_args(args: argparse.Namespace) -> RunParams:
    if args.views:
        views = list(args.views)
    elif args.scene:
        views = [args.scene]
    else:  # the bundled sample, shown relative to the folder the app runs in when it is below it
        views = [os.path.relpath(SAMPLE_DIR) if SAMPLE_DIR.is_relative_to(Path.cwd()) else str(SAMPLE_DIR)]
    from vggt_mv.weights.hub import implied_preset

    preset = args.preset or implied_preset(args.checkpoint, args.pi3) or "tiny"
    if preset in PRESETS and args.resolution not in resolution_choices(preset):
        raise ValueError(f"--resolution {args.resolution} is not offered for preset {preset}; "
                         f"choose one of {', '.join(map(str, resolution_choices(preset)))}")
    return RunParams(views=views, preset=preset, checkpoint=args.checkpoint, pi3=args.pi3,
                     device=args.device, resolution=args.resolution, window=args.window,
                     overlap=args.overlap, strategy=args.sparse, allow_partial=args.allow_partial,
                     config=args.config, time_bias=args.time_bias, query_points=args.query_points,
                     epipolar=args.epipolar, keypoints=args.keypoints, lambda_kpt=args.lambda_kpt)


def check_args(args: argparse.Namespace) -> RunParams:
    """Option checks (ValueError naming the option); returns the page's defaults."""
    if args.max_sessions < 1:
        raise ValueError(f"--max-sessions must be >= 1, got {args.max_sessions}")
    return defaults_from_args(args)


def release_at_exit(registry: SessionRegistry) -> None:
    """Close every session (viser servers, results, files, the temp root) at exit, SIGTERM included."""
    atexit.register(registry.close_all)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        log.info("SIGTERM: releasing %d session(s)", len(registry.sessions))
        registry.close_all()
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    # signal handlers can only be set from the main thread (a notebook thread gets the atexit hook only)
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, on_sigterm)


def launch(args: argparse.Namespace, block: bool = True) -> tuple[Any, SessionRegistry, str]:
    """Build and launch the app; returns ``(demo, registry, url)`` (non-blocking with ``block=False``)."""
    from .ui import CSS, build_ui

    import gradio as gr

    defaults = check_args(args)
    registry = SessionRegistry(host=args.host, viser_port=args.viser_port, max_sessions=args.max_sessions)
    release_at_exit(registry)
    # Gradio's own cache (gallery images) goes under the app root too, so exit removes it; export
    # files are served from the session folders in place (no copy left behind in Gradio's cache).
    os.environ.setdefault("GRADIO_TEMP_DIR", str(registry.root / "gradio"))
    registry.sessions_dir.mkdir(parents=True, exist_ok=True)
    gr.set_static_paths([str(registry.sessions_dir)])
    demo = build_ui(registry, defaults, autorun=bool(args.autorun))
    port = free_port(args.port, args.host)
    if port != args.port:
        log.warning("port %d is in use; using %d", args.port, port)
    kwargs: dict[str, Any] = dict(server_name=args.host, server_port=port, prevent_thread_lock=True,
                                  quiet=not block, show_error=True)
    params = inspect.signature(demo.launch).parameters
    if "theme" in params:  # gradio >= 6 takes theme / css at launch
        kwargs.update(theme=demo._vggt_theme, css=CSS)
    if "ssr_mode" in params:
        kwargs["ssr_mode"] = False
    demo.queue(default_concurrency_limit=4)
    demo.launch(**kwargs)
    url = f"http://{args.host}:{port}/"
    print(f"vggt-mv-app: open {url}  (viser scenes from port {args.viser_port}, one per tab; "
          f"session files under {registry.root})", flush=True)
    if block:
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            log.info("interrupted: shutting down")
        finally:
            registry.close_all()
            demo.close()
    return demo, registry, url


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # a bad option: one line, exit 2, before anything starts
        check_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    launch(args, block=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
