"""Data layer: scene loading, VGGT preprocessing, procedural sample scenes."""

from .io import IMAGE_EXTS, VIDEO_EXTS, natural_key, natural_sorted, write_dump
from .preprocess import (PreprocessPlan, check_resolution, default_resolution, plan_preprocess,
                         resize_masks_to_patches)
from .scene import Scene, SceneGT, load_scene, scene_from_arrays
from .synthetic import SyntheticScene, SyntheticSceneConfig, render_scene, write_scene

__all__ = [
    "IMAGE_EXTS", "VIDEO_EXTS", "natural_key", "natural_sorted", "write_dump",
    "PreprocessPlan", "check_resolution", "default_resolution", "plan_preprocess",
    "resize_masks_to_patches",
    "Scene", "SceneGT", "load_scene", "scene_from_arrays",
    "SyntheticScene", "SyntheticSceneConfig", "render_scene", "write_scene",
]
