"""``vggt-mv record``: render a saved reconstruction into a demo MP4 (see ``vggt_mv.export.video``).

    vggt-mv record RESULT_DIR --out video.mp4 [--orbit | --timeline] [--fps N] [--size HxW]
                   [--color-by image|mask] [--conf-percentile P] [--frames-per-step K] ...
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

__all__ = ["register", "run_record", "parse_size"]

log = logging.getLogger(__name__)


def parse_size(text: str) -> tuple[int, int]:
    """``"480x640"`` -> ``(480, 640)`` (``H x W``, both even and positive)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 480x640), got {text!r}") from None
    if height < 2 or width < 2 or height % 2 or width % 2:
        raise argparse.ArgumentTypeError(f"size must be even and >= 2 on both sides (H.264 yuv420p), got {text!r}")
    return height, width


def _percentile(text: str) -> float | None:
    if text.lower() in ("none", "off"):
        return None
    value = float(text)
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"conf percentile must be in [0, 100], got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``record`` subcommand to ``sub``."""
    p = sub.add_parser("record", help="render a saved reconstruction into an MP4 demo video",
                       description="Software-rendered (CPU, headless) H.264 video of a saved result folder.")
    p.add_argument("result_dir", metavar="RESULT_DIR", type=Path, help="folder written by `vggt-mv reconstruct`")
    p.add_argument("--out", "-o", type=Path, required=True, help="output video path: .mp4 (or .mov), written atomically")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--timeline", dest="mode", action="store_const", const="timeline",
                      help="fixed viewpoint stepping through the timesteps (default)")
    mode.add_argument("--orbit", dest="mode", action="store_const", const="orbit",
                      help="circle around the scene centre (timeline advances unless --orbit-timestep)")
    p.set_defaults(mode="timeline")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second (default 10)")
    p.add_argument("--size", type=parse_size, default=(480, 640), metavar="HxW", help="frame size (default 480x640)")
    p.add_argument("--color-by", choices=("image", "mask"), default="image", help="point colours (default image)")
    p.add_argument("--conf-percentile", type=_percentile, default=20.0, metavar="P",
                   help="drop points below this confidence percentile, 0-100 or 'none' (default 20)")
    p.add_argument("--frames-per-step", type=int, default=2, metavar="K", help="frames per timestep (default 2)")
    p.add_argument("--num-frames", type=int, default=None, help="orbit length in frames")
    p.add_argument("--arc", type=float, default=360.0, metavar="DEG",
                   help="orbit: swing back and forth over this arc instead of a full circle (default 360)")
    p.add_argument("--orbit-timestep", type=int, default=None, help="orbit a single frozen timestep")
    p.add_argument("--point-size", type=int, default=2, help="splat width in pixels (default 2)")
    p.add_argument("--up", choices=("-y", "+z"), default="-y", help="world up axis (default -y, OpenCV/VGGT)")
    p.add_argument("--hold", type=int, default=0, help="extra frames on the last timestep")
    p.add_argument("--loops", type=int, default=1, help="repeat the path this many times")
    p.add_argument("--no-cameras", dest="show_cameras", action="store_false", help="do not draw camera frustums")
    p.add_argument("--no-label", dest="label", action="store_false", help="do not stamp the timestep on frames")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads while rendering (default: unchanged)")
    p.set_defaults(func=run_record)


def run_record(args: argparse.Namespace) -> int:
    """Load ``args.result_dir`` and record the video; returns the exit code."""
    from vggt_mv.export.video import record
    from vggt_mv.inference.reconstruction import Reconstruction

    from vggt_mv.export.output import check_output
    from vggt_mv.export.video import check_video_name, is_recorded_video

    result_dir: Path = args.result_dir
    for name in ("frames_per_step", "loops"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if not args.fps > 0:
        raise ValueError(f"--fps must be > 0, got {args.fps}")
    check_video_name(args.out, "--out")
    check_output(args.out, kind="file", inputs=[result_dir], is_ours=is_recorded_video)
    if not result_dir.exists():
        raise FileNotFoundError(f"RESULT_DIR {result_dir} does not exist")
    from vggt_mv.export.bundle import has_result_arrays

    if not (result_dir.is_dir() and has_result_arrays(result_dir)):
        raise FileNotFoundError(f"RESULT_DIR {result_dir} is not a vggt-mv result folder (no arrays/ or "
                                "reconstruction.npz)")
    try:
        rec = Reconstruction.load(result_dir)
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"cannot load RESULT_DIR {result_dir}: {e}") from e
    start = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 2.0:
            last[0] = now
            print(f"\rrecord: frame {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    record(
        rec, args.out, mode=args.mode, fps=args.fps, size=args.size, point_size=args.point_size,
        color_by=args.color_by, conf_percentile=args.conf_percentile, frames_per_step=args.frames_per_step,
        show_cameras=args.show_cameras, progress=progress, up=args.up, num_frames=args.num_frames,
        orbit_timestep=args.orbit_timestep, hold=args.hold, loops=args.loops,
        label=args.label, num_threads=args.threads, arc_degrees=args.arc, inputs=[result_dir],
    )
    log.info("wrote %s (%s, %.1fs)", args.out, args.mode, time.monotonic() - start)
    print(args.out)  # as given, like the other commands
    return 0
