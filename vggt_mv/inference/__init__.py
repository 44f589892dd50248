"""Inference: ``reconstruct`` (windows, stitching, cache), ``Reconstruction`` and geometry helpers."""
