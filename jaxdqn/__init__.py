"""jaxdqn: deep Q-learning in JAX across many tasks at once, and transfer between agents.

The packages, from the bottom layer up (each imports only from the layers below it):

- pure maths: ``losses``, ``task_axis``, ``popart``, ``networks`` (progressive columns
  included), ``replay``;
- ``envs``: batched environments (gymnax, pgx, envpool) and task sets;
- ``agents``: the learner built from parts, and the systems on it (DQN, PQN, a seed axis);
- ``io``: checkpoints, the run directory, metrics;
- ``running``: the host loop, its runners, evaluation, checkpoints read back, and what a
  run needs around them (devices and processes, preemption, a dead peer, memory);
- ``reports``: plots, rliable reports, ``inspect`` text, episode GIFs;
- ``transfer``: distillation, fine-tuning, progressive and assisted transfer;
- ``config`` (schema, checker, rules, YAML) and ``cli``, the command line.
"""

__version__ = "0.1.0"
