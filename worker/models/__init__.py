"""Model math run by workers: forward pass and gradients; optimizers live on the shards."""
