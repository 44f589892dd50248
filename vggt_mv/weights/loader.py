"""``load_model``: build a ``VGGTMV`` and fill it from Pi3 / VGGT / PAGE-4D files; ``save_merged``."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from vggt_mv.config import ModelConfig
from vggt_mv.weights.autoconfig import ConfigChoices, resolve_config
from vggt_mv.weights.formats import CheckpointFile, open_checkpoint
from vggt_mv.weights.mapping import Recipe, build_plan
from vggt_mv.weights.report import LoadReport


def model_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape of the model a config builds (on the meta device: no memory)."""
    from vggt_mv.model.vggt_mv import VGGTMV

    with torch.device("meta"):
        model = VGGTMV(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def fit_config(cfg: ModelConfig, checkpoint: CheckpointFile | None) -> tuple[ModelConfig, ConfigChoices]:
    """``cfg`` fitted to the checkpoint's key/shape header (mask-head variant, track head; see
    ``vggt_mv.weights.autoconfig``) and the choices made."""
    return resolve_config(cfg, {k: s for k, (s, _) in checkpoint.keys.items()} if checkpoint else None)


def plan_files(
    cfg: ModelConfig, checkpoint: CheckpointFile | None, pi3: CheckpointFile | None, recipe: Recipe = "seed",
    choices: ConfigChoices | None = None,
) -> tuple[dict, LoadReport, object]:
    """Plan ``cfg`` (already fitted with ``fit_config`` when ``choices`` is given) against the files."""
    target = model_shapes(cfg)
    ck = {k: s for k, (s, _) in checkpoint.keys.items()} if checkpoint else None
    pi = {k: s for k, (s, _) in pi3.keys.items()} if pi3 else None
    fork = min(cfg.mask.bias_layers) if cfg.mask.enabled and cfg.mask.mode == "streams" else None
    plan = build_plan(target, ck, pi, recipe=recipe, mask_head=cfg.mask.head if cfg.mask.enabled else None,
                      fork_layer=fork, fresh_mask_head=bool(choices and choices.fresh_mask_head))
    sources = {n: s for n, s in (("checkpoint", ck), ("pi3", pi)) if s is not None}
    files = {n: f.describe() for n, f in (("checkpoint", checkpoint), ("pi3", pi3)) if f is not None}
    report = LoadReport.from_plan(plan, target, sources, files, recipe)
    if choices is not None:
        report.set_choices(choices)
    return target, report, plan


def _transform(t: torch.Tensor, transform: str | None) -> torch.Tensor:
    if transform is None:
        return t
    # Pi3's register_token [1,1,5,C] -> slots [1,2,n,C]: the same tokens for the reference image and the others
    lo, hi = {"pi3_camera": (0, 1), "pi3_registers_1_5": (1, 5), "pi3_registers_0_4": (0, 4)}[transform]
    return t[:, :, lo:hi].expand(-1, 2, -1, -1)


def _chunked_copy(dst: torch.Tensor, src: torch.Tensor, src_file: CheckpointFile, chunk: int = 1 << 22) -> None:
    """``dst.copy_(src)`` (casting), in slices of ``chunk`` elements whose mapped source pages are
    released as soon as they are copied, so a large tensor never has all its pages resident."""
    if dst.is_contiguous() and src.is_contiguous() and dst.numel() > chunk:
        d, s_ = dst.view(-1), src.reshape(-1)
        for i in range(0, d.numel(), chunk):
            d[i:i + chunk].copy_(s_[i:i + chunk])
            src_file.release(s_[i:i + chunk])
    else:
        dst.copy_(src)
        src_file.release(src)


def load_model(
    cfg: ModelConfig | str,
    checkpoint: str | os.PathLike | None = None,
    pi3: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    recipe: Recipe = "seed",
    strict: bool = True,
):
    """Build ``VGGTMV(cfg)`` and load weights. Returns ``(model.eval(), LoadReport)``.

    ``checkpoint`` / ``pi3``: local paths, ``hf://`` URIs or short names (``vggt-1b``, ``pi3``,
    ``page4d-mask``, ``page4d-nomask``; see ``vggt_mv.weights.hub``), downloaded into the Hub cache.

    ``strict`` (default): when files are given, every tensor of the model that is not a new module
    must come from them and every tensor in them must be used (documented skips aside), else a
    ``WeightsMismatchError`` saying what is missing from which module is raised *before* the model
    is built. ``strict=False`` loads anyway; ``report.fraction_params_loaded()`` then says how much.
    No files at all = random init (allowed). The model is allocated once on ``device``; source
    tensors are read one at a time and cast into their parameters, so peak memory is about one
    model plus one tensor.

    With ``cfg.follow_checkpoint`` the model is built from ``cfg`` fitted to the checkpoint (mask-head
    variant, track head; ``model.config`` is the fitted copy, the report says what was chosen).
    """
    from vggt_mv.model.vggt_mv import VGGTMV

    from vggt_mv.weights.hub import resolve_weights

    if isinstance(cfg, str):
        cfg = ModelConfig.preset(cfg)
    cfg.validate()
    checkpoint, pi3 = resolve_weights(checkpoint, "checkpoint"), resolve_weights(pi3, "pi3")
    ck = open_checkpoint(checkpoint, expect="vggt", role="checkpoint") if checkpoint else None
    pi = open_checkpoint(pi3, expect="pi3", role="pi3") if pi3 else None
    try:
        cfg, choices = fit_config(cfg, ck)
        target, report, plan = plan_files(cfg, ck, pi, recipe, choices)
        problems = report.strict_problems() if (ck or pi) else None
        if problems and strict:
            names = " + ".join(str(f.path) for f in (ck, pi) if f is not None)
            raise WeightsMismatchError(f"{names} do not fit the {cfg.name!r} model: {problems}. Check --preset/"
                                       "--config, or pass --allow-partial (strict=False) to load anyway")
        with torch.device(device):
            model = VGGTMV(cfg)
        if dtype != torch.float32:
            model = model.to(dtype)
        files = {"checkpoint": ck, "pi3": pi}
        state = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for tgt, a in plan.assignments.items():
                src_file = files[a.source]
                dst = state[tgt]
                if a.transform is None and src_file.read_into(a.source_key, dst):
                    continue
                src = src_file.get(a.source_key)
                value = _transform(src, a.transform)
                if tuple(value.shape) != tuple(dst.shape):  # guarded by the plan; a transform bug lands here
                    raise RuntimeError(f"internal: {a} gives {tuple(value.shape)} for {tgt} {tuple(dst.shape)}")
                _chunked_copy(dst, value, src_file)
    finally:
        for f in (ck, pi):
            if f is not None:
                f.close()
    if not any(k.startswith("aggregator.pose_") for k in plan.assignments):
        model.aggregator.copy_stream_blocks()  # separate pose-stream blocks start as copies
    model.eval()
    model.load_report = report
    model.weights_identity = weights_identity(checkpoint, pi3)
    model.partial_weights = report.fraction_params_loaded() if problems else None
    return model, report


class WeightsMismatchError(ValueError):
    """Weight files that do not fit the model (strict loading)."""


def partial_weights_note(model) -> str | None:
    """``"partial weights (N% of parameters loaded)"`` for a model loaded with strict=False, else None."""
    share = getattr(model, "partial_weights", None)
    return None if share is None else f"partial weights ({100 * share:.1f}% of parameters loaded)"


def weights_identity(checkpoint=None, pi3=None) -> str:
    """A short, stable identity of the weight files (path, size, mtime), or 'random init'."""
    parts = []
    for role, p in (("checkpoint", checkpoint), ("pi3", pi3)):
        if p:
            st = Path(p).stat()
            parts.append(f"{role}={Path(p).resolve()}:{st.st_size}:{int(st.st_mtime)}")
    if not parts:
        return "random init"
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16] + " (" + ", ".join(parts) + ")"


