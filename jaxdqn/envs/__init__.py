"""Batched environments behind one interface, and task sets built from them."""

from jaxdqn.envs.base import EnvStep
from jaxdqn.envs.envpool_env import AtariStep
from jaxdqn.envs.taskset import TaskSet, TaskSpec, known_env_ids, make_taskset

__all__ = ["AtariStep", "EnvStep", "TaskSet", "TaskSpec", "known_env_ids", "make_taskset"]
