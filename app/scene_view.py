"""The viser 3D scene of one session: per-timestep point clouds, camera frustums, mask colouring.

Scene graph (everything under ``/world``, whose rotation implements the up-axis choice)::

    /world/t003                       one frame node per timestep; playback toggles .visible only
    /world/t003/v1                    one node per view (view filter toggles .visible)
    /world/t003/v1/points             fused cloud = all visible views together, recentred
    /world/t003/v1/cam                frustum with image thumbnail (predicted K, fov from fy and H)
    /world/t003/gt/v1                 ground-truth camera (Sim(3)-aligned to the prediction), if any
    /world/t003/ghost                 previous run (A/B mode), Sim(3)-aligned, other colour,
                                      semi-transparent frustum meshes
    /world/t003/tracks                point tracks (query points) lifted with the predicted depth:
                                      3D polylines over timesteps 0..t plus the current positions

Coordinates are recentred (the scene centre of the current run is subtracted) so that large
coordinates do not lose precision in viser's float16 point buffers. Up axis: ``-y`` keeps the
VGGT / OpenCV frame (y down), ``+z`` rotates the world by -90° about x.

Display options (confidence percentile, colour-by, point size, source) rebuild point nodes
from the stored ``Reconstruction`` - the model is never re-run; switching timesteps only flips
visibility.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from vggt_mv.inference.alignment import align_cameras, transform_extrinsic
from vggt_mv.export.viser_scene import (
    CAM_RGB, GHOST_RGB, GT_RGB, ROOT_WXYZ as _ROOT_WXYZ, UP_AXES, cloud_for, frustum_fov_aspect,
    frustum_mesh as _frustum_mesh, frustum_pose, initial_camera, thumb as _thumb, tint_mask,
)
from vggt_mv.inference.reconstruction import Reconstruction

from .tracks import track_colors, track_segments

__all__ = ["SceneView", "frustum_pose", "frustum_fov_aspect", "cloud_for", "UP_AXES",
           "tint_mask", "GHOST_RGB", "GT_RGB"]

log = logging.getLogger("vggt_mv.app")


class SceneView:
    """Owns the scene + GUI of one viser server (one per Gradio session, see ``state.py``).

    ``target`` is a ``viser.ViserServer`` (or anything exposing ``.scene``, ``.gui`` and
    ``.initial_camera``). ``on_change`` is called with the option name when a viewer control
    changes (the Gradio page uses it to stay in sync).
    """

    def __init__(self, target: Any, on_change: Callable[[str, Any], None] | None = None,
                 max_points_per_view: int = 30_000) -> None:
        self.target = target
        self.scene = target.scene
        self.gui = target.gui
        self.on_change = on_change
        self.max_points_per_view = max_points_per_view
        self.rec: Reconstruction | None = None
        self.ghost: Reconstruction | None = None
        self.center = np.zeros(3)
        self.scale = 1.0
        self.nodes: dict[str, Any] = {}
        self.options: dict[str, Any] = dict(
            t=0, playing=False, fps=4.0, point_size=0.01, conf_percentile=20.0, color_by="image",
            source="depth", up="-y", views=None, show_gt=True, show_ghost=True, show_cams=True)
        self._lock = threading.RLock()
        self._gui: dict[str, Any] = {}
        self._stop = threading.Event()
        self._player: threading.Thread | None = None
        self.scene.set_up_direction("-y")
        self.root = self.scene.add_frame("/world", show_axes=False, wxyz=_ROOT_WXYZ["-y"])

    # ------------------------------------------------------------------ public API
    @property
    def num_timesteps(self) -> int:
        return 0 if self.rec is None else self.rec.num_timesteps

    def build(self, rec: Reconstruction, ghost: Reconstruction | None = None,
              conf_percentile: float | None = None, keep_frame: bool = False) -> None:
        """Upload ``rec`` (and the aligned previous run ``ghost``) as one node per timestep.

        keep_frame: keep the shown run's centre, scale, point size and initial camera (a re-run of
        the same input with other settings): the scene is not re-centred, so only what the new
        settings changed moves on screen.
        """
        with self._lock:
            keep_frame = keep_frame and self.rec is not None
            self.clear()
            self.rec, self.ghost = rec, ghost
            if conf_percentile is not None:
                self.options["conf_percentile"] = float(conf_percentile)
            if self.options["views"] is None or len(self.options["views"]) != rec.num_views:
                self.options["views"] = [True] * rec.num_views
            if not keep_frame:
                self.center = rec.scene_center().astype(np.float64)
                self.scale = float(rec.scene_scale())
                self.options["point_size"] = 0.004 * self.scale
            self.options["t"] = min(self.options["t"], rec.num_timesteps - 1)
            for t in range(rec.num_timesteps):
                self.nodes[f"t{t}"] = self.scene.add_frame(
                    f"/world/t{t:03d}", show_axes=False, visible=(t == self.options["t"]))
                for v in range(rec.num_views):
                    self.nodes[f"t{t}/v{v}"] = self.scene.add_frame(
                        f"/world/t{t:03d}/v{v}", show_axes=False, visible=self.options["views"][v])
            self._add_points()
            self._add_cameras()
            self._add_gt()
            self._add_ghost()
            self._add_tracks()
            if not keep_frame:
                self._set_initial_camera()
            self._build_gui()

    def clear(self) -> None:
        with self._lock:
            for name in list(self.nodes):
                if "/" not in name:  # removing a timestep frame removes its children
                    try:
                        self.nodes[name].remove()
                    except Exception as exc:  # noqa: BLE001 - already gone on the client
                        log.debug("scene node %s already removed: %s", name, exc)
            self.nodes.clear()
            self.rec = self.ghost = None

    def set_timestep(self, t: int) -> None:
        """Show timestep ``t`` only (visibility flip, nothing re-uploaded)."""
        with self._lock:
            if self.rec is None:
                return
            t = int(t) % self.rec.num_timesteps
            old = self.options["t"]
            if old != t and f"t{old}" in self.nodes:
                self.nodes[f"t{old}"].visible = False
            self.nodes[f"t{t}"].visible = True
            self.options["t"] = t
            self._sync_gui("timestep", t)

    def set_views(self, visible: list[bool]) -> None:
        with self._lock:
            self.options["views"] = [bool(x) for x in visible]
            if self.rec is None:
                return
            for t in range(self.rec.num_timesteps):
                for v, on in enumerate(self.options["views"]):
                    self.nodes[f"t{t}/v{v}"].visible = on

    def set_conf_percentile(self, p: float) -> None:
        """Confidence filter (VGGT percentile over the run): rebuilds point nodes, no model run."""
        with self._lock:
            self.options["conf_percentile"] = float(p)
            self._sync_gui("conf", float(p))
            if self.rec is not None:
                self._add_points()
                self._add_ghost()

    def set_color_by(self, mode: str) -> None:
        if mode not in ("image", "mask"):
            raise ValueError(f"color_by must be 'image' or 'mask', got {mode!r}")
        with self._lock:
            self.options["color_by"] = mode
            self._sync_gui("color_by", mode)
            if self.rec is not None:
                self._add_points()
                self._add_cameras()

    def set_source(self, source: str) -> None:
        with self._lock:
            self.options["source"] = source
            if self.rec is not None:
                self._add_points()
                self._add_ghost()

    def set_point_size(self, size: float) -> None:
        with self._lock:
            self.options["point_size"] = float(size)
            for name, h in self.nodes.items():
                if name.endswith("/points") or name.endswith("ghost/points"):
                    h.point_size = float(size)

    def set_up_axis(self, up: str) -> None:
        up = UP_AXES.get(up, up)
        if up not in _ROOT_WXYZ:
            raise ValueError(f"up axis must be '-y' or '+z', got {up!r}")
        with self._lock:
            self.options["up"] = up
            self.scene.set_up_direction(up)
            self.root.wxyz = _ROOT_WXYZ[up]
            self._sync_gui("up", [k for k, v in UP_AXES.items() if v == up][0])
            self._set_initial_camera()

    def set_flag(self, name: str, on: bool) -> None:
        """``show_gt`` / ``show_ghost`` / ``show_cams`` toggles (visibility only)."""
        with self._lock:
            self.options[name] = bool(on)
            match = {"show_gt": lambda k: "/gt/" in k, "show_ghost": lambda k: "/ghost/" in k,
                     "show_cams": lambda k: k.endswith("/cam")}[name]
            for key, h in self.nodes.items():
                if match(key):
                    h.visible = bool(on)

    def play(self, on: bool = True, fps: float | None = None) -> None:
        with self._lock:
            if fps is not None:
                self.options["fps"] = max(0.2, float(fps))
            self.options["playing"] = bool(on)
            self._sync_gui("play", bool(on))
            if on and (self._player is None or not self._player.is_alive()):
                self._player = threading.Thread(target=self._play_loop, daemon=True, name="viser-play")
                self._player.start()

    def close(self) -> None:
        self._stop.set()
        self.options["playing"] = False

    # ------------------------------------------------------------------ internals
    def _play_loop(self) -> None:
        while not self._stop.is_set() and self.options["playing"]:
            time.sleep(1.0 / max(0.2, self.options["fps"]))
            if self.options["playing"] and self.num_timesteps:
                self.set_timestep(self.options["t"] + 1)

    def _keep(self, rec: Reconstruction) -> np.ndarray:
        p = self.options["conf_percentile"]
        return rec.confidence_mask(self.options["source"], percentile=p if p > 0 else None)

    def _add_points(self) -> None:
        rec = self.rec
        keep = self._keep(rec)
        for t in range(rec.num_timesteps):
            for v in range(rec.num_views):
                pts, col = cloud_for(rec, keep, t, v, self.options["source"], self.options["color_by"],
                                     self.center, self.max_points_per_view)
                self.nodes[f"t{t}/v{v}/points"] = self.scene.add_point_cloud(
                    f"/world/t{t:03d}/v{v}/points", pts, col, point_size=self.options["point_size"],
                    point_shape="rounded")

    def _frustum(self, name: str, ext: np.ndarray, intr: np.ndarray, image: np.ndarray | None,
                 color: tuple[int, int, int], visible: bool = True) -> Any:
        h, w = self.rec.image_size
        fov, aspect = frustum_fov_aspect(intr, h, w)
        wxyz, pos = frustum_pose(ext, self.center)
        return self.scene.add_camera_frustum(
            name, fov=fov, aspect=aspect, scale=0.08 * self.scale, color=color,
            image=None if image is None else _thumb(image), format="jpeg", wxyz=wxyz, position=pos,
            thickness=0.003 * self.scale, visible=visible)

    def _add_cameras(self) -> None:
        rec = self.rec
        for t in range(rec.num_timesteps):
            for v in range(rec.num_views):
                img = rec.images[t, v]
                if self.options["color_by"] == "mask" and rec.dynamic_mask is not None:
                    img = tint_mask(img, rec.dynamic_mask[t, v])
                self.nodes[f"t{t}/v{v}/cam"] = self._frustum(
                    f"/world/t{t:03d}/v{v}/cam", rec.extrinsic[t, v], rec.intrinsic[t, v], img, CAM_RGB,
                    self.options["show_cams"])

    def _add_gt(self) -> None:
        rec = self.rec
        gt = rec.gt or {}
        ext = gt.get("extrinsic")
        if ext is None:
            return
        ext = np.asarray(ext, np.float64).reshape(rec.extrinsic.shape)
        intr = np.asarray(gt.get("intrinsic", rec.intrinsic), np.float64).reshape(rec.intrinsic.shape)
        try:
            sim3 = align_cameras(ext.reshape(-1, 3, 4), rec.extrinsic.reshape(-1, 3, 4))[:3]
        except ValueError:
            return
        ext_in_pred = transform_extrinsic(ext, *sim3)
        for t in range(rec.num_timesteps):
            for v in range(rec.num_views):
                self.nodes[f"t{t}/gt/v{v}"] = self._frustum(
                    f"/world/t{t:03d}/gt/v{v}", ext_in_pred[t, v], intr[t, v], None, GT_RGB,
                    self.options["show_gt"])

    def _add_ghost(self) -> None:
        ghost, rec = self.ghost, self.rec
        if ghost is None:
            return
        keep = self._keep(ghost)
        h, w = ghost.image_size
        for t in range(min(ghost.num_timesteps, rec.num_timesteps)):
            pts, cols = [], []
            for v in range(ghost.num_views):
                p, _ = cloud_for(ghost, keep, t, v, self.options["source"], "image", self.center,
                                 self.max_points_per_view // 2)
                pts.append(p)
            pts = np.concatenate(pts) if pts else np.zeros((0, 3), np.float32)
            self.nodes[f"t{t}/ghost/points"] = self.scene.add_point_cloud(
                f"/world/t{t:03d}/ghost/points", pts, GHOST_RGB, point_size=self.options["point_size"] * 0.8,
                point_shape="circle", visible=self.options["show_ghost"])
            verts, faces = [], []
            for v in range(ghost.num_views):
                vv, ff = _frustum_mesh(ghost.extrinsic[t, v], ghost.intrinsic[t, v], h, w,
                                       0.08 * self.scale, self.center)
                faces.append(ff + len(verts) * 5)
                verts.append(vv)
            self.nodes[f"t{t}/ghost/cams"] = self.scene.add_mesh_simple(
                f"/world/t{t:03d}/ghost/cams", np.concatenate(verts).astype(np.float32),
                np.concatenate(faces).astype(np.uint32), color=GHOST_RGB, opacity=0.35,
                side="double", visible=self.options["show_ghost"])

    def _add_tracks(self) -> None:
        """Point tracks as 3D polylines (timesteps 0..t) and dots at the current positions."""
        rec = self.rec
        if rec is None or getattr(rec, "tracks", None) is None:
            return
        pts = rec.track_points_3d() - self.center  # [T, N, 3], NaN where unseen
        colors = track_colors(pts.shape[1])
        for t in range(rec.num_timesteps):
            seg, col = track_segments(pts, t)
            if len(seg):
                self.nodes[f"t{t}/tracks"] = self.scene.add_line_segments(
                    f"/world/t{t:03d}/tracks", seg, col, thickness=3.0, thickness_units="screen")
            ok = np.isfinite(pts[t]).all(-1)
            if ok.any():
                self.nodes[f"t{t}/track_heads"] = self.scene.add_point_cloud(
                    f"/world/t{t:03d}/track_heads", pts[t][ok].astype(np.float32), colors[ok],
                    point_size=4 * self.options["point_size"], point_shape="circle")

    def _set_initial_camera(self) -> None:
        rec = self.rec
        if rec is None:
            return
        pos, look_at, up = initial_camera(rec.extrinsic[0, 0], self.center, self.scale, self.options["up"])
        try:
            ic = self.target.initial_camera
            ic.position, ic.look_at, ic.up = pos, look_at, up
        except AttributeError:  # a target without initial_camera (tests)
            log.debug("viewer target has no initial_camera; keeping its default view")
        # initial_camera only moves new clients (and "Reset View"): frame the open ones on the new scene too
        get_clients = getattr(self.target, "get_clients", None)
        for client in (get_clients() if get_clients else {}).values():
            try:
                with client.atomic():
                    client.camera.up_direction = up
                    client.camera.position = pos
                    client.camera.look_at = look_at  # after position, which moves look_at along
            except AssertionError:  # the client has not reported its camera yet: it starts at initial_camera
                log.debug("client %s has no camera state yet", client.client_id)

    # ------------------------------------------------------------------ viser GUI
    def _sync_gui(self, key: str, value: Any) -> None:
        h = self._gui.get(key)
        if h is not None and h.value != value:
            self._gui_muted = True
            try:
                h.value = value
            finally:
                self._gui_muted = False

    def _notify(self, key: str, value: Any) -> None:
        if self.on_change is not None:
            try:
                self.on_change(key, value)
            except Exception:  # noqa: BLE001 - never let a UI callback kill the viewer
                log.warning("viewer on_change(%r) failed", key, exc_info=True)

    def _build_gui(self) -> None:
        for key in ("f1", "f2", "f3"):  # removing a folder removes its children
            h = self._gui.get(key)
            if h is not None:
                try:
                    h.remove()
                except Exception as exc:  # noqa: BLE001 - the client already dropped it
                    log.debug("GUI handle already removed: %s", exc)
        self._gui = {}
        self._gui_muted = False
        rec, gui, o = self.rec, self.gui, self.options
        up_label = [k for k, v in UP_AXES.items() if v == o["up"]][0]
        folder = gui.add_folder("Timeline")
        with folder:
            ts = gui.add_slider("timestep", min=0, max=max(rec.num_timesteps - 1, 1), step=1,
                                initial_value=o["t"], disabled=rec.num_timesteps < 2)
            play = gui.add_checkbox("play", initial_value=o["playing"])
            fps = gui.add_slider("fps", min=0.5, max=30.0, step=0.5, initial_value=o["fps"])
        folder2 = gui.add_folder("Display")
        with folder2:
            conf = gui.add_slider("conf percentile", min=0.0, max=95.0, step=1.0,
                                  initial_value=o["conf_percentile"])
            size = gui.add_slider("point size", min=0.0005 * self.scale, max=0.03 * self.scale,
                                  step=0.0005 * self.scale, initial_value=o["point_size"])
            color = gui.add_dropdown("colour by", ("image", "mask"), initial_value=o["color_by"])
            source = gui.add_dropdown("points from", ("depth", "points"), initial_value=o["source"])
            up = gui.add_dropdown("up axis", tuple(UP_AXES), initial_value=up_label)
            cams = gui.add_checkbox("cameras", initial_value=o["show_cams"])
            gtb = gui.add_checkbox("ground-truth cameras", initial_value=o["show_gt"],
                                   disabled=(rec.gt or {}).get("extrinsic") is None)
            ghost = gui.add_checkbox("A/B ghost (previous run)", initial_value=o["show_ghost"],
                                     disabled=self.ghost is None)
        folder3 = gui.add_folder("Views")
        with folder3:
            view_boxes = [gui.add_checkbox(name, initial_value=o["views"][v])
                          for v, name in enumerate(rec.view_names)]
        self._gui = {"f1": folder, "f2": folder2, "f3": folder3, "timestep": ts, "play": play, "fps": fps,
                     "conf": conf, "size": size, "color_by": color, "source": source, "up": up, "cams": cams,
                     "gt": gtb, "ghost": ghost}

        def guarded(fn):
            def cb(event) -> None:
                if not getattr(self, "_gui_muted", False):
                    fn(event.target.value)
            return cb

        ts.on_update(guarded(lambda val: self.set_timestep(int(val))))
        play.on_update(guarded(lambda val: self.play(bool(val))))
        fps.on_update(guarded(lambda val: self.options.__setitem__("fps", float(val))))
        conf.on_update(guarded(lambda val: (self.set_conf_percentile(val), self._notify("conf", val))))
        size.on_update(guarded(self.set_point_size))
        color.on_update(guarded(lambda val: (self.set_color_by(val), self._notify("color_by", val))))
        source.on_update(guarded(self.set_source))
        up.on_update(guarded(self.set_up_axis))
        cams.on_update(guarded(lambda val: self.set_flag("show_cams", val)))
        gtb.on_update(guarded(lambda val: self.set_flag("show_gt", val)))
        ghost.on_update(guarded(lambda val: self.set_flag("show_ghost", val)))
        for v, box in enumerate(view_boxes):
            def on_view(val, v=v) -> None:
                views = list(self.options["views"])
                views[v] = bool(val)
                self.set_views(views)
            box.on_update(guarded(on_view))

