"""The Gradio page: inputs, λ / sparse controls, run + cancel, status, embedded viser scene,
per-view galleries, metrics, A/B deltas and exports. Per-tab state lives in ``state.py``."""

from __future__ import annotations

import logging
import shutil
import traceback
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from vggt_mv.weights.hub import describe_weights, weights_choices

from .state import (
    EPIPOLAR, LAYOUTS, PRESETS, SAMPLE_DIR, STRATEGIES, Cancelled, RunParams, SessionRegistry,
    attention_diagnostics, estimate_params, resolution_choices,
    MemoryRefusal, SessionExpired, SessionState, UserError, demo_weights, kpt_bound, lambda_bound, parse_views,
    run_reconstruction,
)

log = logging.getLogger("vggt_mv.app")
N_PARAMS = 24  # run inputs that make a RunParams (after the session state)
KEYPOINT_SOURCES = ("none", "sift")  # or a server-side SegAnyMo output / keypoint folder (custom value)

CSS = """
#title h1 {margin-bottom: 0; font-size: 1.6em;}
#title p {margin-top: 2px; color: var(--body-text-color-subdued);}
#banner {border-radius: 8px; padding: 6px 12px; background: #fff4e0; border: 1px solid #f0b85a;}
#banner p {margin: 0; font-weight: 600; color: #3d2b00;}  /* dark text on its light background, in either theme */
#status {min-height: 2.2em; padding: 4px 10px; border-radius: 8px; background: var(--block-background-fill);}
#viser-box iframe {width: 100%; height: 620px; border: 1px solid var(--border-color-primary); border-radius: 10px;
                   background: #f4f5f7;}
#viser-box .hint {font-size: 0.85em; color: var(--body-text-color-subdued); margin: 2px 4px;}
.lam input[type=number] {max-width: 5em;}
"""

VISER_HTML = """
<div id="viser-box">
  <iframe id="viser-frame" title="viser 3D scene" allow="fullscreen"></iframe>
  <div class="hint">3D scene (viser). Drag to orbit, right-drag to pan, scroll to zoom; timeline, point size,
  colouring, views, up-axis and the A/B ghost are in the panel at the top right.
  <a id="viser-link" href="#" target="_blank" rel="noopener">Open in a new tab</a></div>
</div>
"""

# Builds the iframe URL from the browser's own host name (works through SSH tunnels / LAN). The
# value is "PORT SESSION": a fresh session may reuse a freed port, and its id in the URL makes the
# iframe load anew instead of keeping the stopped server's page. The page's own query parameters
# go to the viewer too, so viser's URL options work from the app's address (e.g. ?darkMode,
# ?showStats, ?fixedDpr=1 for a fixed render resolution instead of the adaptive one).
IFRAME_JS = """
(value) => {
  if (!value) { return value; }
  const [port, sid] = String(value).trim().split(/\\s+/);
  const params = new URLSearchParams(window.location.search);
  if (sid) { params.set('session', sid); } else { params.delete('session'); }
  const query = params.toString();
  const url = window.location.protocol + '//' + window.location.hostname + ':' + port + '/'
    + (query ? '?' + query : '');
  const frame = document.getElementById('viser-frame');
  if (frame && frame.getAttribute('src') !== url) { frame.setAttribute('src', url); }
  const link = document.getElementById('viser-link');
  if (link) { link.href = url; }
  return value;
}
"""


