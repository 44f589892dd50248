"""Building blocks: attention (with low-rank logit biases), RoPE, MLP/LayerScale, blocks."""
from vggt_mv.layers.attention import Attention, LowRankBias, attend
from vggt_mv.layers.block import Block
from vggt_mv.layers.mlp import LayerScale, Mlp
from vggt_mv.layers.rope import RotaryPositionEmbedding2D, patch_positions

__all__ = ["Attention", "Block", "LayerScale", "LowRankBias", "Mlp", "RotaryPositionEmbedding2D",
           "attend", "patch_positions"]
