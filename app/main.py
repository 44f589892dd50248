"""``vggt-mv-app``: command line and launch of the Gradio page + per-session viser servers.

    vggt-mv-app [--views DIR ...] [--scene ROOT] [--preset P | --config JSON] [--checkpoint X] [--pi3 Y]
                [--query-points NPY] [--epipolar off|gt|previous] [--time-bias S]
                [--device D] [--port N] [--viser-port M] [--host 127.0.0.1]

With no arguments it opens the bundled sample (``assets/sample``) with the ``tiny`` preset.
Binds 127.0.0.1 by default; a port in use moves to the next free one (Gradio and viser both).
With ``--views`` / ``--scene`` the model runs as soon as a page opens.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import socket
import sys
from typing import Any, Sequence

from .state import EPIPOLAR, PRESETS, RESOLUTIONS, SAMPLE_DIR, STRATEGIES, RunParams, SessionRegistry

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
    p = argparse.ArgumentParser(prog="vggt-mv-app", description="vggt-mv interactive viewer (Gradio + viser)")
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
    p.add_argument("--resolution", type=int, default=224, help=f"image width, multiple of 14 ({RESOLUTIONS})")
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
    p.add_argument("--max-sessions", type=int, default=16, help="viser servers kept at most (oldest evicted)")
    p.add_argument("--autorun", action=argparse.BooleanOptionalAction, default=None,
                   help="run as soon as a page opens (default: on with --views/--scene)")
    return p


def defaults_from_args(args: argparse.Namespace) -> RunParams:
    if args.views:
        views = list(args.views)
    elif args.scene:
        views = [args.scene]
    else:
        views = [str(SAMPLE_DIR)]
    from vggt_mv.weights.hub import implied_preset

    preset = args.preset or implied_preset(args.checkpoint, args.pi3) or "tiny"
    return RunParams(views=views, preset=preset, checkpoint=args.checkpoint, pi3=args.pi3,
                     device=args.device, resolution=args.resolution, window=args.window,
                     overlap=args.overlap, strategy=args.sparse, allow_partial=args.allow_partial,
                     config=args.config, time_bias=args.time_bias, query_points=args.query_points,
                     epipolar=args.epipolar, keypoints=args.keypoints, lambda_kpt=args.lambda_kpt)


def launch(args: argparse.Namespace, block: bool = True) -> tuple[Any, SessionRegistry, str]:
    """Build and launch the app; returns ``(demo, registry, url)`` (non-blocking with ``block=False``)."""
    from .ui import CSS, build_ui

    import gradio as gr

    registry = SessionRegistry(host=args.host, viser_port=args.viser_port, max_sessions=args.max_sessions)
    autorun = args.autorun if args.autorun is not None else bool(args.views or args.scene)
    demo = build_ui(registry, defaults_from_args(args), autorun=autorun)
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
    print(f"vggt-mv-app: open {url}  (viser scenes from port {args.viser_port}, one per tab)", flush=True)
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
    args = build_parser().parse_args(argv)
    launch(args, block=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
