"""Rollouts: the durable store, dataset handles, adaptive allocation, sampling, sharding."""
