"""Training: optimiser, schedules, checkpoints, TensorBoard summaries and the loop."""
