"""Score the bundled demo weights on the shipped sample (unseen in training) next to trivial baselines.

    .venv/bin/python scripts/eval_demo_weights.py [--weights assets/weights/tiny.safetensors] [--resolution 224]
    .venv/bin/python scripts/eval_demo_weights.py --scenes val --weights runs/x/ckpt_1000.pt   # model selection

``--scenes sample`` (default) prints a JSON scorecard on ``assets/sample`` with and without the
sample's masks fed as external masks. ``--scenes val`` renders the held-out validation seeds
(100-107, never drawn in training) with the sample's generator settings and prints per-scene
scorecards and their medians: use it, not the sample, to choose between checkpoints.
``--weights`` takes a ``.safetensors`` file or a training ``checkpoint.pt``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import vggt_mv
from vggt_mv.data.synthetic import SyntheticSceneConfig, render_scene, write_scene
from vggt_mv.eval.baselines import scorecard
from vggt_mv.train.data import VAL_SEEDS

ROOT = Path(__file__).resolve().parents[1]


def sample_scorecards(model, args) -> dict:
    out = {}
    for label, external in (("without_external_masks", False), ("with_external_masks", True)):
        scene = vggt_mv.load_scene(ROOT / "assets" / "sample", resolution=args.resolution)  # GT masks too
        if not external:
            scene.ext_masks = None  # the model's own mask only
        t0 = time.time()
        rec = vggt_mv.reconstruct(scene, model, window=args.window, overlap=args.overlap)
        out[label] = {"seconds": round(time.time() - t0, 1), **scorecard(rec)}
    return out


def val_scorecards(model, args) -> dict:
    sample_cfg = json.loads((ROOT / "assets" / "sample" / "scene.json").read_text())["config"]
    cfg = replace(SyntheticSceneConfig(**sample_cfg), arc_deg=None)  # each seed draws its own rig arc
    per_scene = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in VAL_SEEDS:
            root = write_scene(render_scene(cfg, seed), Path(tmp) / str(seed))
            scene = vggt_mv.load_scene(root, resolution=args.resolution)
            scene.ext_masks = None
            rec = vggt_mv.reconstruct(scene, model, window=args.window, overlap=args.overlap)
            per_scene[seed] = {k: v["model"] for k, v in scorecard(rec).items()}
    medians = {k: statistics.median(s[k] for s in per_scene.values()) for k in next(iter(per_scene.values()))}
    return {"median_over_scenes": medians, "per_scene": per_scene}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(ROOT / "assets" / "weights" / "tiny.safetensors"))
    ap.add_argument("--scenes", choices=["sample", "val"], default="sample")
    ap.add_argument("--resolution", type=int, default=224, help="image width (the app's CPU default: 224)")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--overlap", type=int, default=2)
    args = ap.parse_args()
    model, report = vggt_mv.load_model(vggt_mv.ModelConfig.preset("tiny"), checkpoint=args.weights)
    out = {"weights": args.weights, "loaded": report.fraction_loaded("checkpoint"), "resolution": args.resolution}
    out.update(sample_scorecards(model, args) if args.scenes == "sample" else val_scorecards(model, args))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
