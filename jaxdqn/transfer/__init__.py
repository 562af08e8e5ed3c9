"""Moving what one agent learned into another: distillation and transfer.

Sources and teachers are checkpoints, read back by :mod:`jaxdqn.running.stored`
(below this package, so evaluation needs nothing from here).

- :mod:`~jaxdqn.transfer.fit`: whether a checkpoint's network, action sets and
  observation shape fit a target, listing every difference.
- :mod:`~jaxdqn.transfer.teachers`: checkpointed tasks as fixed Q-functions.
- :mod:`~jaxdqn.transfer.distill`: one compiled distillation iteration
  (act, step, insert, update) over T teachers and one student.
- :mod:`~jaxdqn.transfer.finetune`: start a DQN learner from a source
  checkpoint, optionally with a fresh head and a frozen torso.
- progressive networks (frozen source columns, a new column, lateral adapters
  with a learned scale) are a network: :mod:`jaxdqn.networks.progressive`.
- :mod:`~jaxdqn.transfer.assisted`: TD loss plus a decaying distillation term
  towards a source teacher.
- :mod:`~jaxdqn.transfer.metrics`: jumpstart, asymptotic performance, transfer
  ratio and time to threshold from learning curves.
- :mod:`~jaxdqn.transfer.config` and :mod:`~jaxdqn.transfer.run`: YAML configs
  and the host loops behind ``jaxdqn distill`` and ``jaxdqn transfer``.
"""
