"""Per-tab sessions of the viewer: a viser server, the tab's results and its files.

Per-tab isolation
-----------------
Every Gradio session (browser tab) gets its own ``SessionState`` (held in a ``gr.State``, so
Gradio keys it by session) and **its own viser server** on its own port; the tab's iframe
points at that port. We chose one viser server per session over one server with per-client
scenes because viser client handles are ephemeral and anonymous: a client handle lives for one
websocket connection (an iframe reload is a new client with a new id) and carries nothing that
ties it to a Gradio session, so a shared server would need a side channel to map "this iframe"
to "that tab" and would lose the scene on every reload. With a server per session the mapping
is the URL itself, the scene is server-scoped (a reloaded iframe gets the full scene replayed),
and two tabs cannot touch each other's nodes or GUI. Cost: one port and one asyncio thread per
open tab.

Lifetime: the registry is keyed by Gradio's ``request.session_hash``. When a tab closes (Gradio's
heartbeat notices within ``GRADIO_HEARTBEAT_INTERVAL``) ``demo.unload`` releases its session: the
viser server stops (its port is free), its results are dropped and its folder (exports, videos,
HTML, under the one app temp root) is deleted. At most ``max_sessions`` are kept: the oldest is
evicted, its tab says "session expired" and its next action starts a fresh session. Everything
(all sessions and the temp root) is also removed at process exit, SIGTERM included.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from vggt_mv.inference.reconstruction import Reconstruction

from .compare import Comparison, align_reconstruction, compare

log = logging.getLogger("vggt_mv.app")


class SessionExpired(RuntimeError):
    """This tab's session was evicted (``--max-sessions``) or released: nothing may be written into it."""

    MESSAGE = "**Session expired** — press **Run** again (a fresh session starts)."


class CancelToken(threading.Event):
    """An Event that is also a zero-argument callable returning whether it is set."""

    def __call__(self) -> bool:
        return self.is_set()


