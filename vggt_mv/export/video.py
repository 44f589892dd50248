"""Demo videos of a ``Reconstruction``: a small software point splatter + H.264 MP4 writer.

Why a software splatter (torch, CPU, vectorised) rather than a real rasteriser: a demo video must
be recordable on a fresh headless machine (CI, a remote box, a container) with no GPU, no display
and no browser. open3d's ``OffscreenRenderer`` needs an EGL / Vulkan (Filament) context that a
fresh CPU-only machine lacks, and viser's ``get_render`` asks a *connected browser client* to
render, so it fails with no tab open. Splatting a few hundred thousand coloured points with a
z-buffer is cheap in torch: project, expand each point to a small pixel footprint, and resolve
visibility with ``scatter_reduce(..., "amin")`` on the flat pixel index - no per-point Python loop.

Conventions: cameras are OpenCV ``[R|t]`` camera-from-world (x right, y down, z forward), pixel
``(row i, col j)`` is centred at ``u = j, v = i`` (VGGT's convention), so a point projecting to
``(u, v)`` lands in column ``round(u)``, row ``round(v)``. Images are ``[H,W,3] uint8``.

Camera paths (``camera_path``): ``"timeline"`` keeps a fixed viewpoint - the reference camera
(t=0, v=0) pulled back and raised a little, looking at ``scene_center()`` - and steps through the
timesteps; ``"orbit"`` circles ``scene_center()`` around the up axis, either at a fixed timestep
or while the timeline advances. ``up="-y"`` is the OpenCV / VGGT default (the reference camera's
y axis points down); ``up="+z"`` suits gravity-aligned (z-up) worlds.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from vggt_mv.export.glb import _PALETTE, frustum_lines
from vggt_mv.export.output import output_path

if TYPE_CHECKING:
    from vggt_mv.inference.reconstruction import Reconstruction

__all__ = [
    "ViewCamera", "splat", "render_frame", "look_at", "frustum_edge_points",
    "camera_path", "iter_frames", "record", "check_video_name", "VIDEO_SUFFIXES", "UP_AXES",
]

Mode = Literal["timeline", "orbit"]
Up = Literal["-y", "+z"]
#: world up vector for each ``up`` choice
UP_AXES: dict[str, np.ndarray] = {"-y": np.array([0.0, -1.0, 0.0]), "+z": np.array([0.0, 0.0, 1.0])}
_FRUSTUM_EDGES = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])


@dataclass(frozen=True)
class ViewCamera:
    """One virtual pinhole camera: ``extrinsic [3,4]`` camera-from-world, ``intrinsic [3,3]``,
    and the timestep ``t`` whose points the frame shows."""

    extrinsic: np.ndarray
    intrinsic: np.ndarray
    t: int


# ---------------------------------------------------------------------------------- splatting
def _offsets(point_size: int) -> torch.Tensor:
    """Pixel offsets ``[K,2]`` (dx, dy) of a splat ``point_size`` pixels wide (a disc from 4 up)."""
    p = max(int(point_size), 1)
    r = torch.arange(-((p - 1) // 2), p // 2 + 1)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    off = torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=1)
    if p >= 4:  # round footprint for big points: keep offsets within the disc of diameter p
        centre = (p // 2 - (p - 1) // 2) / 2.0
        keep = ((off.float() - centre) ** 2).sum(1) <= (p / 2.0) ** 2 + 1e-6
        off = off[keep]
    return off


def splat(
    xyz: np.ndarray | torch.Tensor,
    rgb: np.ndarray | torch.Tensor,
    extrinsic: np.ndarray,
    intrinsic: np.ndarray,
    size: tuple[int, int],
    point_size: int | Sequence[int] | np.ndarray = 2,
    background: Sequence[int] = (18, 18, 22),
    near: float = 1e-6,
) -> np.ndarray:
    """Z-buffered splat of coloured points into an image ``[H,W,3] uint8``.

    ``xyz [N,3]`` world points, ``rgb [N,3] uint8``, ``extrinsic [3,4]`` camera-from-world,
    ``intrinsic [3,3]``, ``size=(H, W)``. ``point_size`` is the splat width in pixels, one value
    or one per point ``[N]`` (e.g. thin frustum lines over fat points). Points with camera depth
    ``<= near`` (clamped to > 0) are dropped; the nearest point covering a pixel wins (ties:
    lowest index). At most ``2**31`` points.
    """
    height, width = int(size[0]), int(size[1])
    xyz = torch.as_tensor(np.asarray(xyz, dtype=np.float32)).reshape(-1, 3)
    rgb = torch.as_tensor(np.asarray(rgb, dtype=np.uint8)).reshape(-1, 3)
    image = torch.tensor(list(background), dtype=torch.uint8).expand(height * width, 3).clone()
    if len(xyz) == 0:
        return image.reshape(height, width, 3).numpy()
    ext = torch.as_tensor(np.asarray(extrinsic, dtype=np.float32))
    k = torch.as_tensor(np.asarray(intrinsic, dtype=np.float32))
    cam = xyz @ ext[:, :3].T + ext[:, 3]
    z = cam[:, 2].contiguous()
    ok = torch.isfinite(cam).all(1) & (z > max(float(near), 1e-30))
    zs = torch.where(ok, z, torch.ones_like(z))
    u = torch.round(k[0, 0] * cam[:, 0] / zs + k[0, 1] * cam[:, 1] / zs + k[0, 2])
    v = torch.round(k[1, 1] * cam[:, 1] / zs + k[1, 2])
    ok &= (u > -64) & (u < width + 64) & (v > -64) & (v < height + 64)  # also guards int overflow
    sizes = np.broadcast_to(np.asarray(point_size, dtype=np.int64), (len(xyz),))
    keys = []
    for p in np.unique(sizes):  # one vectorised pass per distinct splat size (usually 1-2)
        sel = torch.nonzero(ok & torch.as_tensor(sizes == p)).squeeze(1)
        off = _offsets(int(p))  # [K,2]
        uu = (u[sel, None] + off[None, :, 0]).long()  # [n,K]
        vv = (v[sel, None] + off[None, :, 1]).long()
        inside = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
        # One int64 key per fragment: (depth bits << 32) | point id. Positive float32 bit patterns
        # sort like the floats, so the per-pixel minimum key is the nearest point (ties: lowest id).
        zkey = (z[sel].view(torch.int32).long() << 32) | sel
        pix = (vv * width + uu)[inside]
        keys.append((pix, zkey[:, None].expand_as(uu)[inside]))
    pix = torch.cat([k_[0] for k_ in keys])
    if len(pix) == 0:
        return image.reshape(height, width, 3).numpy()
    sentinel = torch.iinfo(torch.int64).max
    best = torch.full((height * width,), sentinel, dtype=torch.long)
    best.scatter_reduce_(0, pix, torch.cat([k_[1] for k_ in keys]), "amin")
    hit = best != sentinel
    image[hit] = rgb[best[hit] & 0xFFFFFFFF]
    return image.reshape(height, width, 3).numpy()


# ---------------------------------------------------------------------------------- cameras
def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Camera-from-world ``[3,4]`` (OpenCV axes) at ``eye [3]`` looking at ``target [3]`` with
    world ``up [3]`` pointing towards the top of the image."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    z /= max(np.linalg.norm(z), 1e-12)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:  # looking straight along up: pick any perpendicular
        x = np.cross(z, np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])
    return np.concatenate([rot, (-rot @ eye)[:, None]], axis=1).astype(np.float32)


def _view_intrinsic(rec: "Reconstruction", size: tuple[int, int], zoom: float) -> np.ndarray:
    """Pinhole ``[3,3]`` for an ``(H, W)`` frame with the reference camera's field of view
    (the tighter of its horizontal / vertical one), scaled by ``zoom``."""
    height, width = size
    k0 = rec.intrinsic[0, 0].astype(np.float64)
    h0, w0 = rec.image_size
    focal = zoom * min(k0[0, 0] / w0 * width, k0[1, 1] / h0 * height)
    return np.array([[focal, 0, (width - 1) / 2.0], [0, focal, (height - 1) / 2.0], [0, 0, 1]], np.float32)


def camera_path(
    rec: "Reconstruction",
    mode: Mode = "timeline",
    size: tuple[int, int] = (480, 640),
    frames_per_step: int = 2,
    num_frames: int | None = None,
    orbit_timestep: int | None = None,
    up: Up = "-y",
    pull_back: float = 0.35,
    raise_by: float = 0.15,
    zoom: float = 0.9,
    hold: int = 0,
    loops: int = 1,
    arc_degrees: float = 360.0,
) -> list[ViewCamera]:
    """Virtual cameras, one per frame.

    ``timeline``: a fixed viewpoint (reference camera pulled back by ``pull_back * scene_scale``
    and raised by ``raise_by * scene_scale`` along ``up``, looking at the scene centre); each
    timestep shown ``frames_per_step`` frames, the last one ``hold`` extra frames, all ``loops``
    times. ``orbit``: ``num_frames`` (default ``max(T * frames_per_step, 48)``) frames on one
    circle around the up axis through the scene centre, starting at the timeline viewpoint; at
    ``orbit_timestep`` if given, else the timeline advances over the orbit. ``arc_degrees < 360``
    swings back and forth over that arc around the start instead (for front-facing captures whose
    back side is empty).
    """
    if mode not in ("timeline", "orbit"):
        raise ValueError(f"mode must be 'timeline' or 'orbit', got {mode!r}")
    if up not in UP_AXES:
        raise ValueError(f"up must be one of {sorted(UP_AXES)}, got {up!r}")
    if frames_per_step < 1 or loops < 1 or hold < 0:
        raise ValueError("frames_per_step and loops must be >= 1, hold >= 0")
    up_vec = UP_AXES[up]
    n_t = rec.num_timesteps
    centre = rec.scene_center().astype(np.float64)
    scale = rec.scene_scale()
    ref = rec.extrinsic[0, 0].astype(np.float64)
    eye0 = -ref[:, :3].T @ ref[:, 3]  # reference camera centre
    eye = eye0 - ref[2, :3] * pull_back * scale + up_vec * raise_by * scale
    k = _view_intrinsic(rec, size, zoom)
    if mode == "timeline":
        steps = [t for t in range(n_t) for _ in range(frames_per_step)] + [n_t - 1] * hold
        fixed = look_at(eye, centre, up_vec)
        return [ViewCamera(fixed, k, t) for t in steps * loops]
    if orbit_timestep is not None and not -n_t <= orbit_timestep < n_t:
        raise ValueError(f"orbit_timestep {orbit_timestep} out of range for T={n_t}")
    n = int(num_frames) if num_frames is not None else max(n_t * frames_per_step, 48)
    if n < 1 or not 0.0 < arc_degrees <= 360.0:
        raise ValueError(f"need num_frames >= 1 and 0 < arc_degrees <= 360, got {n}, {arc_degrees}")
    rel = eye - centre
    height = float(rel @ up_vec)
    radial = rel - height * up_vec
    radius = float(np.linalg.norm(radial))
    if radius < 1e-6 * scale:  # eye on the axis: orbit at the scene scale instead
        radial = np.cross(up_vec, [1.0, 0.0, 0.0] if abs(up_vec[0]) < 0.9 else [0.0, 1.0, 0.0])
        radius = 0.5 * scale
    e1 = radial / np.linalg.norm(radial)
    e2 = np.cross(up_vec, e1)
    cams = []
    for i in range(n):
        phase = 2.0 * np.pi * i / n
        ang = phase if arc_degrees >= 360.0 else np.deg2rad(arc_degrees) / 2.0 * np.sin(phase)
        pos = centre + height * up_vec + radius * (np.cos(ang) * e1 + np.sin(ang) * e2)
        t = orbit_timestep % n_t if orbit_timestep is not None else min(i * n_t // n, n_t - 1)
        cams.append(ViewCamera(look_at(pos, centre, up_vec), k, t))
    return cams * loops


def frustum_edge_points(
    extrinsic: np.ndarray, intrinsic: np.ndarray, width: int, height: int, size: float, samples: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Frustum wireframes as sampled points: ``extrinsic [V,3,4]``, ``intrinsic [V,3,3]`` ->
    ``(xyz [V*8*samples,3] f32, view_id [V*8*samples] int)`` (8 edges per camera)."""
    verts = frustum_lines(extrinsic, intrinsic, width, height, size)  # [V,5,3]
    a, b = verts[:, _FRUSTUM_EDGES[:, 0]], verts[:, _FRUSTUM_EDGES[:, 1]]  # [V,8,3]
    s = np.linspace(0.0, 1.0, max(int(samples), 2))[None, None, :, None]
    pts = a[:, :, None] + (b - a)[:, :, None] * s  # [V,8,S,3]
    ids = np.broadcast_to(np.arange(len(verts))[:, None, None], pts.shape[:3])
    return pts.reshape(-1, 3).astype(np.float32), ids.reshape(-1)