def _initial_banner(preset: str, checkpoint: str | None, pi3: str | None) -> str:
    if checkpoint or pi3:
        names = ", ".join(Path(p).name for p in (checkpoint, pi3) if p)
        return f"weights: {names} (loaded on first run)"
    demo = demo_weights(preset)
    if demo is not None:
        return (f"bundled demo weights: {demo.name} ({preset} preset), trained on synthetic scenes; "
                "use the real checkpoints (--checkpoint / --pi3) for real data")
    return f"random {preset} weights: geometry is not meaningful"


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """``[H,W]`` depth -> turbo-coloured ``[H,W,3] uint8`` (2-98 percentile stretch, invalid black)."""
    import cv2

    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return np.zeros(depth.shape + (3,), np.uint8)
    lo, hi = np.percentile(depth[valid], [2, 98])
    norm = np.nan_to_num(np.clip((depth - lo) / max(hi - lo, 1e-8), 0, 1), nan=0.0)
    rgb = cv2.applyColorMap((255 * (1 - norm)).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    rgb = np.where(valid[..., None], rgb, 0)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def gallery_items(rec: Any, t: int) -> tuple[list, list, list]:
    """Per-view ``(image, caption)`` lists for timestep ``t``: images (with the point tracks drawn,
    if any: trail over 0..t, dot = current position), depth, mask overlay."""
    from vggt_mv.export.viser_scene import tint_mask

    from .tracks import draw_keypoints, draw_tracks

    t = int(np.clip(t, 0, rec.num_timesteps - 1))
    imgs, depths, masks = [], [], []
    tracks = getattr(rec, "tracks", None)
    keypoints = getattr(rec, "keypoints", None)  # [T,V,H,W] of the run (app only, not saved)
    for v, name in enumerate(rec.view_names):
        img, caption = rec.images[t, v], f"{name} · t={t}"
        if keypoints is not None:
            img = draw_keypoints(img, keypoints[t, v])
            caption += f" · {int((keypoints[t, v] >= 0.5).sum())} keypoints"
        if tracks is not None:
            n_vis = int((rec.track_vis[t, v] >= 0.5).sum())
            img = draw_tracks(img, tracks[:t + 1, v], rec.track_vis[:t + 1, v])
            caption += f" · {n_vis}/{tracks.shape[2]} tracks visible"
        imgs.append((img, caption))
        depths.append((colorize_depth(rec.depth[t, v]), f"{name} depth"))
        if rec.dynamic_mask is not None:
            masks.append((tint_mask(rec.images[t, v], rec.dynamic_mask[t, v]),
                          f"{name} dynamic {100 * float((rec.dynamic_mask[t, v] >= 0.5).mean()):.0f}%"))
    return imgs, depths, masks


def share_html(sess: Any, color_by: str, conf_percentile: float | None,
               out_dir: Path | None = None) -> tuple[str | None, str]:
    """The "Offline HTML" export of a session's result with the viewer's current look (colouring,
    confidence filter, up axis, point size, fps): ``(path or None, message)``."""
    if sess is None or sess.rec is None:
        return None, "Run a reconstruction first."
    from vggt_mv.export.html import export_html

    opts = dict(color_by=color_by, conf_percentile=float(conf_percentile) if conf_percentile else None)
    view = getattr(sess, "view", None)
    if view is not None and view.rec is sess.rec:
        opts.update(up=view.options["up"], fps=float(view.options["fps"]),
                    point_size=float(view.options["point_size"]) / max(view.scale, 1e-12))
    try:
        out_dir = out_dir or sess.new_folder("html")
        res = export_html(sess.rec, out_dir / "vggt_mv_scene.html", **opts)
    except SessionExpired:
        return None, SessionExpired.MESSAGE
    except ValueError as exc:
        return None, f"**Export failed:** {exc}"
    except Exception as exc:  # noqa: BLE001 - keep the app alive, show the error
        log.error("offline HTML export failed:\n%s", traceback.format_exc())
        return None, f"**Export failed:** `{type(exc).__name__}: {exc}`"
    sub = ("" if res.plan.point_factor >= 1 else
           f", points x{res.plan.point_factor:.2f} per timestep to fit {res.plan.budget_bytes / 1e6:.0f} MB")
    return str(res.path), (f"Offline HTML `{res.path.name}` ({res.bytes / 1e6:.1f} MB{sub}): opens from disk in "
                           f"any browser, no server, and plays the timeline. Colouring ({opts['color_by']}), "
                           "confidence filter and point size are fixed in the file.")


def metrics_rows(rec: Any) -> list[list[str]]:
    if not rec.gt:
        return []
    from vggt_mv.eval import evaluate, flatten_metrics

    flat = flatten_metrics(evaluate(rec))
    return [[k, f"{v:.4g}" if isinstance(v, float) else str(v)] for k, v in flat.items()]


EXPIRED_POLL_S = 2.0  # how often a tab asks whether its session was evicted


def build_ui(registry: SessionRegistry, defaults: RunParams | None = None, autorun: bool = False):
    d = defaults or RunParams()
    bound = lambda_bound(d.preset) or 1.0
    theme = gr.themes.Soft(primary_hue="indigo", neutral_hue="slate")

    with gr.Blocks(title="vggt-mv viewer") as demo:
        state = gr.State(None, delete_callback=registry.drop)
        port_box = gr.Textbox(visible="hidden", elem_id="viser-port")
        gr.Markdown("# vggt-mv viewer\nMulti-view, multi-timestep 4D reconstruction · dual-stream mask bias "
                    "(λ_pose / λ_geo) · sparse global attention", elem_id="title")
        banner = gr.Markdown(_initial_banner(d.preset, d.checkpoint, d.pi3), elem_id="banner")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=340):
                views = gr.Textbox("\n".join(d.views), label="Scene (server-side paths)", lines=3,
                                   info="one camera folder / video per line, or one scene root",
                                   elem_id="views")
                with gr.Row():
                    preset = gr.Dropdown(list(PRESETS), value=d.preset, label="preset", elem_id="preset")
                    device = gr.Dropdown(["cpu", "cuda", "auto"], value=d.device, label="device",
                                         allow_custom_value=True)
                with gr.Row():
                    resolution = gr.Dropdown(resolution_choices(d.preset), value=d.resolution,
                                             label="resolution (width)", elem_id="resolution")
                    window = gr.Number(d.window, label="window", precision=0, minimum=1)
                    overlap = gr.Number(d.overlap, label="overlap", precision=0, minimum=0)
                with gr.Accordion("weights", open=bool(d.checkpoint or d.pi3 or d.config)):
                    checkpoint = gr.Dropdown(weights_choices("checkpoint"), value=d.checkpoint or "",
                                             allow_custom_value=True, elem_id="checkpoint",
                                             label="checkpoint: a name, hf://OWNER/REPO/FILE or a local .pt / .safetensors")
                    pi3 = gr.Dropdown(weights_choices("pi3"), value=d.pi3 or "", allow_custom_value=True,
                                      label="Pi3 model.safetensors: pi3, hf://... or a local path")
                    weights_info = gr.Markdown("  \n".join(  # cache only at start-up; sizes on change
                        f"{role}: {describe_weights(v, remote=False)}" for role, v in
                        (("checkpoint", d.checkpoint), ("Pi3", d.pi3)) if v), elem_id="weights-info")
                    config_box = gr.Textbox(d.config or "", label="model config .json (instead of the preset)",
                                            elem_id="config")
                with gr.Accordion("frames", open=False):
                    with gr.Row():
                        f_start = gr.Number(d.frame_start, label="start", precision=0, minimum=0)
                        f_stop = gr.Number(d.frame_stop, label="stop (0 = end)", precision=0, minimum=0)
                        stride = gr.Number(d.stride, label="stride", precision=0, minimum=1)
                gr.Markdown("**Dual-stream mask bias** (±bound of the preset)")
                lam_pose = gr.Slider(-bound, bound, d.lambda_pose, step=0.05, label="λ_pose (view)", elem_classes="lam", elem_id="lam-pose")
                lam_geo = gr.Slider(-bound, bound, d.lambda_geo, step=0.05, label="λ_geo (view)", elem_classes="lam")
                lam_pose_t = gr.Slider(-bound, bound, d.lambda_pose_t, step=0.05, label="λ_pose_t (time)", elem_classes="lam")
                lam_geo_t = gr.Slider(-bound, bound, d.lambda_geo_t, step=0.05, label="λ_geo_t (time)", elem_classes="lam")
                time_bias = gr.Slider(0.0, 4.0, d.time_bias, step=0.05, label="time bias s (Time-SA −s·Δt²)",
                                      elem_id="time-bias")
                with gr.Accordion("tracks & epipolar prior", open=bool(d.query_points or d.epipolar != "off")):
                    query_box = gr.Textbox(d.query_points or "", label="query points .npy (server-side path)",
                                           info="[N,2] pixels (x, y) in the first view at t=0, model-input "
                                                "resolution; or MVTracker [N,4] (t, x, y, z) world points",
                                           elem_id="query-points")
                    epipolar = gr.Dropdown(list(EPIPOLAR), value=d.epipolar, label="epipolar prior (View-SA)",
                                           info="cameras from the scene's ground truth or from the previous run",
                                           elem_id="epipolar")
                with gr.Row():
                    strategy = gr.Dropdown(list(STRATEGIES), value=d.strategy, label="sparse strategy",
                                           elem_id="strategy")
                    layout = gr.Dropdown(list(LAYOUTS), value=d.layout, label="layout")
                kb, sparse_on = kpt_bound(d.preset), d.strategy != "none"
                with gr.Row():
                    lam_kpt = gr.Slider(-kb, kb, d.lambda_kpt, step=0.1, label="λ_kpt (sparse, geo rows)",
                                        elem_classes="lam", elem_id="lam-kpt", interactive=sparse_on)
                    lam_kpt_pose = gr.Slider(-kb, kb, d.lambda_kpt_pose, step=0.1, label="λ_kpt_pose (sparse, pose rows)",
                                             elem_classes="lam", elem_id="lam-kpt-pose", interactive=sparse_on)
                keypoints = gr.Dropdown(list(KEYPOINT_SOURCES), value=d.keypoints, allow_custom_value=True,
                                        label="keypoints source", elem_id="keypoints",
                                        info="sift[:K], or a server-side SegAnyMo output / per-camera keypoint "
                                             "folder; drawn on the per-view images")
                ab = gr.Checkbox(True, label="A/B: keep the previous run as a ghost")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
                status = gr.Markdown("Ready. Press **Run**.", elem_id="status")
            with gr.Column(scale=3):
                gr.HTML(VISER_HTML, padding=False)
                with gr.Row():
                    conf = gr.Slider(0, 95, 20, step=1, label="confidence percentile (filter, no re-run)",
                                     elem_id="conf")
                    color_by = gr.Radio(["image", "mask"], value="image", label="colour points by")
                with gr.Tabs():
                    with gr.Tab("Views"):
                        t_gallery = gr.Slider(0, 1, 0, step=1, label="timestep")
                        # one row of whole thumbnails with their captions (view, t, keypoints); more views scroll
                        g_img = gr.Gallery(label="images", columns=4, height=300, object_fit="contain", elem_id="g-img",
                                           format="png")  # lossless: thin track lines stay exact
                        g_depth = gr.Gallery(label="depth", columns=4, height=300, object_fit="contain")
                        g_mask = gr.Gallery(label="dynamic mask", columns=4, height=300, object_fit="contain")
                    with gr.Tab("Metrics"):
                        metrics = gr.Dataframe(headers=["metric", "value"], label="vs ground truth",
                                               interactive=False, wrap=True)
                    with gr.Tab("A/B", elem_id="tab-ab"):
                        ab_md = gr.Markdown("Run twice (e.g. change λ) to compare the previous run (ghost, "
                                            "orange) with the current one, Sim(3)-aligned.")
                        ab_table = gr.Dataframe(headers=["quantity", "value", "rel. to scene size"],
                                                interactive=False, wrap=True, elem_id="ab-table")
                    with gr.Tab("Diagnostics"):
                        gr.Markdown("Attention mass that the camera tokens (what the camera head reads) put on "
                                    "dynamic patches, per bias layer, with the current λ vs without the bias, "
                                    "on the first window. A positive λ_pose should lower it in the pose stream. "
                                    "Camera jitter and dynamic/static depth errors are in **Metrics**.")
                        diag_btn = gr.Button("Compute attention diagnostic", elem_id="diag-btn")
                        diag_table = gr.Dataframe(headers=["layer", "stream", "mass without bias", "mass with bias",
                                                           "change"], interactive=False, elem_id="diag-table")
                    with gr.Tab("Export"):
                        with gr.Row():
                            b_npz = gr.Button("NPZ")
                            b_ply = gr.Button("PLY (zip, per timestep)")
                            b_glb = gr.Button("GLB")
                            b_html = gr.Button("Offline HTML", elem_id="html-btn")
                        with gr.Row():
                            rec_mode = gr.Radio(["timeline", "orbit"], value="timeline", label="video")
                            b_rec = gr.Button("Record MP4", elem_id="record-btn")
                        export_file = gr.File(label="download", interactive=False)
                        export_msg = gr.Markdown("")

        # ------------------------------------------------------------ callbacks
        def init_session(sess: SessionState | None, request: gr.Request):
            """This tab's session (a fresh one after an eviction / on first load) and its viser port."""
            if sess is None or sess.closed:
                sess = registry.new(request.session_hash)
            return sess, f"{sess.viser_port} {sess.id}"

        def release_session(request: gr.Request):  # the tab closed (Gradio's heartbeat stopped)
            registry.release(request.session_hash)

        def on_tick(sess: SessionState | None):
            """Tell an evicted tab once (its viser server is gone; the next action starts a new one)."""
            if sess is not None and sess.evicted and not sess.told_expired:
                sess.told_expired = True
                return SessionExpired.MESSAGE
            return gr.update()

        def on_preset(p: str, res_v):
            b = lambda_bound(p)
            upd = gr.update(minimum=-b, maximum=b, interactive=b > 0)
            choices = resolution_choices(p)
            res = gr.update(choices=choices, value=res_v if res_v in choices else max(choices))
            return upd, upd, upd, upd, _initial_banner(p, None, None), res

        def do_run(sess, views_text, preset_v, device_v, res_v, window_v, overlap_v, ckpt_v, pi3_v,
                   fs, fe, st, lp, lg, lpt, lgt, strat, lay, cfg_v, tb, qp_v, epi_v, lk, lkp, kp_v, ab_v, conf_v,
                   progress=gr.Progress(track_tqdm=True)):
            # track_tqdm: a weights download (huggingface_hub's tqdm, in bytes) shows in the page
            keep = gr.update()
            if sess is None:
                return ("**Not ready:** session not started yet — reload the page.",) + (keep,) * 9
            if sess.closed:
                return (SessionExpired.MESSAGE,) + (keep,) * 9
            sess.cancel.clear()
            try:
                params = _params(views_text, preset_v, device_v, res_v, window_v, overlap_v, ckpt_v, pi3_v,
                                 fs, fe, st, lp, lg, lpt, lgt, strat, lay, cfg_v, tb, qp_v, epi_v, lk, lkp, kp_v)
                rec, info = run_reconstruction(params, lambda f, m: progress(f, desc=m), sess.cancel,
                                               previous=sess.rec)
                progress(0.97, desc="uploading scene")
                same_input = params.same_input(sess.params)
                sess.params = params
                sess.set_result(rec, info, ab=bool(ab_v), conf_percentile=conf_v, keep_frame=same_input)
            except MemoryRefusal as exc:  # the app stays up; the message says what would fit
                return (f"**Not run:** {exc}",) + (keep,) * 9
            except UserError as exc:
                return (f"**Input problem:** {exc}",) + (keep,) * 9
            except SessionExpired:  # evicted while running: nothing was written into its stopped server
                return (SessionExpired.MESSAGE,) + (keep,) * 9
            except Cancelled:
                return ("**Cancelled.**",) + (keep,) * 9
            except Exception as exc:  # noqa: BLE001 - keep the app alive, show the error
                log.error("run failed:\n%s", traceback.format_exc())
                return (f"**Run failed:** `{type(exc).__name__}: {exc}` (details in the server log)",) + (keep,) * 9
            imgs, depths, masks = gallery_items(rec, 0)
            notes = "".join(f"<br>· {n}" for n in info["notes"])
            msg = (f"**Done** (run {sess.runs}) in {info['seconds']:.1f}s — T={info['T']} × V={info['V']} at "
                   f"{info['H']}×{info['W']} on {info['device']}, layout {info['layout']}, "
                   f"λ=({params.lambda_pose:g}, {params.lambda_geo:g}, {params.lambda_pose_t:g}, "
                   f"{params.lambda_geo_t:g}), sparse {params.strategy}"
                   + (f", time bias {params.time_bias:g}" if params.time_bias else "")
                   + (f", λ_kpt=({params.lambda_kpt:g}, {params.lambda_kpt_pose:g}), keypoints {params.keypoints}"
                      if params.keypoints != "none" else "")
                   + (f", {rec.tracks.shape[2]} tracks" if rec.tracks is not None else "") + notes)
            comp = sess.comparison
            ab_text = ("Previous run shown as an orange ghost, Sim(3)-aligned to this run."
                       if comp is not None else "First run: nothing to compare yet.")
            rows = metrics_rows(rec)
            return (msg, f"{info['banner']}", imgs, depths, masks,
                    gr.update(maximum=max(rec.num_timesteps - 1, 1), value=0),
                    rows if rows else [["(no ground truth)", ""]],
                    comp.rows() if comp is not None else [], ab_text, None)

        def _params(views_text, preset_v, device_v, res_v, window_v, overlap_v, ckpt_v, pi3_v,
                    fs, fe, st, lp, lg, lpt, lgt, strat, lay, cfg_v=None, tb=0.0, qp_v=None, epi_v="off",
                    lk=0.0, lkp=0.0, kp_v="none") -> RunParams:
            return RunParams(
                views=parse_views(views_text), preset=preset_v, checkpoint=(ckpt_v or "").strip() or None,
                pi3=(pi3_v or "").strip() or None, device=device_v, resolution=int(res_v),
                window=int(window_v or 8), overlap=int(overlap_v or 0), lambda_pose=lp, lambda_geo=lg,
                lambda_pose_t=lpt, lambda_geo_t=lgt, strategy=strat, layout=lay,
                frame_start=int(fs or 0), frame_stop=int(fe or 0), stride=int(st or 1),
                config=(cfg_v or "").strip() or None, time_bias=float(tb or 0.0),
                query_points=(qp_v or "").strip() or None, epipolar=epi_v or "off",
                allow_partial=d.allow_partial, lambda_kpt=float(lk or 0.0), lambda_kpt_pose=float(lkp or 0.0),
                keypoints=(kp_v or "none").strip() or "none")

        def do_estimate(sess, *values):
            try:
                return f"{estimate_params(_params(*values[:N_PARAMS]))} Running…"
            except UserError as exc:
                return f"**Input problem:** {exc}"

        def do_diag(sess, *values):
            try:
                return attention_diagnostics(_params(*values[:N_PARAMS])), gr.update()
            except UserError as exc:
                return [], f"**Input problem:** {exc}"

        def do_cancel(sess):
            if sess is not None:
                sess.cancel.set()
            return "Cancelling after the current window…"

        def on_t(sess, t):
            if sess is None or sess.rec is None:
                return gr.update(), gr.update(), gr.update()
            if sess.view is not None:
                sess.view.set_timestep(int(t))
            return gallery_items(sess.rec, int(t))

        def on_conf(sess, p):
            if sess is not None and sess.view is not None:
                sess.view.set_conf_percentile(float(p))

        def on_color(sess, mode):
            if sess is not None and sess.view is not None:
                sess.view.set_color_by(mode)

        def do_export(sess, kind, conf_v):
            if sess is None or sess.rec is None:
                return None, "Run a reconstruction first."
            try:
                if sess.export_dir is None or not sess.export_dir.exists():
                    out = sess.new_folder("export") / "reconstruction"
                    sess.rec.save(out, conf_percentile=float(conf_v) or None, colmap_images=False)
                    sess.export_dir = out
                out = sess.export_dir
                if kind == "npz":  # an npz is a zip of .npy files: the result's arrays/ folder zipped
                    path = out.parent / "reconstruction.npz"
                    if not path.exists():
                        Path(shutil.make_archive(str(out.parent / "reconstruction"), "zip", out / "arrays")).rename(path)
                elif kind == "glb":
                    path = out / "scene.glb"
                else:
                    path = Path(shutil.make_archive(str(out.parent / "points_ply"), "zip", out / "points"))
                return str(path), f"Saved under `{out}` (also cameras.json, COLMAP text, manifest)."
            except SessionExpired:
                return None, SessionExpired.MESSAGE
            except Exception as exc:  # noqa: BLE001
                log.error("export failed:\n%s", traceback.format_exc())
                return None, f"**Export failed:** `{type(exc).__name__}: {exc}`"

        def do_record(sess, mode, color, conf_v, progress=gr.Progress()):
            if sess is None or sess.rec is None:
                return None, "Run a reconstruction first."
            from vggt_mv.export.video import record

            try:
                out = sess.new_folder("video") / f"vggt_mv_{mode}.mp4"
                record(sess.rec, out, mode=mode, color_by=color, conf_percentile=float(conf_v) or None,
                       progress=lambda done, total: progress(done / max(total, 1), desc="rendering frames"))
            except SessionExpired:
                return None, SessionExpired.MESSAGE
            except Exception as exc:  # noqa: BLE001 - keep the app alive, show the error
                log.error("recording failed:\n%s", traceback.format_exc())
                return None, f"**Recording failed:** `{type(exc).__name__}: {exc}`"
            return str(out), f"Recorded `{out.name}` ({out.stat().st_size / 1e6:.1f} MB, H.264)."

        run_inputs = [state, views, preset, device, resolution, window, overlap, checkpoint, pi3, f_start,
                      f_stop, stride, lam_pose, lam_geo, lam_pose_t, lam_geo_t, strategy, layout, config_box,
                      time_bias, query_box, epipolar, lam_kpt, lam_kpt_pose, keypoints, ab, conf]
        run_outputs = [status, banner, g_img, g_depth, g_mask, t_gallery, metrics, ab_table, ab_md, export_file]
        load_evt = demo.load(init_session, inputs=[state], outputs=[state, port_box])
        load_evt = load_evt.then(None, inputs=[port_box], outputs=[port_box], js=IFRAME_JS)
        if autorun:
            load_evt.then(lambda: "Running the scene in the box…", outputs=[status]).then(
                do_run, inputs=run_inputs, outputs=run_outputs)
        demo.unload(release_session)
        gr.Timer(EXPIRED_POLL_S).tick(on_tick, inputs=[state], outputs=[status], show_progress="hidden")
        preset.change(on_preset, inputs=[preset, resolution],
                      outputs=[lam_pose, lam_geo, lam_pose_t, lam_geo_t, banner, resolution])

        def on_strategy(strat: str, p: str):  # λ_kpt acts on the sparse layers only
            b = kpt_bound(p)
            upd = gr.update(minimum=-b, maximum=b, interactive=strat != "none")
            return upd, upd

        strategy.change(on_strategy, inputs=[strategy, preset], outputs=[lam_kpt, lam_kpt_pose])

        def on_weights(ckpt_v, pi3_v):  # where the weights would come from; a size asked of the Hub
            return "  \n".join(f"{role}: {describe_weights(v)}" for role, v in
                                (("checkpoint", ckpt_v), ("Pi3", pi3_v)) if v)

        checkpoint.change(on_weights, inputs=[checkpoint, pi3], outputs=weights_info, show_progress="hidden")
        pi3.change(on_weights, inputs=[checkpoint, pi3], outputs=weights_info, show_progress="hidden")
        run_btn.click(init_session, inputs=[state], outputs=[state, port_box]).then(  # fresh after an eviction
            None, inputs=[port_box], outputs=[port_box], js=IFRAME_JS).then(
            do_estimate, inputs=run_inputs, outputs=[status]).then(
            do_run, inputs=run_inputs, outputs=run_outputs, concurrency_limit=None)
        diag_btn.click(do_diag, inputs=run_inputs, outputs=[diag_table, status])
        cancel_btn.click(do_cancel, inputs=[state], outputs=[status], queue=False)
        t_gallery.change(on_t, inputs=[state, t_gallery], outputs=[g_img, g_depth, g_mask], show_progress="hidden")
        conf.release(on_conf, inputs=[state, conf], show_progress="hidden")
        color_by.change(on_color, inputs=[state, color_by], show_progress="hidden")
        b_npz.click(lambda s, c: do_export(s, "npz", c), inputs=[state, conf], outputs=[export_file, export_msg])
        b_ply.click(lambda s, c: do_export(s, "ply", c), inputs=[state, conf], outputs=[export_file, export_msg])
        b_rec.click(do_record, inputs=[state, rec_mode, color_by, conf], outputs=[export_file, export_msg])
        b_glb.click(lambda s, c: do_export(s, "glb", c), inputs=[state, conf], outputs=[export_file, export_msg])
        b_html.click(lambda s, c, p: share_html(s, c, p), inputs=[state, color_by, conf], outputs=[export_file, export_msg])
    demo._vggt_theme, demo._vggt_css = theme, CSS
    return demo
