"""Training: train state, optimizer, steps, the loop, checkpoints, metrics writing, the memory plan
and length buckets (learning only; reports from a trained run are in `inference`)."""
