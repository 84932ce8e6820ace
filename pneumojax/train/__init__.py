"""Training: state, pure per-device steps, parallel wrappers, optimizers, checkpoints, the loop."""
