"""What a run writes and reads back: checkpoints, the run directory's layout, and its metrics."""
