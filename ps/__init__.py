"""The parameter-server shard: owns a slice of every model, merges workers' optimizer deltas, publishes."""
