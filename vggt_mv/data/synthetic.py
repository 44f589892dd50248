"""Procedural multi-view, multi-timestep scenes rendered by a small vectorised numpy ray caster.

A textured room (floor + four walls, open to the sky), a table and a few static boxes, plus
moving objects (spheres and yawing boxes on smooth trajectories), seen by ``V`` fixed cameras
on an arc looking at the room centre. Everything random (layout, textures, rig, motion) comes
from ``seed``, so a training loop can draw varied scenes on the fly.

Conventions: world y is up, floor at y = 0. Cameras are OpenCV (x right, y down, z forward);
extrinsics are world-to-camera ``[R|t]``; integer pixel coordinates are pixel centres
(``cx = (W-1)/2``); depth is z-depth along the camera axis, 0 where the ray hits nothing.
The static part of each view is ray cast once; per timestep only the moving objects are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

F32 = np.float32
_EPS = 1e-4


@dataclass
class SyntheticSceneConfig:
    """Knobs of :func:`render_scene` (sizes in pixels, angles in degrees, lengths in metres)."""

    T: int = 10
    V: int = 3
    H: int = 126
    W: int = 168
    fov_deg: float = 60.0          # horizontal field of view
    n_moving: int = 2              # moving objects: sphere, box, sphere, ...
    n_static_boxes: int = 2        # besides the table
    arc_deg: float | None = None   # angle spanned by the camera arc; None: random in [40, 80]
    fps: float = 10.0              # motion speed is per second, so T does not change it
    ambient: float = 0.35


@dataclass
class SyntheticScene:
    """Rendered scene; arrays are time-major ``[T,V,...]``."""

    images: np.ndarray        # [T,V,H,W,3] uint8 RGB
    depth: np.ndarray         # [T,V,H,W] float32 z-depth, 0 = no hit
    intrinsic: np.ndarray     # [T,V,3,3] float32
    extrinsic: np.ndarray     # [T,V,3,4] float32 world-to-camera (OpenCV)
    dynamic_mask: np.ndarray  # [T,V,H,W] bool, pixel shows a moving object
    config: SyntheticSceneConfig = field(default_factory=SyntheticSceneConfig)
    seed: int = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(T, V, H, W)``."""
        return self.depth.shape  # type: ignore[return-value]

    def to_scene(self, resolution: int | None = None, mode: str = "crop", with_masks: bool = True):
        """Preprocessed :class:`~vggt_mv.data.scene.Scene` (GT included; dynamic mask also as
        external mask when ``with_masks``), without a disk round trip."""
        from .scene import scene_from_arrays

        return scene_from_arrays(self.images, depth=self.depth, intrinsic=self.intrinsic,
                                 extrinsic=self.extrinsic, dynamic_mask=self.dynamic_mask,
                                 ext_masks=self.dynamic_mask if with_masks else None,
                                 resolution=resolution, mode=mode)


# ----------------------------------------------------------------------------- textures

