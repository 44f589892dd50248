"""How windows are aligned, measured side by side: the Sim(3) fitted to the overlap's geometry (what
``vggt_mv.inference.windows`` does: confident world points + camera centres) vs one fitted to the
overlap's cameras alone (``align_cameras``: it would keep the stitched cameras a function of the pose
stream only, so λ_geo / λ_kpt could not move them across windows).

For each window after the first, both fits are scored on the same overlap point pairs (RMS distance
in the stitched frame, after the window is mapped); the ratio cameras/points says how much worse the
camera-only fit places the geometry. Bundled sample, demo weights, CPU.

    python benchmarks/window_alignment.py [--resolution 252] [--windows 8:2 4:2 3:1]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import vggt_mv
    from vggt_mv.inference.alignment import align_cameras, apply_sim3
    from vggt_mv.inference.pipeline import outputs_to_prediction, predict_window
    from vggt_mv.inference.windows import Stitcher, WindowPrediction, estimate_sim3, plan_windows
    from vggt_mv.inference.windows import _correspondences  # the stitcher's own point pairs
    from vggt_mv.weights.demo import demo_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=252)
    ap.add_argument("--windows", nargs="+", default=["8:2", "4:2", "3:1"], help="WINDOW:OVERLAP pairs")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model, _ = vggt_mv.load_model(vggt_mv.ModelConfig.preset("tiny"), checkpoint=demo_weights("tiny"))
    model.eval()
    scene = vggt_mv.load_scene(REPO / "assets" / "sample", resolution=args.resolution)
    T, H, W = scene.images.shape[0], scene.images.shape[-2], scene.images.shape[-1]
    print(f"sample T={T} V={scene.images.shape[1]} at {H}x{W}, tiny demo weights")
    print(f"{'window':>7} {'win#':>4} {'points rms':>11} {'cameras rms':>12} {'ratio':>7} "
          f"{'s points':>9} {'s cameras':>10}")
    ratios = []
    for spec in args.windows:
        window, overlap = (int(x) for x in spec.split(":"))
        st = Stitcher(T)
        for plan in plan_windows(T, window, overlap):
            imgs = scene.images[plan.start:plan.stop][None].float()
            out, _ = predict_window(model, imgs, None, layout=model.config.layout, device=torch.device("cpu"),
                                    autocast_dtype=None)
            pred = outputs_to_prediction(out, (H, W))
            k = plan.keep_from
            if k:
                ref = WindowPrediction(**{n: None if a is None else a[plan.start:plan.start + k]
                                          for n, a in st.arrays.items()})
                cur = pred.slice(0, k)
                src, dst = _correspondences(ref, cur, st.conf_quantile, st.max_points)
                pts, _ = estimate_sim3(ref, cur)
                s, rot, t, _ = align_cameras(cur.extrinsic.reshape(-1, 3, 4), ref.extrinsic.reshape(-1, 3, 4))
                rms_p = float(np.sqrt(np.mean(np.sum((apply_sim3(src, pts.s, pts.R, pts.t) - dst) ** 2, -1))))
                rms_c = float(np.sqrt(np.mean(np.sum((apply_sim3(src, s, rot, t) - dst) ** 2, -1))))
                ratios.append(rms_c / rms_p)
                print(f"{spec:>7} {plan.index:>4} {rms_p:>11.5f} {rms_c:>12.5f} {rms_c / rms_p:>6.1f}x "
                      f"{pts.s:>9.4f} {s:>10.4f}")
            st.add(plan, pred)
    print(f"cameras-only / geometry fit, overlap RMS: min {min(ratios):.1f}x, median {np.median(ratios):.1f}x, "
          f"max {max(ratios):.1f}x over {len(ratios)} window joins")


if __name__ == "__main__":
    main()
