"""Devices and processes: sharding a run over devices, several processes as one run through
``jax.distributed``, and noticing a dead peer. Below the agents, which shard their state."""
