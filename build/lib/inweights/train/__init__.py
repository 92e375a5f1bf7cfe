"""Training: tokenising views, packing, the accelerate loop, stage checkpoints."""
