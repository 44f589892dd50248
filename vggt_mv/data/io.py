"""File-level I/O for scenes: natural sort, image/video/mask readers, the time-major dump layout.

Dump layout (what researchers' preprocessing scripts write; ``write_dump`` produces it)::

    root/images/time_00/view0.png          RGB frames, one folder per timestep
    root/depths/time_00/view0.npy          float32 [H,W] z-depth, 0 = invalid        (optional)
    root/intrs/time_00/view0.npy           float32 [3,3] pinhole intrinsics          (optional)
    root/extrs/time_00/view0.npy           float32 [3,4] world-to-camera [R|t] OpenCV (optional)
    root/masks/view_0/000.png              binary dynamic masks, SegAnyMo style      (optional)

Pixel convention everywhere in this package: integer pixel coordinates are pixel centres
(VGGT's unprojection grid ``u = arange(W)``), so the centred principal point is ``(W-1)/2``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

log = logging.getLogger("vggt_mv.data")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def natural_key(name: str | Path) -> list:
    """Sort key that orders embedded numbers numerically: ``frame2 < frame10``."""
    s = Path(name).name if isinstance(name, Path) else str(name)
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", s)]


def natural_sorted(items: Sequence[str | Path]) -> list:
    """``items`` sorted with :func:`natural_key` on their base names."""
    return sorted(items, key=lambda p: natural_key(Path(p).name))


def is_video(path: str | Path) -> bool:
    """True for a regular file with a known video extension."""
    p = Path(path)
    return p.is_file() and p.suffix.lower() in VIDEO_EXTS


def list_images(folder: str | Path, what: str = "camera folder") -> list[Path]:
    """Image files of ``folder`` in natural order; other files are ignored (debug log).

    Raises ValueError if the folder does not exist or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        hint = "pass a folder of frames or a video file" if what == "camera folder" else "check the path"
        raise ValueError(f"{what} {str(folder)!r} does not exist or is not a directory; {hint}")
    files, skipped = [], []
    for p in folder.iterdir():
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
            files.append(p)
        else:
            skipped.append(p.name)
    if skipped:
        log.debug("ignoring %d non-image entries in %s: %s", len(skipped), folder, skipped[:5])
    if not files:
        raise ValueError(f"{what} {str(folder)!r} contains no images ({', '.join(IMAGE_EXTS)}); "
                         "point it at a folder of frames/masks (or pass a video file for a camera)")
    return natural_sorted(files)


#: grey-level masks: a pixel is dynamic when its value is >= this share of the format's maximum
MASK_THRESHOLD = 0.5
_NOTED: set[tuple[str, str]] = set()  # (what, folder) already logged: once per camera folder


def _note_once(what: str, path: Path, message: str) -> None:
    key = (what, str(path.parent))
    if key not in _NOTED:
        _NOTED.add(key)
        log.info(message, path.parent)


def _decode(path: str | Path, what: str) -> "Image.Image":
    """Fully decode ``path`` with Pillow, which raises on truncated/corrupt files (OpenCV does not)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.copy() if img.mode not in ("P", "PA") else img.convert("RGBA")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"cannot read {what} {str(path)!r} ({reason}): the file is truncated, corrupt or not "
                         "an image; re-export it or remove it from the folder") from None


def _to_array(img) -> np.ndarray:
    """A Pillow image as a numpy array; 16-bit and float modes scaled to uint8 range."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        return np.clip(arr / (65535.0 if arr.max() > 255 else 1.0) * (255.0 if arr.max() > 255 else 1.0),
                       0, 255).astype(np.uint8)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return np.asarray(img)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB ``[H,W,3]``; ValueError naming the file if truncated or unreadable.

    Transparency is composited on white (logged once per folder); grey images are replicated.
    """
    path = Path(path)
    img = _decode(path, "image")
    if img.mode in ("RGBA", "LA") or (img.mode == "RGB" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        if (rgba[..., 3] < 255).any():
            _note_once("alpha", path, "images in %s have transparency: composited on white")
        alpha = rgba[..., 3:] / 255.0
        return np.clip(np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)), 0, 255).astype(np.uint8)
    if img.mode not in ("RGB", "L"):
        arr = _to_array(img)
        if arr.ndim == 2:
            return np.repeat(arr[..., None], 3, axis=2)
        img = img.convert("RGB")
    arr = np.asarray(img.convert("RGB") if img.mode == "L" else img)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file (decodes it; ValueError naming the file if unreadable)."""
    return read_rgb(path).shape[:2]


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask image as bool ``[H,W]`` (True = dynamic).

    Binary 0/255 and 0/1 encodings are exact; grey levels are thresholded at ``MASK_THRESHOLD`` of
    the maximum (>= 128 for 8-bit), logged once per folder; colour masks use their brightest channel.
    """
    path = Path(path)
    m = _to_array(_decode(path, "mask"))
    if m.ndim == 3:
        m = m[..., :3].max(axis=2)
    top = int(m.max()) if m.size else 0
    if top <= 1:
        return m > 0
    levels = np.unique(m)
    if len(levels) > 2 or (len(levels) == 2 and levels[0] != 0):
        _note_once("grey", path, f"masks in %s have grey levels: pixels >= {int(MASK_THRESHOLD * 255)} of 255 "
                   "count as dynamic")
    return m >= MASK_THRESHOLD * 255


def video_frame_count(path: str | Path) -> int:
    """Number of decodable frames of a video (counts by grabbing; container headers lie)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {str(path)!r}; check the file or convert it to MP4 (H.264)")
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    if n == 0:
        raise ValueError(f"video {str(path)!r} has no decodable frames; re-encode it (e.g. ffmpeg -i in out.mp4)")
    return n


