"""Learning methods: the multi-task DQN learner and its compiled iteration."""

from jaxdqn.agents.dqn import DQNAgent, TrainState
from jaxdqn.agents.learner import Learner, epsilon_greedy
from jaxdqn.agents.schedule import Schedule, linear_epsilon

__all__ = ["DQNAgent", "Learner", "Schedule", "TrainState", "epsilon_greedy", "linear_epsilon"]
