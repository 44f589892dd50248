"""Share a reconstruction as one offline HTML file (or a ``.viser`` file + the viser client).

The scene is recorded with viser's own serializer on a fresh temporary ``ViserServer`` (never a
viewer session's live scene): one frame per timestep holding, per view, the point cloud and the
camera frustum with its image, exactly as the viewer draws them (same colours, confidence filter,
up axis, recentring). The timeline is recorded as visibility flips separated by ``1/fps`` sleeps, so
viser's player plays it. ``as_html`` packs the recording and viser's bundled client into one page
that works from ``file://`` without network; ``format="viser"`` writes ``scene.viser`` plus a copy
of the client for static hosting (``viewer/?playbackPath=../scene.viser``).

GUI controls are not part of a recording: confidence, colouring and point size are fixed at export.
A size budget (``max_mb``) subsamples points and shrinks frustum images (``html_budget``); the real
size is checked after the recording and the scene rebuilt smaller when it is over.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from vggt_mv.export.output import check_output, json_manifest_is, manifest_files, output_dir, output_file
from vggt_mv.export.html_budget import (
    JPEG_QUALITY, MB, SizePlan, plan_size, resize_image, select_points,
)
from vggt_mv.export.viser_scene import (
    CAM_RGB, ROOT_WXYZ, cloud_for, frustum_fov_aspect, frustum_pose, initial_camera, temporary_server, tint_mask,
    viser_client_path,
)

if TYPE_CHECKING:  # the exporters never import the result class back (it calls them)
    from vggt_mv.inference.reconstruction import Reconstruction

__all__ = ["export_html", "ShareResult", "MARKER", "SHARE_MANIFEST", "is_shared_html", "is_share_dir"]

log = logging.getLogger(__name__)

#: written right after ``<head>`` of every HTML this exporter writes (an existing file is only
#: replaced when it starts with it)
MARKER = '<meta name="generator" content="vggt-mv export-html">'
#: marker file of a ``format="viser"`` folder
SHARE_MANIFEST = "vggt-mv-share.json"
_MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class ShareResult:
    """What was written: the path, its size in bytes and the sampling used."""

    path: Path
    bytes: int
    plan: SizePlan
    attempts: int


def _tree_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.is_dir() else out.stat().st_size


def is_shared_html(path: Path) -> bool:
    """An HTML file written by this exporter (``MARKER`` in its first 4 KB)."""
    try:
        with open(path, "rb") as handle:
            return path.is_file() and MARKER.encode() in handle.read(4096)
    except OSError:
        return False


#: What a ``format="viser"`` folder holds (listed in its manifest).
SHARE_FILES = ["scene.viser", "viewer/index.html", "README.md", SHARE_MANIFEST]


def is_share_dir(path: Path) -> bool:
    """A ``format="viser"`` folder written by this exporter (its ``SHARE_MANIFEST``)."""
    return json_manifest_is(path, SHARE_MANIFEST, lambda m: m.get("format") == "vggt-mv-share")


def share_files(path: Path) -> list[str]:
    """The files a previous share folder lists (older ones list none: they always held ``SHARE_FILES``)."""
    return manifest_files(path, SHARE_MANIFEST) or SHARE_FILES


def _check_target(out: Path, fmt: str, inputs: list[Path]) -> None:
    """The output rule (DESIGN §12), checked before any recording: never the current folder, an
    input or a folder holding one; an existing target only when this exporter wrote it."""
    if fmt == "html":
        check_output(out, kind="file", inputs=inputs, is_ours=is_shared_html)
    else:
        check_output(out, kind="dir", inputs=inputs, is_ours=is_share_dir, written=share_files)


def _write_output(out: Path, payload: str | dict[str, str | bytes], inputs: list[Path]) -> None:
    """Write the export through the output rule (checked again, temp + rename): one HTML
    (``payload`` a string) or a folder (``payload`` = relative path -> content)."""
    if isinstance(payload, str):
        with output_file(out, "w", inputs=inputs, is_ours=is_shared_html) as handle:
            handle.write(payload)
        return
    with output_dir(out, inputs=inputs, is_ours=is_share_dir, written=share_files) as tmp:
        for rel, content in payload.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


class _Scene:
    """The per-timestep clouds / frustum images of ``rec`` under the export options."""

    def __init__(self, rec: Reconstruction, color_by: str, conf_percentile: float | None,
                 source: str) -> None:
        self.rec, self.source = rec, source
        self.color_by = color_by if rec.dynamic_mask is not None else "image"
        if color_by == "mask" and rec.dynamic_mask is None:
            log.warning("the result has no dynamic mask; colouring points by image")
        p = conf_percentile if conf_percentile and conf_percentile > 0 else None
        self.keep = rec.confidence_mask(source, percentile=p)
        self.counts = self.keep.sum(axis=(2, 3))  # [T, V]
        self.center = rec.scene_center().astype(np.float64)
        self.scale = float(rec.scene_scale())

    def image(self, t: int, v: int) -> np.ndarray:
        img = self.rec.images[t, v]
        if self.color_by == "mask":
            img = tint_mask(img, self.rec.dynamic_mask[t, v])
        return img

    def clouds(self, t: int, factor: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per view ``(points [N,3] f32 recentred, colours [N,3] uint8)`` of timestep ``t``."""
        rec = self.rec
        conf_all = rec.depth_conf if self.source == "depth" else rec.world_points_conf
        conf = np.concatenate([conf_all[t, v][self.keep[t, v]] for v in range(rec.num_views)])
        chosen = np.zeros(len(conf), bool)
        chosen[select_points(conf, factor, seed=t)] = True
        out, start = [], 0
        for v in range(rec.num_views):  # the viewer's clouds, then this timestep's share of `chosen`
            pts, col = cloud_for(rec, self.keep, t, v, self.source, self.color_by, self.center)
            mine = chosen[start:start + len(pts)]
            start += len(pts)
            out.append((pts[mine], col[mine]))
        return out


