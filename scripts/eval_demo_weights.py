"""Score the bundled demo weights on the shipped sample (unseen in training) next to trivial baselines.

    .venv/bin/python scripts/eval_demo_weights.py [--weights assets/weights/tiny.safetensors] [--resolution 224]

Prints a JSON scorecard with and without the sample's masks fed as external masks.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import vggt_mv
from vggt_mv.eval.baselines import scorecard

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=str(ROOT / "assets" / "weights" / "tiny.safetensors"))
    ap.add_argument("--resolution", type=int, default=224, help="image width (the app's CPU default: 224)")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--overlap", type=int, default=2)
    args = ap.parse_args()
    model, report = vggt_mv.load_model(vggt_mv.ModelConfig.preset("tiny"), checkpoint=args.weights)
    out = {"weights": args.weights, "loaded": report.fraction_loaded("checkpoint"), "resolution": args.resolution}
    for label, external in (("without_external_masks", False), ("with_external_masks", True)):
        scene = vggt_mv.load_scene(ROOT / "assets" / "sample", resolution=args.resolution)  # GT masks too
        if not external:
            scene.ext_masks = None  # the model's own mask only
        t0 = time.time()
        rec = vggt_mv.reconstruct(scene, model, window=args.window, overlap=args.overlap)
        out[label] = {"seconds": round(time.time() - t0, 1), **scorecard(rec)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
