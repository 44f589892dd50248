"""Regenerate the shipped sample scene ``assets/sample/`` (deterministic).

Usage: python scripts/make_sample.py [--out assets/sample] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from vggt_mv.data.synthetic import SyntheticSceneConfig, render_scene, write_scene

SAMPLE_CFG = SyntheticSceneConfig(T=10, V=3, H=168, W=224, fov_deg=60.0, n_moving=2, n_static_boxes=2)
SAMPLE_SEED = 7


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "assets" / "sample"))
    ap.add_argument("--seed", type=int, default=SAMPLE_SEED)
    args = ap.parse_args()
    out = Path(args.out)
    for sub in ("images", "depths", "intrs", "extrs", "masks"):
        shutil.rmtree(out / sub, ignore_errors=True)
    scene = render_scene(SAMPLE_CFG, seed=args.seed)
    write_scene(scene, out)
    meta = {"generator": "vggt_mv.data.synthetic.render_scene", "seed": args.seed,
            "config": SAMPLE_CFG.__dict__, "T": SAMPLE_CFG.T, "V": SAMPLE_CFG.V,
            "H": SAMPLE_CFG.H, "W": SAMPLE_CFG.W}
    (out / "scene.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}: T={SAMPLE_CFG.T} V={SAMPLE_CFG.V} {SAMPLE_CFG.H}x{SAMPLE_CFG.W}, "
          f"dynamic pixels {scene.dynamic_mask.mean():.1%}")


if __name__ == "__main__":
    main()
