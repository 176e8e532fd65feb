"""Workers: read events, featurize, pull weights, compute gradients, push them to the shards."""
