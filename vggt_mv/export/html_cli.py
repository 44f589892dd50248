"""``vggt-mv export-html``: share a saved reconstruction as one offline HTML player
(see ``vggt_mv.export.html``).

    vggt-mv export-html RESULT_DIR --out scene.html [--colour image|mask] [--fps N] [--max-mb MB]
    vggt-mv export-html RESULT_DIR --format viser --out share/    (scene.viser + viewer/ for hosting)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["register", "run_export_html"]

log = logging.getLogger(__name__)

_DESCRIPTION = """\
Write one self-contained HTML file that plays the reconstruction's timeline (point clouds per
timestep + camera frustums with their images) in any browser, opened from disk with no server and
no network (viser's recorded-scene player, bundled). The recording holds no GUI controls:
confidence filter, colouring and point size are FIXED AT EXPORT (set them here); the viewer can
still orbit, zoom, pause and scrub the timeline. --max-mb keeps the file small enough to send:
points are subsampled per timestep (least confident first, then uniformly) and frustum images
downsized; the log says by how much. --format viser writes a folder with scene.viser and a copy of
the viser client (viewer/) for a static web server: open viewer/?playbackPath=../scene.viser."""


def _percentile(text: str) -> float | None:
    if text.lower() in ("none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"conf percentile must be a number or 'none', got {text!r}") from None
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"conf percentile must be in [0, 100], got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export-html`` subcommand to ``sub``."""
    p = sub.add_parser("export-html", help="share a saved reconstruction as one offline HTML player",
                       description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result_dir", metavar="RESULT_DIR", type=Path, help="folder written by `vggt-mv reconstruct`")
    p.add_argument("--out", "-o", type=Path, required=True,
                   help="output .html file (--format viser: output folder); written atomically, and an "
                        "existing target is replaced only if export-html wrote it")
    p.add_argument("--format", choices=("html", "viser"), default="html",
                   help="html: one self-contained file (default); viser: scene.viser + viewer/ folder")
    p.add_argument("--colour", "--color-by", dest="colour", choices=("image", "mask"), default="image",
                   help="point / frustum-image colours, fixed at export: image, or the predicted "
                        "dynamic mask painted red (default image)")
    p.add_argument("--fps", type=float, default=4.0, help="timesteps per second of playback (default 4)")
    p.add_argument("--conf-percentile", type=_percentile, default=20.0, metavar="P",
                   help="drop points below this confidence percentile, fixed at export; 0-100 or "
                        "'none' (default 20, as the viewer)")
    p.add_argument("--point-size", type=float, default=0.004, metavar="S",
                   help="point size as a fraction of the scene size, fixed at export (default 0.004, "
                        "as the viewer)")
    p.add_argument("--source", choices=("depth", "points"), default="depth",
                   help="points from depth + cameras, or the point head (default depth)")
    p.add_argument("--up", choices=("-y", "+z"), default="-y", help="world up axis (default -y, OpenCV/VGGT)")
    p.add_argument("--max-mb", type=float, default=60.0, metavar="MB",
                   help="size budget of the output in MB (10^6 bytes; default 60)")
    p.add_argument("--image-size", type=int, default=256, metavar="PX",
                   help="longer side of the frustum images at most (default 256; smaller under --max-mb; 0: no images)")
    p.add_argument("--no-cameras", dest="show_cameras", action="store_false",
                   help="leave out the camera frustums and their images")
    p.set_defaults(func=run_export_html)


def run_export_html(args: argparse.Namespace) -> int:
    """Load ``args.result_dir`` and write the share file / folder; returns the exit code."""
    from vggt_mv.export.html import export_html
    from vggt_mv.inference.reconstruction import Reconstruction

    result_dir: Path = args.result_dir
    if not result_dir.exists():
        raise ValueError(f"RESULT_DIR {result_dir} does not exist")
    from vggt_mv.export.bundle import has_result_arrays

    if not (result_dir.is_dir() and has_result_arrays(result_dir)):
        raise ValueError(f"RESULT_DIR {result_dir} is not a vggt-mv result folder (no arrays/ or reconstruction.npz); "
                         "pass a folder written by `vggt-mv reconstruct`")
    if args.image_size < 0:
        raise ValueError(f"--image-size must be >= 0, got {args.image_size}")
    try:
        rec = Reconstruction.load(result_dir)
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"cannot load RESULT_DIR {result_dir}: {e}") from e
    result = export_html(
        rec, args.out, format=args.format, color_by=args.colour, fps=args.fps,
        conf_percentile=args.conf_percentile, source=args.source, point_size=args.point_size, up=args.up,
        max_mb=args.max_mb, image_size=args.image_size, show_cameras=args.show_cameras, inputs=[result_dir],
    )
    print(result.path)
    return 0