def is_merged_weights(path: Path) -> bool:
    """A ``.safetensors`` written by ``save_merged`` (``vggt_mv_config`` in its header)."""
    from vggt_mv.weights.formats import embedded_config

    return path.is_file() and embedded_config(path) is not None


def _is_merged_manifest(path: Path) -> bool:
    from vggt_mv.export.output import json_manifest_is

    return json_manifest_is(path.parent, path.name, lambda m: {"config", "provenance"} <= set(m))


def check_merged_target(path: str | os.PathLike, inputs=()) -> Path:
    """Validate a ``save_merged`` target (``X.safetensors`` + ``X.json``) against the output rule."""
    from vggt_mv.export.output import check_output

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: merged weights are written as .safetensors; use a path ending in .safetensors")
    check_output(path, kind="file", inputs=inputs, is_ours=is_merged_weights)
    check_output(path.with_suffix(".json"), kind="file", inputs=inputs, is_ours=_is_merged_manifest,
                 what="--out (its .json manifest)")
    return path


def save_merged(model, path: str | os.PathLike, report: LoadReport | None = None, inputs=()) -> Path:
    """Write the model as one ``.safetensors`` (config + provenance in the header) and a ``.json`` manifest.

    Both targets follow the output rule (new, or a previous ``save_merged`` output; never an input)
    and are written to temporary names and renamed, so a failure leaves nothing half-written.
    """
    from safetensors.torch import save_file

    from vggt_mv.export.output import output_file, output_path

    path = check_merged_target(path, inputs)
    report = report or getattr(model, "load_report", None)
    provenance = report.provenance if report else {}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": "pt",
        "vggt_mv_config": model.config.to_json(),
        "vggt_mv_provenance": json.dumps(provenance),
    }
    manifest = {
        "config": model.config.to_dict(),
        "provenance": provenance,
        "report": json.loads(report.to_json()) if report else None,
        "partial_weights": partial_weights_note(model),
    }
    with output_path(path, inputs=inputs, is_ours=is_merged_weights) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    with output_file(path.with_suffix(".json"), "w", inputs=inputs, is_ours=_is_merged_manifest) as handle:
        handle.write(json.dumps(manifest, indent=1))
    return path
