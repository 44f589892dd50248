"""GPU checks of the inference path, for a machine with CUDA (prints JSON): CUDA vs CPU forward
parity, bf16 autocast, mask-bias channels kept on fused SDPA (no N x N), pipeline-cache re-runs and
sparse strategies on CUDA, the sample reconstructed on CPU / CUDA bf16 / CUDA fp32.

    PYTHONPATH=. python3 scripts/gpu_check.py      # ~15 s on an H100 (numbers: issue 5/7 notes)
"""
import json
import time

import torch
import vggt_mv
from vggt_mv.eval.baselines import scorecard
from vggt_mv.inference.cache import PipelineCache
from vggt_mv.layers.attention import LowRankBias, attend

res = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
cpu_model, _ = vggt_mv.load_model(vggt_mv.ModelConfig.preset("tiny"), checkpoint="assets/weights/tiny.safetensors")
gpu_model, _ = vggt_mv.load_model(vggt_mv.ModelConfig.preset("tiny"), checkpoint="assets/weights/tiny.safetensors", device="cuda")
torch.manual_seed(0)
x = torch.rand(1, 3, 3, 3, 126, 168)
with torch.no_grad():
    torch.backends.cuda.matmul.allow_tf32 = False; torch.backends.cudnn.allow_tf32 = False
    cpu_model.set_lambdas(lambda_pose=1.5, lambda_geo=0.7); gpu_model.set_lambdas(lambda_pose=1.5, lambda_geo=0.7)
    a, b = cpu_model(x), gpu_model(x.cuda())
    res["fp32_cuda_vs_cpu_max_abs"] = {k: float((a[k] - b[k].cpu()).abs().max()) for k in ("pose_enc", "depth", "world_points", "dynamic_mask")}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        c = gpu_model(x.cuda())
    res["bf16_vs_cpu_rel_depth_median"] = float(((c["depth"].float().cpu() - a["depth"]).abs() / a["depth"].abs()).median())
    cpu_model.set_lambdas(lambda_pose=0.0, lambda_geo=0.0); gpu_model.set_lambdas(lambda_pose=0.0, lambda_geo=0.0)
# attention with bias: fused kernel, memory O(N)
for dt in (torch.float32, torch.bfloat16):
    n, h, d = 16384, 4, 64
    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=dt) for _ in range(3))
    bias = LowRankBias(torch.randn(1, n, 2, device="cuda"), torch.randn(1, n, 2, device="cuda"))
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); m0 = torch.cuda.memory_allocated()
    o = attend(q, k, v, bias); torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - m0
    ref_dense = torch.softmax((q.float() @ k.float().transpose(-1, -2)) * d ** -0.5 + (bias.row @ bias.key.transpose(-1, -2))[:, None], -1) @ v.float()
    res[f"attend_bias_{dt}"] = {"N": n, "peak_extra_MiB": peak / 2**20, "NxN_would_be_MiB": h * n * n * 4 / 2**20,
                                "max_abs_vs_dense": float((o.float() - ref_dense).abs().max())}
    del ref_dense
# pipeline on the sample: cpu fp32 vs cuda bf16 vs cuda fp32, cache re-run, sparse strategies
for label, model, dev, dtype in (("cpu_fp32", cpu_model, "cpu", None), ("cuda_bf16", gpu_model, "cuda", None), ("cuda_fp32", gpu_model, "cuda", "float32")):
    scene = vggt_mv.load_scene("assets/sample", resolution=224); scene.ext_masks = None
    t0 = time.time(); rec = vggt_mv.reconstruct(scene, model, device=dev, dtype=dtype)
    res[f"sample_{label}"] = {"s": round(time.time() - t0, 2), **{k: v["model"] for k, v in scorecard(rec).items()}, "autocast": rec.meta["autocast_dtype"]}
cache = PipelineCache()
scene = vggt_mv.load_scene("assets/sample", resolution=224)
t0 = time.time(); vggt_mv.reconstruct(scene, gpu_model, device="cuda", cache=cache); full = time.time() - t0
gpu_model.set_lambdas(lambda_pose=2.0, lambda_geo=1.0)
t0 = time.time(); r2 = vggt_mv.reconstruct(scene, gpu_model, device="cuda", cache=cache); rerun = time.time() - t0
res["cache_cuda"] = {"full_s": full, "lambda_rerun_s": rerun, "hits": [w["cache"] for w in r2.meta["windows"]]}
gpu_model.set_lambdas(lambda_pose=0.0, lambda_geo=0.0)
for strat in ("landmark", "dilated"):
    gpu_model.config.sparse.strategy = strat
    rec = vggt_mv.reconstruct(scene, gpu_model, device="cuda", conf_landmarks=strat == "landmark")
    res[f"sparse_{strat}_cuda"] = {k: v["model"] for k, v in scorecard(rec).items()}
gpu_model.config.sparse.strategy = "none"
print(json.dumps(res, indent=1, default=str))
