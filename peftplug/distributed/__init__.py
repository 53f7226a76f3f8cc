"""Tensor parallelism: saving the adapters of a sharded model as one file or as per-rank shards,
and splitting a file again on load."""
