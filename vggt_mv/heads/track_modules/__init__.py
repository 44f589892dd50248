"""Track-head internals: correlation pyramid, update transformer, tracker and sampling utilities."""
from vggt_mv.heads.track_modules.blocks import AttnBlock, CrossAttnBlock
from vggt_mv.heads.track_modules.correlation import CorrBlock
from vggt_mv.heads.track_modules.tracker import BaseTrackerPredictor
from vggt_mv.heads.track_modules.update_former import EfficientUpdateFormer

__all__ = ["AttnBlock", "BaseTrackerPredictor", "CorrBlock", "CrossAttnBlock", "EfficientUpdateFormer"]
