"""Training utilities shared by the model families: loops, early stopping, checkpoints."""