def _lattice(L: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth value noise: bilinear (smoothstep) lookup of a wrapping lattice ``L [n,n]``."""
    n = L.shape[0]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    i0, j0 = x0.astype(np.int64) % n, y0.astype(np.int64) % n
    i1, j1 = (i0 + 1) % n, (j0 + 1) % n
    top = L[j0, i0] * (1 - fx) + L[j0, i1] * fx
    bot = L[j1, i0] * (1 - fx) + L[j1, i1] * fx
    return top * (1 - fy) + bot * fy


@dataclass
class _Texture:
    c0: np.ndarray            # [3] base colour
    c1: np.ndarray            # [3] second colour
    checker: float            # checker cells per unit of uv (0: colours blended by noise)
    lattice: np.ndarray       # [n,n] noise lattice in [0,1]
    freq: float               # noise cells per unit of uv
    amp: float                # noise modulation strength

    def albedo(self, uv: np.ndarray) -> np.ndarray:
        """uv ``[M,2]`` -> albedo ``[M,3]`` in [0,1]."""
        u, v = uv[:, 0], uv[:, 1]
        if self.checker > 0:
            mix = ((np.floor(u * self.checker) + np.floor(v * self.checker)) % 2).astype(F32)
        else:
            mix = _lattice(self.lattice, u * self.freq * 0.5 + 7.3, v * self.freq * 0.5 + 1.9)
        base = self.c0 + (self.c1 - self.c0) * mix[:, None]
        n = 0.6 * _lattice(self.lattice, u * self.freq, v * self.freq) \
            + 0.4 * _lattice(self.lattice, u * self.freq * 3.7 + 11.0, v * self.freq * 3.7 + 5.0)
        return (base * (1 - self.amp + self.amp * n)[:, None]).astype(F32)


def _rand_texture(rng: np.random.Generator, *, checker: float, sat: float, amp: float,
                  contrast: float = 0.5) -> _Texture:
    hue = rng.uniform(0, 1)
    c0 = _hsv(hue, sat, rng.uniform(0.65, 0.95))
    c1 = c0 * (1 - contrast) if checker > 0 else _hsv((hue + rng.uniform(0.05, 0.2)) % 1, sat, rng.uniform(0.5, 0.9))
    return _Texture(c0, c1.astype(F32), checker, rng.uniform(0, 1, (16, 16)).astype(F32),
                    rng.uniform(2.0, 5.0), amp)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return (v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)).astype(F32)


# ----------------------------------------------------------------------------- primitives

def _rot_y(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], F32)


def _safe(d: np.ndarray) -> np.ndarray:
    return np.where(np.abs(d) < 1e-9, F32(1e-9), d).astype(F32)


@dataclass
class _Room:
    """Inside of the box [-rx,rx] x [0,h] x [-rz,rz] without a ceiling; textures: floor, 4 walls."""

    rx: float
    rz: float
    h: float
    tex: list[_Texture]

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        lo = np.array([-self.rx, 0.0, -self.rz], F32)
        hi = np.array([self.rx, self.h, self.rz], F32)
        ds = _safe(d)
        t = [(np.where(d[:, a] > 0, hi[a], lo[a]) - o[a]) / ds[:, a] for a in range(3)]
        tt = np.minimum(np.minimum(t[0], t[1]), t[2])             # exit distance
        ceiling = (t[1] <= tt) & (d[:, 1] > 0)
        return np.where(ceiling | (tt <= _EPS), np.inf, tt).astype(F32)

    def surface(self, p: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        dist = np.stack([np.abs(p[:, 1]), self.rx - np.abs(p[:, 0]), self.rz - np.abs(p[:, 2])], 1)
        face = np.argmin(dist, axis=1)
        n = np.zeros_like(p)
        alb = np.zeros_like(p)
        sel = face == 0
        n[sel, 1] = 1.0
        alb[sel] = self.tex[0].albedo(p[sel][:, [0, 2]])
        for k, (ax, other) in enumerate(((0, 2), (2, 0))):
            for sgn in (-1.0, 1.0):
                sel = (face == ax // 2 + 1) & (np.sign(p[:, ax]) == sgn)
                n[sel, ax] = -sgn
                alb[sel] = self.tex[1 + 2 * k + int(sgn > 0)].albedo(p[sel][:, [other, 1]])
        return n, alb


@dataclass
class _Box:
    """Box with half extents ``half`` rotated by ``yaw`` about +y; pose may move over time."""

    half: np.ndarray
    tex: _Texture
    center: np.ndarray = field(default_factory=lambda: np.zeros(3, F32))
    yaw: float = 0.0

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        R = _rot_y(self.yaw)
        ol = (o - self.center) @ R                                  # world -> local: R^T x
        inv = 1.0 / _safe(d @ R)
        tmin = np.full(d.shape[0], -np.inf, F32)
        tmax = np.full(d.shape[0], np.inf, F32)
        for a in range(3):                                          # slabs, column-wise (fast)
            t1 = (-self.half[a] - ol[a]) * inv[:, a]
            t2 = (self.half[a] - ol[a]) * inv[:, a]
            np.maximum(tmin, np.minimum(t1, t2), out=tmin)
            np.minimum(tmax, np.maximum(t1, t2), out=tmax)
        ok = (tmax >= tmin) & (tmin > _EPS)
        return np.where(ok, tmin, np.inf).astype(F32)

    def bound_radius(self) -> float:
        return float(np.linalg.norm(self.half))

    def surface(self, p: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        R = _rot_y(self.yaw)
        pl = (p - self.center) @ R
        ratio = np.abs(pl) / self.half
        face = np.argmax(ratio, axis=1)
        nl = np.zeros_like(pl)
        nl[np.arange(len(pl)), face] = np.sign(pl[np.arange(len(pl)), face])
        uv_idx = np.array([[1, 2], [0, 2], [0, 1]])[face]
        uv = np.take_along_axis(pl, uv_idx, 1) + face[:, None] * 3.1
        return (nl @ R.T).astype(F32), self.tex.albedo(uv)


@dataclass
class _Sphere:
    radius: float
    tex: _Texture
    center: np.ndarray = field(default_factory=lambda: np.zeros(3, F32))
    yaw: float = 0.0

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = (o - self.center).astype(F32)
        a = np.einsum("ij,ij->i", d, d)
        b = d @ oc
        c = float(oc @ oc) - self.radius ** 2
        disc = b * b - a * c
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        return np.where((disc >= 0) & (t > _EPS), t, np.inf).astype(F32)

    def bound_radius(self) -> float:
        return float(self.radius)

    def surface(self, p: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        n = ((p - self.center) / self.radius).astype(F32)
        nl = n @ _rot_y(self.yaw)
        lon = np.arctan2(nl[:, 2], nl[:, 0])
        lat = np.arcsin(np.clip(nl[:, 1], -1, 1))
        uv = np.stack([lon / np.pi * 2.0, lat / np.pi * 3.0], 1).astype(F32)
        return n, self.tex.albedo(uv)


# ----------------------------------------------------------------------------- scene layout

@dataclass
class _Mover:
    prim: _Box | _Sphere
    anchor: np.ndarray        # [3] centre of the trajectory
    axis_fwd: np.ndarray      # [3] unit vector of the main (depth-wise) motion
    axis_lat: np.ndarray      # [3] unit vector of the lateral motion
    amp: tuple[float, float]  # forward / lateral amplitude
    freq: tuple[float, float]  # Hz
    phase: tuple[float, float]
    spin: float               # rad/s about +y
    hop: float                # bounce height (spheres)

    def set_time(self, sec: float) -> None:
        w = 2 * np.pi * sec
        c = self.anchor + self.axis_fwd * self.amp[0] * np.sin(w * self.freq[0] + self.phase[0]) \
            + self.axis_lat * self.amp[1] * np.sin(w * self.freq[1] + self.phase[1])
        c = c.astype(F32)
        c[1] += self.hop * abs(np.sin(w * self.freq[0] * 1.5 + self.phase[1]))
        self.prim.center = c
        self.prim.yaw = self.spin * sec


def _look_at(C: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-to-camera ``[3,4]`` (OpenCV axes) for a camera at ``C`` looking at ``target``."""
    z = target - C
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 1.0, 0.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return np.concatenate([R, -R @ C[:, None]], 1).astype(F32)


def _layout(cfg: SyntheticSceneConfig, rng: np.random.Generator):
    """Random room, static objects, movers and camera rig."""
    rx, rz, h = rng.uniform(3.2, 4.2), rng.uniform(3.2, 4.2), rng.uniform(1.9, 2.8)
    room = _Room(rx, rz, h, [_rand_texture(rng, checker=rng.choice([1.0, 2.0]), sat=0.35, amp=0.35)]
                 + [_rand_texture(rng, checker=0.0, sat=0.3, amp=0.5) for _ in range(4)])
    phi0 = rng.uniform(0, 2 * np.pi)
    arc = np.deg2rad(cfg.arc_deg if cfg.arc_deg is not None else rng.uniform(40, 80))
    r_cam = 0.8 * min(rx, rz)
    target = np.array([rng.uniform(-0.2, 0.2), rng.uniform(0.3, 0.7), rng.uniform(-0.2, 0.2)])
    angles = phi0 + (np.linspace(-arc / 2, arc / 2, cfg.V) if cfg.V > 1 else np.zeros(1))
    extr = []
    for a in angles:
        C = np.array([r_cam * np.cos(a), rng.uniform(1.2, 1.8), r_cam * np.sin(a)])
        extr.append(_look_at(C, target))

    statics: list = []
    far = phi0 + np.pi

    def place(rad_lo: float) -> np.ndarray:
        a = far + rng.uniform(-0.7, 0.7)
        r = rng.uniform(rad_lo, min(rx, rz) - 0.8)
        return np.array([r * np.cos(a), 0.0, r * np.sin(a)], F32)

    # table: top + four legs
    tc, th = place(1.9), rng.uniform(0.6, 0.8)
    half = np.array([rng.uniform(0.35, 0.6), 0.03, rng.uniform(0.3, 0.45)], F32)
    yaw = rng.uniform(0, np.pi)
    wood = _rand_texture(rng, checker=0.0, sat=0.5, amp=0.6)
    statics.append(_Box(half, wood, tc + np.array([0, th, 0], F32), yaw))
    R = _rot_y(yaw)
    for sx in (-1, 1):
        for sz in (-1, 1):
            off = R @ np.array([sx * (half[0] - 0.05), 0, sz * (half[2] - 0.05)], F32)
            statics.append(_Box(np.array([0.03, th / 2, 0.03], F32), wood,
                                tc + off + np.array([0, th / 2, 0], F32), yaw))
    for _ in range(cfg.n_static_boxes):
        hb = rng.uniform(0.15, 0.4, 3).astype(F32)
        statics.append(_Box(hb, _rand_texture(rng, checker=rng.uniform(4, 8), sat=0.35, amp=0.3, contrast=0.35),
                            place(1.6) + np.array([0, hb[1], 0], F32), rng.uniform(0, np.pi)))

    fwd = np.array([np.cos(phi0), 0, np.sin(phi0)])
    lat = np.array([-np.sin(phi0), 0, np.cos(phi0)])
    movers = []
    for k in range(cfg.n_moving):
        side = (k % 2) * 2 - 1 if cfg.n_moving > 1 else 0
        anchor = lat * side * 0.7 + fwd * rng.uniform(-0.3, 0.3)
        tex = _rand_texture(rng, checker=rng.uniform(3, 6), sat=0.9, amp=0.2, contrast=0.6)
        if k % 2 == 0:
            r = rng.uniform(0.25, 0.35)
            prim: _Box | _Sphere = _Sphere(r, tex)
            anchor[1], hop = r, rng.uniform(0.1, 0.4)
        else:
            hb = rng.uniform(0.15, 0.3, 3).astype(F32)
            prim = _Box(hb, tex)
            anchor[1], hop = hb[1], 0.0
        movers.append(_Mover(prim, anchor.astype(F32), fwd.astype(F32), lat.astype(F32),
                             (rng.uniform(0.4, 0.6), rng.uniform(0.1, 0.2)),
                             (rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.5)),
                             (rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)),
                             rng.uniform(-2.0, 2.0), hop))
    light = np.array([rng.choice([-1, 1]) * rng.uniform(0.4, 0.9), 1.0, rng.choice([-1, 1]) * rng.uniform(0.4, 0.9)])
    light /= np.linalg.norm(light)
    return room, statics, movers, np.stack(extr), light.astype(F32)


