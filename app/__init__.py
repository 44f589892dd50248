"""vggt-mv interactive viewer (installed as ``vggt_mv_app``; the repo folder is ``app/``).

``vggt-mv-app`` launches the Gradio page (``main.py``); ``show(rec)`` opens the same viser scene
from Python / Jupyter without Gradio.
"""

from __future__ import annotations

from typing import Any

__all__ = ["show"]


def show(rec: Any, port: int = 8080, host: str = "127.0.0.1", ghost: Any = None) -> Any:
    """Serve ``rec`` (a ``Reconstruction``) in a new viser server; returns the ``SceneView``.

    ``view.target.get_port()`` gives the port; in Jupyter, ``view.target.scene`` / ``.gui`` are
    the usual viser APIs and ``view.close(); view.target.stop()`` shuts it down.
    """
    import viser

    from .scene_view import SceneView

    server = viser.ViserServer(host=host, port=port, verbose=False)
    view = SceneView(server)
    view.build(rec, ghost=ghost)
    return view
