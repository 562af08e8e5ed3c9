"""Learning methods: the multi-task learner (built from parts) and the two systems on it, DQN and PQN."""

from jaxdqn.agents.dqn import DQNAgent, TrainState
from jaxdqn.agents.learner import Learner, epsilon_greedy
from jaxdqn.agents.pqn import PQNAgent, PQNState
from jaxdqn.agents.schedule import Schedule, linear_epsilon

__all__ = ["DQNAgent", "Learner", "PQNAgent", "PQNState", "Schedule", "TrainState", "epsilon_greedy", "linear_epsilon"]