# ----------------------------------------------------------------------------- rendering

def _cast(prims: list, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit over ``prims``: (t [N] with inf = miss, primitive index [N])."""
    ts = np.stack([p.hit(o, d) for p in prims])
    idx = np.argmin(ts, axis=0)
    return ts[idx, np.arange(d.shape[0])], idx


def _shade(prims: list, idx: np.ndarray, t: np.ndarray, o: np.ndarray, d: np.ndarray,
           light: np.ndarray, ambient: float) -> np.ndarray:
    """Lambert colour ``[N,3]`` of hit rays (``t`` finite)."""
    col = np.zeros((len(t), 3), F32)
    p = o + d * t[:, None]
    for k, prim in enumerate(prims):
        sel = np.flatnonzero(idx == k)
        if sel.size == 0:
            continue
        n, alb = prim.surface(p[sel], 0.0)
        lam = np.clip(n @ light, 0, 1) + 0.25 * np.clip(n @ (-light * np.array([1, -0.2, 1], F32)), 0, 1)
        col[sel] = alb * (ambient + (1 - ambient) * np.clip(lam, 0, 1))[:, None]
    return col


def _screen_rect(c: np.ndarray, r: float, R: np.ndarray, tvec: np.ndarray, K: np.ndarray,
                 H: int, W: int) -> np.ndarray:
    """Flat pixel indices of a conservative screen box around the sphere (c, r); all if behind."""
    corners = c + r * np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
    pc = corners @ R.T + tvec                                       # cube containing the sphere
    if pc[:, 2].min() <= 1e-3:
        return np.arange(H * W)
    uv = pc[:, :2] / pc[:, 2:] * K[[0, 1], [0, 1]] + K[[0, 1], [2, 2]]
    u0, v0 = np.clip(np.floor(uv.min(0)) - 1, 0, [W, H]).astype(int)
    u1, v1 = np.clip(np.ceil(uv.max(0)) + 2, 0, [W, H]).astype(int)
    if u1 <= u0 or v1 <= v0:
        return np.zeros(0, np.int64)
    return (np.arange(v0, v1)[:, None] * W + np.arange(u0, u1)[None, :]).reshape(-1)


def _sky(d: np.ndarray) -> np.ndarray:
    up = np.clip(d[:, 1] / np.linalg.norm(d, axis=1), 0, 1)[:, None]
    return (np.array([0.75, 0.85, 0.95], F32) * (1 - up) + np.array([0.35, 0.55, 0.9], F32) * up).astype(F32)


def render_scene(cfg: SyntheticSceneConfig | None = None, seed: int = 0) -> SyntheticScene:
    """Render a random dynamic scene; deterministic for a given ``(cfg, seed)``.

    Returns images ``[T,V,H,W,3]`` uint8, depth/dynamic_mask ``[T,V,H,W]``,
    intrinsic ``[T,V,3,3]``, extrinsic ``[T,V,3,4]`` (world-to-camera, OpenCV).
    """
    cfg = cfg or SyntheticSceneConfig()
    rng = np.random.default_rng(seed)
    room, statics, movers, extr, light = _layout(cfg, rng)
    T, V, H, W = cfg.T, cfg.V, cfg.H, cfg.W
    f = (W / 2) / np.tan(np.deg2rad(cfg.fov_deg) / 2)
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]], F32)
    vv, uu = np.meshgrid(np.arange(H, dtype=F32), np.arange(W, dtype=F32), indexing="ij")
    d_cam = np.stack([(uu - K[0, 2]) / f, (vv - K[1, 2]) / f, np.ones_like(uu)], -1).reshape(-1, 3)

    images = np.zeros((T, V, H * W, 3), np.uint8)
    depth = np.zeros((T, V, H * W), F32)
    dyn = np.zeros((T, V, H * W), bool)
    static_prims = [room] + statics
    for v in range(V):
        R, tvec = extr[v, :, :3], extr[v, :, 3]
        o = (-R.T @ tvec).astype(F32)
        d = (d_cam @ R).astype(F32)                                 # R^T d_cam, z-cam component 1
        t_s, idx_s = _cast(static_prims, o, d)
        hit = np.isfinite(t_s)
        col_s = _sky(d)
        col_s[hit] = _shade(static_prims, idx_s[hit], t_s[hit], o, d[hit], light, cfg.ambient)
        for ti in range(T):
            col, t_all = col_s.copy(), t_s.copy()
            if movers:
                for m in movers:
                    m.set_time(ti / cfg.fps)
                prims = [m.prim for m in movers]
                t_m = np.full(H * W, np.inf, F32)
                idx_m = np.zeros(H * W, np.int64)
                for k, prim in enumerate(prims):                    # cast only inside its bbox
                    sel = _screen_rect(prim.center, prim.bound_radius(), R, tvec, K, H, W)
                    if sel.size == 0:
                        continue
                    tk = prim.hit(o, d[sel])
                    closer = tk < t_m[sel]
                    t_m[sel[closer]], idx_m[sel[closer]] = tk[closer], k
                front = t_m < t_s
                col[front] = _shade(prims, idx_m[front], t_m[front], o, d[front], light, cfg.ambient)
                t_all[front] = t_m[front]
                dyn[ti, v] = front
            images[ti, v] = np.clip(col * 255 + 0.5, 0, 255).astype(np.uint8)
            depth[ti, v] = np.where(np.isfinite(t_all), t_all, 0)
    return SyntheticScene(
        images=images.reshape(T, V, H, W, 3), depth=depth.reshape(T, V, H, W),
        intrinsic=np.broadcast_to(K, (T, V, 3, 3)).copy(),
        extrinsic=np.broadcast_to(extr, (T, V, 3, 4)).copy(),
        dynamic_mask=dyn.reshape(T, V, H, W), config=cfg, seed=seed)


def write_scene(scene: SyntheticScene, root: str | Path) -> Path:
    """Write ``scene`` in the time-major dump layout (see :mod:`vggt_mv.data.io`); returns root."""
    from .io import write_dump

    return write_dump(root, scene.images, depth=scene.depth, intrinsic=scene.intrinsic,
                      extrinsic=scene.extrinsic, dynamic_mask=scene.dynamic_mask)