def _record(scene: _Scene, plan: SizePlan, fps: float, point_size: float, up: str,
            show_cameras: bool) -> Any:
    """Build the scene on a temporary viser server; return its finished ``StateSerializer``
    (single use: ``serialize()`` or ``as_html()``)."""
    rec = scene.rec
    h, w = rec.image_size
    with temporary_server() as server:
        sc = server.scene
        sc.set_up_direction(up)
        sc.add_frame("/world", show_axes=False, wxyz=ROOT_WXYZ[up])
        frames = []
        for t in range(rec.num_timesteps):
            frames.append(sc.add_frame(f"/world/t{t:03d}", show_axes=False, visible=(t == 0)))
            for v, (pts, col) in enumerate(scene.clouds(t, plan.point_factor)):
                sc.add_frame(f"/world/t{t:03d}/v{v}", show_axes=False)
                sc.add_point_cloud(f"/world/t{t:03d}/v{v}/points", pts, col, point_size=point_size,
                                   point_shape="rounded", precision="float16")
                if not show_cameras:
                    continue
                fov, aspect = frustum_fov_aspect(rec.intrinsic[t, v], h, w)
                wxyz, pos = frustum_pose(rec.extrinsic[t, v], scene.center)
                image = resize_image(scene.image(t, v), plan.image_side) if plan.image_side else None
                sc.add_camera_frustum(f"/world/t{t:03d}/v{v}/cam", fov=fov, aspect=aspect,
                                      scale=0.08 * scene.scale, color=CAM_RGB, image=image, format="jpeg",
                                      jpeg_quality=JPEG_QUALITY, wxyz=wxyz, position=pos,
                                      thickness=0.003 * scene.scale)
        ic = server.initial_camera
        ic.position, ic.look_at, ic.up = initial_camera(rec.extrinsic[0, 0], scene.center, scene.scale, up)
        serializer = server.get_scene_serializer()
        for t in range(rec.num_timesteps):
            if t > 0:
                frames[t - 1].visible = False
                frames[t].visible = True
            serializer.insert_sleep(1.0 / fps)
    return serializer


def _html(serializer: Any) -> str:
    """viser's own ``as_html`` (client + embedded recording), with ``MARKER`` after ``<head>``."""
    html = serializer.as_html()
    head = html.index("<head>") + len("<head>")
    return html[:head] + MARKER + html[head:]


def _payload(scene: _Scene, plan: SizePlan, fmt: str, fps: float, point_size: float, up: str,
             show_cameras: bool, name: str, conf_percentile: float | None) -> tuple[str | dict, int]:
    """Record the scene under ``plan``; return what ``_write_output`` writes and its size in bytes."""
    rec = scene.rec
    serializer = _record(scene, plan, fps, point_size * scene.scale, up, show_cameras)
    if fmt == "html":
        html = _html(serializer)
        return html, len(html.encode("utf-8"))
    manifest = json.dumps({"format": "vggt-mv-share", "version": 1, "points": plan.points,
                           "point_factor": plan.point_factor, "image_side": plan.image_side,
                           "timesteps": rec.num_timesteps, "views": rec.num_views, "fps": fps,
                           "color_by": scene.color_by, "conf_percentile": conf_percentile,
                           "files": SHARE_FILES}, indent=1)
    files: dict[str, str | bytes] = {
        "scene.viser": serializer.serialize(), "viewer/index.html": viser_client_path().read_bytes(),
        "README.md": _readme(name), SHARE_MANIFEST: manifest}
    return files, sum(len(c if isinstance(c, bytes) else c.encode("utf-8")) for c in files.values())


def _readme(name: str) -> str:
    return (f"# {name}: a vggt-mv 4D reconstruction (viser recording)\n\n"
            "Host this folder on any static web server and open:\n\n"
            "    viewer/?playbackPath=../scene.viser\n\n"
            "e.g. `python -m http.server` here, then http://127.0.0.1:8000/viewer/?playbackPath=../scene.viser\n"
            "(browsers do not load scene.viser from file://; the single-file export is "
            "`vggt-mv export-html RESULT --out scene.html`).\n")


