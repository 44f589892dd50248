"""The network: DINO encoder, aggregator (Time-SA / View-SA, dual streams, sparse layers), dynamic-mask
heads and their attention bias, the epipolar prior, and ``VGGTMV`` (aggregator + heads)."""
from vggt_mv.model.aggregator import Aggregator, AggregatorOutput, AggregatorState
from vggt_mv.model.epipolar import EpipolarPrior
from vggt_mv.model.vggt_mv import VGGTMV

__all__ = ["Aggregator", "AggregatorOutput", "AggregatorState", "EpipolarPrior", "VGGTMV"]
