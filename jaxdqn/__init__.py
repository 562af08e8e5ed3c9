"""jaxdqn: deep Q-learning in JAX across many tasks at once, and transfer between agents."""

__version__ = "0.1.0"