def export_html(
    rec: Reconstruction,
    out: str | os.PathLike,
    *,
    format: Literal["html", "viser"] = "html",
    color_by: Literal["image", "mask"] = "image",
    fps: float = 4.0,
    conf_percentile: float | None = 20.0,
    source: Literal["depth", "points"] = "depth",
    point_size: float = 0.004,
    up: Literal["-y", "+z"] = "-y",
    max_mb: float = 60.0,
    image_size: int = 256,
    show_cameras: bool = True,
    inputs: list[Path] | None = None,
) -> ShareResult:
    """Write ``rec`` as one offline HTML player (``format="html"``) or as a folder with
    ``scene.viser`` + ``viewer/index.html`` (``format="viser"``), within ``max_mb`` megabytes.

    ``point_size`` is a fraction of the scene size (the viewer's default is 0.004);
    ``image_size`` caps the longer side of the frustum images. Options are fixed in the file.
    Raises ``ValueError`` on bad options, an empty result or a budget that cannot be met.
    """
    out = Path(out)
    if format not in ("html", "viser"):
        raise ValueError(f"--format must be 'html' or 'viser', got {format!r}")
    if color_by not in ("image", "mask"):
        raise ValueError(f"--colour must be 'image' or 'mask', got {color_by!r}")
    if source not in ("depth", "points"):
        raise ValueError(f"--source must be 'depth' or 'points', got {source!r}")
    if up not in ROOT_WXYZ:
        raise ValueError(f"--up must be '-y' or '+z', got {up!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"--fps must be > 0, got {fps}")
    if not (math.isfinite(max_mb) and max_mb > 0):
        raise ValueError(f"--max-mb must be > 0, got {max_mb}")
    if conf_percentile is not None and not 0.0 <= conf_percentile <= 100.0:
        raise ValueError(f"--conf-percentile must be in [0, 100], got {conf_percentile}")
    if not point_size > 0:
        raise ValueError(f"--point-size must be > 0, got {point_size}")
    if format == "html" and out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {out} must end in .html (or use --format viser for a folder)")
    if format == "viser" and out.suffix.lower() in (".html", ".htm", ".viser"):
        raise ValueError(f"--out {out}: --format viser writes a folder; give a folder name")
    _check_target(out, format, list(inputs or []))
    if rec.num_timesteps == 0 or rec.num_views == 0:
        raise ValueError("the result is empty (no timesteps or views)")
    scene = _Scene(rec, color_by, conf_percentile, source)
    counts_t = scene.counts.sum(axis=1)
    if counts_t.sum() == 0:
        raise ValueError(f"the result has no valid points after the confidence filter "
                         f"(--conf-percentile {conf_percentile}); lower --conf-percentile")

    client_bytes = viser_client_path().stat().st_size
    image_size = min(int(image_size), max(rec.image_size))
    num_images = rec.num_timesteps * rec.num_views if show_cameras else 0
    step = max(1, (rec.num_timesteps * rec.num_views) // 6)
    samples = [scene.image(i // rec.num_views, i % rec.num_views)
               for i in range(0, rec.num_timesteps * rec.num_views, step)][:6]
    budget = int(max_mb * MB)
    fixed = client_bytes + 2048
    nodes = rec.num_timesteps * (1 + 3 * rec.num_views)
    compression, best = 1.0, None
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        plan = plan_size(counts_t, samples, num_images, image_size, budget, fixed, base64=(format == "html"),
                         num_nodes=nodes, compression=compression)
        log.info("export-html: %s", plan.describe())
        payload, size = _payload(scene, plan, format, fps, point_size, up, show_cameras, out.name,
                                 conf_percentile)
        if size <= budget and (best is None or size > best[2]):
            best = (plan, payload, size)
        # calibrate the estimate by the real size: rebuild smaller when over, larger when the
        # raw-byte estimate left much of the budget unused
        ratio = max(size - fixed, 1) / max(plan.estimated_bytes - fixed, 1)
        if size <= budget and (plan.point_factor >= 1.0 or size >= 0.8 * budget or attempt > 1):
            break
        log.info("export-html: %.1f MB %s the %.1f MB budget; rebuilding with %s points", size / MB,
                 "is over" if size > budget else "uses little of", budget / MB,
                 "fewer" if size > budget else "more")
        compression *= ratio * (1.1 if size > budget else 1.05)
    if best is None:
        raise ValueError(f"the export is {size / MB:.1f} MB, over --max-mb {max_mb:g} after "
                         f"{_MAX_ATTEMPTS} tries; raise --max-mb or --conf-percentile")
    plan, payload, size = best
    _write_output(out, payload, list(inputs or []))
    written = _tree_bytes(out)
    log.info("export-html: wrote %s (%.1f MB of %.1f MB; %s; %d timesteps x %d views)", out, written / MB,
             budget / MB, "all points" if plan.point_factor >= 1.0 else
             f"points x{plan.point_factor:.3f} per timestep", rec.num_timesteps, rec.num_views)
    return ShareResult(path=out, bytes=written, plan=plan, attempts=attempt)
