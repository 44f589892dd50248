"""Weight loading: formats by content, the Pi3 + PAGE-4D/VGGT mapping plan, ``LoadReport``, merging."""
from vggt_mv.weights.formats import CheckpointError, CheckpointFile, open_checkpoint
from vggt_mv.weights.loader import WeightsMismatchError, load_model, model_shapes, plan_files, save_merged
from vggt_mv.weights.mapping import build_plan, detect_mask_variant
from vggt_mv.weights.report import LoadReport

__all__ = ["CheckpointError", "CheckpointFile", "LoadReport", "build_plan", "detect_mask_variant",
           "load_model", "model_shapes", "open_checkpoint", "plan_files", "save_merged", "WeightsMismatchError"]