def iter_video_frames(path: str | Path, indices: Sequence[int]) -> Iterator[np.ndarray]:
    """Yield the frames ``indices`` (sorted, unique) of a video as uint8 RGB ``[H,W,3]``.

    Frames that are not requested are only grabbed, not converted.
    """
    wanted = sorted(set(int(i) for i in indices))
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {str(path)!r}; check the file or convert it to MP4 (H.264)")
    i, k = 0, 0
    try:
        while k < len(wanted) and cap.grab():
            if i == wanted[k]:
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    raise ValueError(f"cannot decode frame {i} of video {str(path)!r}; re-encode the video")
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                k += 1
            i += 1
    finally:
        cap.release()
    if k < len(wanted):
        raise ValueError(f"video {str(path)!r} ended after {i} frames, frame {wanted[k]} was requested")


def read_video_frames(path: str | Path, indices: Sequence[int]) -> list[np.ndarray]:
    """List version of :func:`iter_video_frames`."""
    return list(iter_video_frames(path, indices))


# ----------------------------------------------------------------------------- dump layout

_TIME_RE = re.compile(r"^time_(\d+)$")
_VIEW_RE = re.compile(r"^view_?(\d+)$")


def dump_image_root(root: str | Path) -> Path | None:
    """The folder holding ``time_XX/`` folders (``root/images`` or ``root``), or None."""
    root = Path(root)
    for cand in (root / "images", root):
        if cand.is_dir() and any(_TIME_RE.match(p.name) and p.is_dir() for p in cand.iterdir()):
            return cand
    return None


def dump_time_dirs(img_root: Path) -> list[Path]:
    """``time_XX`` folders of a dump image root, in natural order."""
    return natural_sorted([p for p in img_root.iterdir() if p.is_dir() and _TIME_RE.match(p.name)])


def dump_view_files(time_dir: Path) -> dict[str, Path]:
    """``{"view0": path, ...}`` for the view images in one ``time_XX`` folder."""
    out = {}
    for p in list_images(time_dir):
        if _VIEW_RE.match(p.stem):
            out[p.stem] = p
    return out


def view_index(view_name: str) -> int:
    """``"view3"`` / ``"view_3"`` / ``"cam3"`` -> 3 (trailing number; 0 if none)."""
    m = re.search(r"(\d+)$", view_name)
    return int(m.group(1)) if m else 0


def write_dump(root: str | Path, images: np.ndarray, *, depth: np.ndarray | None = None,
               intrinsic: np.ndarray | None = None, extrinsic: np.ndarray | None = None,
               dynamic_mask: np.ndarray | None = None) -> Path:
    """Write arrays in the time-major dump layout (see module doc).

    images ``[T,V,H,W,3]`` uint8 RGB; depth ``[T,V,H,W]``; intrinsic ``[T,V,3,3]``;
    extrinsic ``[T,V,3,4]``; dynamic_mask ``[T,V,H,W]`` bool -> ``masks/view_N/NNN.png`` (0/255).
    Deterministic: same arrays give byte-identical files.
    """
    root = Path(root)
    T, V = images.shape[:2]
    for t in range(T):
        tname = f"time_{t:02d}"
        for sub, arr in (("images", images), ("depths", depth), ("intrs", intrinsic), ("extrs", extrinsic)):
            if arr is None:
                continue
            d = root / sub / tname
            d.mkdir(parents=True, exist_ok=True)
            for v in range(V):
                if sub == "images":
                    cv2.imwrite(str(d / f"view{v}.png"), cv2.cvtColor(arr[t, v], cv2.COLOR_RGB2BGR))
                else:
                    np.save(d / f"view{v}.npy", np.ascontiguousarray(arr[t, v], dtype=np.float32))
    if dynamic_mask is not None:
        for v in range(V):
            d = root / "masks" / f"view_{v}"
            d.mkdir(parents=True, exist_ok=True)
            for t in range(T):
                cv2.imwrite(str(d / f"{t:03d}.png"), dynamic_mask[t, v].astype(np.uint8) * 255)
    return root
