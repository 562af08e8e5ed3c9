"""jaxdqn: deep Q-learning in JAX across many tasks at once, and transfer between agents.

The packages, from the bottom layer up (each imports only from the layers below it):

- ``errors``, and ``config``'s schema and checker (its cross-key rules ask ``envs`` about
  env ids, lazily);
- pure maths: ``losses``, ``task_axis``, ``popart``, ``replay``;
- ``envs``: batched environments (gymnax, pgx, envpool), task sets, Atari's score tables;
- ``networks``: Q-networks, progressive columns included;
- ``io``: checkpoints, the run directory, metrics;
- ``parallel``: sharding over devices, several processes as one run, a dead peer;
- ``agents``: the learner built from parts, and the systems on it (DQN, PQN, a seed axis);
- ``running``: the host loop, its runners, evaluation, checkpoints read back into learners,
  preemption, memory and non-finite checks;
- ``reports``: plots, rliable reports, ``inspect`` text, episode GIFs;
- ``transfer``: distillation, fine-tuning, progressive and assisted transfer;
- ``cli``: the command line.
"""

__version__ = "0.1.0"
