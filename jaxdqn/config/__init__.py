"""Run configuration: YAML -> frozen dataclasses, checked key by key.

Every field declares what it allows (a range or a list of choices) in its
metadata. Loading reports the first problem as one sentence naming the key,
the value and what is allowed. ``key.sub=value`` overrides from the command
line are applied to the raw mapping before checking, so they get the same
checks as the file.

The package: :mod:`~jaxdqn.config.schema` (the sections and what each key allows),
:mod:`~jaxdqn.config.checker` (the generic checker), :mod:`~jaxdqn.config.rules` (rules across
keys, ``from_dict``) and :mod:`~jaxdqn.config.yaml_io` (files, overrides, dumps).
"""

from jaxdqn.config.schema import (
    field,
    TaskConfig,
    NetworkConfig,
    OptimizerConfig,
    ReplayConfig,
    ScheduleConfig,
    LEARNING_SECTIONS,
    with_defaults,
    learning_values,
    DQNConfig,
    PQNConfig,
    MultitaskConfig,
    WandbConfig,
    TrainConfig,
    AtariConfig,
    Config,
    describe_keys,
)
from jaxdqn.config.checker import (
    build,
)
from jaxdqn.config.rules import (
    check_train,
    check_batch_fits,
    check_update_every,
    no_effect,
    check_network,
    DQN_ONLY_KEYS,
    pqn_minibatch_size,
    check,
    from_dict,
)
from jaxdqn.config.yaml_io import (
    apply_overrides,
    read_yaml,
    load,
    to_dict,
    dump,
)
from jaxdqn.errors import ConfigError

__all__ = [
    "AtariConfig",
    "Config",
    "ConfigError",
    "DQNConfig",
    "DQN_ONLY_KEYS",
    "LEARNING_SECTIONS",
    "MultitaskConfig",
    "NetworkConfig",
    "OptimizerConfig",
    "PQNConfig",
    "ReplayConfig",
    "ScheduleConfig",
    "TaskConfig",
    "TrainConfig",
    "WandbConfig",
    "apply_overrides",
    "build",
    "check",
    "check_batch_fits",
    "check_network",
    "check_train",
    "check_update_every",
    "describe_keys",
    "dump",
    "field",
    "from_dict",
    "learning_values",
    "load",
    "no_effect",
    "pqn_minibatch_size",
    "read_yaml",
    "to_dict",
    "with_defaults",
]