def render_frame(
    rec: "Reconstruction",
    view: ViewCamera,
    size: tuple[int, int] = (480, 640),
    point_size: int = 2,
    cloud: tuple[np.ndarray, np.ndarray] | None = None,
    color_by: Literal["image", "mask"] = "image",
    conf_percentile: float | None = 20.0,
    show_cameras: bool = True,
    background: Sequence[int] = (18, 18, 22),
    max_points: int | None = 400_000,
) -> np.ndarray:
    """Render timestep ``view.t`` from ``view`` -> ``[H,W,3] uint8``.

    ``cloud=(xyz [N,3], rgb [N,3])`` reuses already gathered points (else ``rec.points``);
    clouds larger than ``max_points`` are strided down. ``show_cameras`` draws the timestep's
    input cameras as 1-pixel frustum wireframes, coloured per view, occluded like the points.
    """
    if cloud is None:
        cloud = rec.points(view.t, conf_percentile=conf_percentile, color_by=color_by)
    xyz, rgb = cloud
    if max_points is not None and len(xyz) > max_points:
        stride = int(np.ceil(len(xyz) / max_points))
        xyz, rgb = xyz[::stride], rgb[::stride]
    sizes = np.full(len(xyz), int(point_size), dtype=np.int64)
    if show_cameras:
        h0, w0 = rec.image_size
        samples = max(2 * max(size), 16)  # dense enough for a continuous line in most views
        fxyz, fid = frustum_edge_points(rec.extrinsic[view.t], rec.intrinsic[view.t], w0, h0,
                                        0.05 * rec.scene_scale(), samples=min(samples, 2048))
        xyz = np.concatenate([xyz, fxyz])
        rgb = np.concatenate([rgb, _PALETTE[fid % len(_PALETTE)]])
        sizes = np.concatenate([sizes, np.ones(len(fxyz), dtype=np.int64)])
    return splat(xyz, rgb, view.extrinsic, view.intrinsic, size, sizes, background)


