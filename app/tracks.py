"""Drawing point tracks (query points): on the per-view images and as 3D polylines in the viser scene."""

from __future__ import annotations

import numpy as np

__all__ = ["track_colors", "draw_tracks", "track_segments", "draw_keypoints", "KEYPOINT_COLOR"]

KEYPOINT_COLOR = (255, 230, 0)  # yellow crosses: the keypoint map the sparse layers' bias reads


def track_colors(n: int) -> np.ndarray:
    """``[n, 3] uint8`` distinct saturated colours (HSV wheel) for point tracks."""
    import cv2

    hue = (np.arange(n) * 180 // max(n, 1)).astype(np.uint8)
    hsv = np.stack([hue, np.full(n, 255, np.uint8), np.full(n, 255, np.uint8)], -1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def draw_tracks(image: np.ndarray, tracks: np.ndarray, vis: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Image ``[H,W,3] uint8`` with tracks drawn: ``tracks [t+1, N, 2]`` pixel (x, y) up to the shown
    timestep (trail), ``vis [t+1, N]``; a filled dot where the point is now (hollow when not visible)."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    r = max(2, round(min(h, w) / 60))
    colors = track_colors(tracks.shape[1])
    for n in range(tracks.shape[1]):
        col = tuple(int(c) for c in colors[n])
        path = tracks[:, n]
        ok = np.isfinite(path).all(-1)
        pts = np.rint(path[ok]).astype(np.int32)
        if len(pts) > 1:
            cv2.polylines(out, [pts.reshape(-1, 1, 2)], False, col, max(1, r // 2), cv2.LINE_AA)
        if ok[-1]:
            x, y = np.rint(path[-1]).astype(int)
            cv2.circle(out, (int(x), int(y)), r, col, -1 if vis[-1, n] >= threshold else max(1, r // 2), cv2.LINE_AA)
    return out


def track_segments(points: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Lifted tracks ``[T, N, 3]`` (NaN = unseen) -> line segments ``[S, 2, 3]`` over timesteps 0..t
    and their colours ``[S, 2, 3] uint8`` (one colour per track)."""
    colors = track_colors(points.shape[1])
    a, b = points[:t], points[1:t + 1]
    ok = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)  # [t, N]
    seg = np.stack([a[ok], b[ok]], 1)
    col = np.repeat(np.broadcast_to(colors, ok.shape + (3,))[ok][:, None], 2, 1)
    return seg.astype(np.float32), np.ascontiguousarray(col, dtype=np.uint8)


def draw_keypoints(image: np.ndarray, heat: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Image ``[H,W,3] uint8`` with a yellow cross on every pixel of the keypoint map ``heat [H,W]`` >= threshold."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    r = max(2, round(min(out.shape[:2]) / 60))
    for y, x in zip(*np.nonzero(heat >= threshold)):
        cv2.drawMarker(out, (int(x), int(y)), KEYPOINT_COLOR, cv2.MARKER_CROSS, 2 * r + 1, 1)
    return out
