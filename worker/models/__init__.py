"""Model math run by workers: the compiled per-event learner; the optimizer math is common.optim."""
