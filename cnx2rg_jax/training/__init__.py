"""Training: train state, optimizer, sharding, steps, checkpoints, metrics writing."""
