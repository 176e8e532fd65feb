"""The parameter-server shard: owns a slice of every model, applies the optimizer, publishes."""
