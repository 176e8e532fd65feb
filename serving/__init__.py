"""Serving replicas: whole models in memory, kept current from the shards, answering reads."""