class SessionState:
    """Everything one browser tab owns: its viser server + scene, current and previous run."""

    def __init__(self, host: str = "127.0.0.1", viser_port: int = 8081, start_viewer: bool = True,
                 folder: Path | None = None, key: str | None = None) -> None:
        self.id = uuid.uuid4().hex[:10]
        self.key = key or self.id  # Gradio's session_hash of the tab (the registry's key)
        self.created = time.time()
        self.folder = folder  # this session's files (exports, videos, HTML); deleted with the session
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self.evicted = False  # closed by --max-sessions (the tab is told once: told_expired)
        self.told_expired = False
        self.host = host
        self.rec: Reconstruction | None = None
        self.prev: Reconstruction | None = None
        self.comparison: Comparison | None = None
        self.info: dict[str, Any] = {}
        self.params: RunParams | None = None
        self.runs = 0  # finished runs of this tab (the status names the run, so a same-settings re-run shows)
        self.cancel = CancelToken()
        self.export_dir: Path | None = None
        self.lock = threading.Lock()
        self.server: Any = None
        self.view: Any = None
        self.closed = False
        if start_viewer:
            self.start_viewer(viser_port)

    def start_viewer(self, port: int) -> None:
        import viser

        from .scene_view import SceneView

        self.server = viser.ViserServer(host=self.host, port=port, label=f"vggt-mv {self.id}", verbose=False)
        self.server.gui.configure_theme(dark_mode=False, show_logo=False)
        self.view = SceneView(self.server)

    @property
    def viser_port(self) -> int | None:
        return None if self.server is None else int(self.server.get_port())

    def set_result(self, rec: Reconstruction, info: dict[str, Any], ab: bool = True,
                   conf_percentile: float | None = None, keep_frame: bool = False) -> None:
        """Install a new run; the previous one becomes the (Sim(3)-aligned) ghost in A/B mode.
        ``keep_frame``: the viewer keeps the previous run's frame (``SceneView.build``).
        Raises ``SessionExpired`` if the session was closed (its viser server is stopped)."""
        with self.lock:
            if self.closed:
                raise SessionExpired(f"session {self.id} was closed")
            self.prev, self.rec, self.info = self.rec, rec, info
            self.runs += 1
            self.comparison = None
            ghost = None
            if ab and self.prev is not None:
                self.comparison = compare(self.prev, rec)
                ghost = align_reconstruction(self.prev, self.comparison.sim3)
            self.export_dir = None
            if self.view is not None:
                self.view.build(rec, ghost=ghost, conf_percentile=conf_percentile, keep_frame=keep_frame)

    def new_folder(self, kind: str) -> Path:
        """A fresh folder for one export under this session's folder (a temp dir without one)."""
        if self.closed:
            raise SessionExpired(f"session {self.id} was closed")
        if self.folder is None:
            return Path(tempfile.mkdtemp(prefix=f"vggt_mv_{self.id}_{kind}_"))
        return Path(tempfile.mkdtemp(prefix=f"{kind}_", dir=self.folder))

    def close(self) -> None:
        """Stop the viser server (frees the port), drop the results, delete the session's folder."""
        with self.lock:  # waits for a set_result in progress; later ones see `closed`
            if self.closed:
                return
            self.closed = True
        self.cancel.set()
        if self.view is not None:
            try:
                self.view.close()
            except Exception as exc:  # noqa: BLE001 - closing a session must not fail the page
                log.warning("closing the scene of session %s failed: %s", self.id, exc)
        if self.server is not None:
            try:
                self.server.stop()
            except Exception as exc:  # noqa: BLE001
                log.warning("stopping viser server of session %s failed: %s", self.id, exc)
        self.rec = self.prev = self.comparison = self.view = None
        self.export_dir = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class SessionRegistry:
    """Creates / tracks / stops per-session viewers, keyed by Gradio's ``session_hash``; evicts the
    oldest beyond ``max_sessions``. Session folders live under one temp root (``self.root``),
    created here and removed by ``close_all``."""

    def __init__(self, host: str = "127.0.0.1", viser_port: int = 8081, max_sessions: int = 16) -> None:
        self.host, self.viser_port, self.max_sessions = host, viser_port, max(1, int(max_sessions))
        self.sessions: dict[str, SessionState] = {}
        self.root = Path(tempfile.mkdtemp(prefix="vggt_mv_app_"))
        self.sessions_dir = self.root / "sessions"  # one folder per session (exports, videos, HTML)
        self._lock = threading.Lock()

    def new(self, key: str | None = None) -> SessionState:
        """A fresh session for the tab ``key`` (its previous one, if any, is closed first)."""
        with self._lock:
            old = self.sessions.pop(key, None) if key else None
            evicted = []
            while len(self.sessions) >= self.max_sessions:
                oldest = min(self.sessions.values(), key=lambda s: s.created)
                log.info("evicting session %s (max %d)", oldest.id, self.max_sessions)
                oldest.evicted = True
                evicted.append(self.sessions.pop(oldest.key))
            sess = SessionState(self.host, self.viser_port, folder=None, key=key)
            sess.folder = self.sessions_dir / sess.id
            sess.folder.mkdir(parents=True, exist_ok=True)
            self.sessions[sess.key] = sess
        for s in ([old] if old is not None else []) + evicted:
            s.close()
        return sess

    def get(self, key: str | None) -> SessionState | None:
        with self._lock:
            return self.sessions.get(key) if key else None

    def release(self, key: str | None) -> None:
        """The tab ``key`` closed: stop and delete its session (no-op if it has none)."""
        with self._lock:
            sess = self.sessions.pop(key, None) if key else None
        if sess is not None:
            log.info("tab closed: releasing session %s (port %s)", sess.id, sess.viser_port)
            sess.close()

    def drop(self, sess: SessionState | None) -> None:
        if sess is None:
            return
        with self._lock:
            if self.sessions.get(sess.key) is sess:
                self.sessions.pop(sess.key)
        sess.close()

    def close_all(self) -> None:
        """Close every session and remove the temp root (process exit)."""
        with self._lock:
            sessions, self.sessions = list(self.sessions.values()), {}
        for s in sessions:
            s.close()
        shutil.rmtree(self.root, ignore_errors=True)
