"""The shipped demo weights still reconstruct the (unseen) sample: catches a broken loader or model change."""
from __future__ import annotations

import pytest

import vggt_mv
from conftest import REPO
from vggt_mv.eval.baselines import scorecard
from vggt_mv.weights.demo import demo_weights

ABS_REL_MAX = 0.20
ROT_MAX_DEG = 20.0  # measured 14.3 (model card); the guard leaves room for CPU / library numerics


@pytest.mark.slow
def test_demo_weights_depth_on_the_sample():
    weights = demo_weights("tiny")
    if weights is None:
        pytest.skip("no bundled demo weights in assets/weights")
    model, report = vggt_mv.load_model(vggt_mv.ModelConfig.preset("tiny"), checkpoint=weights)
    # the demo weights predate the keypoint bias: only its two λ_kpt scalars (init 0, no effect) stay at init
    assert report.fraction_loaded("checkpoint") == 1.0
    assert set(report.left_at_init) <= {"aggregator.keypoint_bias.lambda_kpt", "aggregator.keypoint_bias.lambda_kpt_pose"}
    assert model.keypoint_lambdas() == {"lambda_kpt": 0.0, "lambda_kpt_pose": 0.0}
    scene = vggt_mv.load_scene(REPO / "assets" / "sample", resolution=224)
    scene.ext_masks = None  # score the model's own dynamic mask, not the sample's masks fed back in
    card = scorecard(vggt_mv.reconstruct(scene, model, window=8, overlap=2))
    depth = card["depth_abs_rel"]
    assert depth["model"] <= ABS_REL_MAX, card
    assert depth["model"] <= 0.5 * depth["baseline_constant_depth"], card
    rot = card["rotation_error_median_deg"]
    assert rot["model"] < min(ROT_MAX_DEG, rot["baseline_mean_rig"]), card
    iou = card["mask_iou"]
    assert iou["model"] >= 0.5 and iou["model"] > max(iou["baseline_all_dynamic"], iou["baseline_all_static"]), card
