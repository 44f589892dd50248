"""Scorecard baselines: a perfect prediction beats every trivial baseline, computed the same way."""
from __future__ import annotations

import numpy as np

from vggt_mv.eval.baselines import scorecard
from vggt_mv.eval.synthetic import make_synthetic_reconstruction


def test_perfect_prediction_beats_baselines():
    card = scorecard(make_synthetic_reconstruction())
    d, r, m = card["depth_abs_rel"], card["rotation_error_median_deg"], card["mask_iou"]
    assert d["model"] < 1e-6 < d["baseline_constant_depth"]
    assert r["model"] < 1e-3 < r["baseline_mean_rig"]
    assert m["model"] == 1.0 and m["baseline_all_static"] == 0.0 and 0 < m["baseline_all_dynamic"] < 1


def test_constant_prediction_equals_its_baseline():
    rec = make_synthetic_reconstruction()
    rec.depth = np.full_like(rec.depth, 3.0)
    card = scorecard(rec)
    assert abs(card["depth_abs_rel"]["model"] - card["depth_abs_rel"]["baseline_constant_depth"]) < 1e-9
