"""Small helpers shared across detkit: atomic writes, progress bars, quiet TensorFlow."""