# ---------------------------------------------------------------------------------- writing
VIDEO_COMMENT = "written by vggt-mv record"


def is_recorded_video(path: Path) -> bool:
    """A video ``vggt-mv record`` wrote (its container comment), so re-recording may replace it."""
    import av

    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment") == VIDEO_COMMENT
    except (OSError, ValueError, av.error.FFmpegError):
        return False


def _draw_label(frame: np.ndarray, text: str) -> np.ndarray:
    """Small white ``text`` with a dark outline in the bottom-left corner (cv2; in place)."""
    import cv2

    scale = max(frame.shape[0] / 720.0, 0.3)
    org = (max(int(8 * scale), 2), frame.shape[0] - max(int(10 * scale), 3))
    thick = max(int(round(2 * scale)), 1)
    cv2.putText(frame, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(frame, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return frame


def iter_frames(
    rec: "Reconstruction",
    views: Sequence[ViewCamera],
    size: tuple[int, int] = (480, 640),
    point_size: int = 2,
    color_by: Literal["image", "mask"] = "image",
    conf_percentile: float | None = 20.0,
    show_cameras: bool = True,
    label: bool = True,
    background: Sequence[int] = (18, 18, 22),
    max_points: int | None = 400_000,
) -> Iterator[np.ndarray]:
    """Yield one ``[H,W,3] uint8`` frame per ``views`` entry (lazily: a preview or a writer
    consumes them one at a time). Only the current timestep's cloud is kept in memory; ``label``
    stamps ``t i/T`` in the bottom-left corner."""
    cached_t, cloud = -1, None
    for view in views:
        if view.t != cached_t:
            cached_t = view.t
            cloud = rec.points(view.t, conf_percentile=conf_percentile, color_by=color_by)
        frame = render_frame(rec, view, size, point_size, cloud, show_cameras=show_cameras,
                             background=background, max_points=max_points)
        if label and rec.num_timesteps > 1:
            frame = _draw_label(np.ascontiguousarray(frame), f"t {view.t + 1}/{rec.num_timesteps}")
        yield frame


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (1 is often fastest on a busy machine)."""
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(int(num_threads), 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: File names the H.264 recording can be written to (pyav picks the container by the suffix).
VIDEO_SUFFIXES = (".mp4", ".mov")


def check_video_name(path: str | os.PathLike, what: str = "the video") -> None:
    """ValueError unless ``path`` ends in one of ``VIDEO_SUFFIXES`` (``what`` names it: e.g. ``--out``)."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{what} {path} must end in {' / '.join(VIDEO_SUFFIXES)} (the container follows it), "
                         f"e.g. {path.with_suffix('.mp4')}")


def record(
    rec: "Reconstruction",
    out_path: str | os.PathLike,
    mode: Mode = "timeline",
    fps: float = 10,
    size: tuple[int, int] = (480, 640),
    point_size: int = 2,
    color_by: Literal["image", "mask"] = "image",
    conf_percentile: float | None = 20.0,
    frames_per_step: int = 2,
    show_cameras: bool = True,
    progress: Callable[[int, int], None] | None = None,
    up: Up = "-y",
    num_frames: int | None = None,
    orbit_timestep: int | None = None,
    hold: int = 0,
    loops: int = 1,
    label: bool = True,
    background: Sequence[int] = (18, 18, 22),
    max_points: int | None = 400_000,
    num_threads: int | None = None,
    arc_degrees: float = 360.0,
    inputs: Sequence[str | os.PathLike] = (),
) -> Path:
    """Render ``rec`` along ``camera_path(mode, ...)`` and write an H.264 (yuv420p) MP4.

    Frames are streamed to the encoder one at a time (``iter_frames``), so memory stays bounded.
    The file appears atomically at ``out_path`` (temp file in the same folder, then
    ``os.replace``) and follows the output rule: an existing file is replaced only when it is a
    video this function wrote, never an input (``inputs``); on any error, including one raised by ``progress(done, total)`` (called
    after each frame, e.g. to cancel), nothing partial remains and an existing file is kept.
    ``size=(H, W)`` must be even (yuv420p). ``num_threads`` temporarily sets torch's thread count
    while rendering (None: leave it). Returns the absolute output path.
    """
    import imageio.v3 as iio

    height, width = int(size[0]), int(size[1])
    check_video_name(out_path)
    if height < 2 or width < 2 or height % 2 or width % 2:
        raise ValueError(f"video size must be even and >= 2 (yuv420p), got {height}x{width}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if color_by not in ("image", "mask"):
        raise ValueError(f"color_by must be 'image' or 'mask', got {color_by!r}")
    if conf_percentile is not None and not 0.0 <= conf_percentile <= 100.0:
        raise ValueError(f"conf_percentile must be in [0, 100], got {conf_percentile}")
    views = camera_path(rec, mode, (height, width), frames_per_step, num_frames, orbit_timestep, up,
                        hold=hold, loops=loops, arc_degrees=arc_degrees)
    frames = iter_frames(rec, views, (height, width), point_size, color_by, conf_percentile, show_cameras,
                         label, background, max_points)
    out = Path(out_path).absolute()
    with _torch_threads(num_threads), output_path(out, inputs=inputs, is_ours=is_recorded_video, keep_ext=True) as tmp:
        with iio.imopen(tmp, "w", plugin="pyav") as writer:
            writer.init_video_stream("libx264", fps=fps, pixel_format="yuv420p")
            container = getattr(writer, "_container", None)  # marks the file as ours (see is_recorded_video)
            if container is not None:
                container.metadata["comment"] = VIDEO_COMMENT
            for i, frame in enumerate(frames):
                writer.write_frame(frame)
                if progress is not None:
                    progress(i + 1, len(views))
    return out
