"""What every batched environment adapter returns from a step."""

from __future__ import annotations

from typing import NamedTuple

import jax


class EnvStep(NamedTuple):
    """One step of a batch of environments that reset themselves.

    ``obs`` is what the agent acts on next: after an episode ends it is already
    the first observation of the new episode. ``next_obs`` is the observation
    the step really produced (the last one of an ending episode) and is the
    one that goes into replay, so a stored transition never crosses episodes.
    """

    obs: jax.Array
    next_obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
