"""vggt-mv: multi-view, multi-timestep VGGT / PAGE-4D / Pi3 reconstruction."""
