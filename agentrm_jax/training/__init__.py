"""Training reward models: the data pipeline, the sharded train step, checkpoints and export."""
