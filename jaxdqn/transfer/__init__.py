"""Moving what one agent learned into another: distillation and transfer.

- :mod:`~jaxdqn.transfer.sources`: teachers and sources are checkpoints;
  reading their metadata, checking that they fit, turning them into fixed
  Q-functions.
- :mod:`~jaxdqn.transfer.distill`: one compiled distillation iteration
  (act, step, insert, update) over T teachers and one student.
- :mod:`~jaxdqn.transfer.finetune`: start a DQN learner from a source
  checkpoint, optionally with a fresh head and a frozen torso.
- :mod:`~jaxdqn.transfer.progressive`: progressive networks (frozen source
  columns, a new column, lateral adapters with a learned scale).
- :mod:`~jaxdqn.transfer.assisted`: TD loss plus a decaying distillation term
  towards a source teacher.
- :mod:`~jaxdqn.transfer.metrics`: jumpstart, asymptotic performance, transfer
  ratio and time to threshold from learning curves.
- :mod:`~jaxdqn.transfer.config` and :mod:`~jaxdqn.transfer.run`: YAML configs
  and the host loops behind ``jaxdqn distill`` and ``jaxdqn transfer``.
"""
