"""Experience replay: the uniform buffer over any transitions (:mod:`~jaxdqn.replay.uniform`,
re-exported here) and the frame-deduplicated pixel buffer for Atari (:mod:`~jaxdqn.replay.pixels`)."""

from jaxdqn.replay.uniform import (
    ReplayState,
    Transition,
    add_batch,
    batch_from_step,
    capacity,
    init,
    nbytes,
    sample,
    stack_tasks,
)

__all__ = ["ReplayState", "Transition", "add_batch", "batch_from_step", "capacity", "init", "nbytes", "sample", "stack_tasks"]
