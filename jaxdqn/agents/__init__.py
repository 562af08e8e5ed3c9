"""Learning methods: the multi-task DQN learner and its compiled iteration."""

from jaxdqn.agents.dqn import DQNAgent, Schedule, TrainState, evaluate
from jaxdqn.agents.learner import Learner, epsilon_greedy, linear_epsilon

__all__ = ["DQNAgent", "Learner", "Schedule", "TrainState", "epsilon_greedy", "evaluate", "linear_epsilon"]
