"""Progressive networks (Rusu et al., 2016): frozen source columns plus a new column.

Write ``h_l^(k)`` for the output of layer ``l`` of column ``k``; columns
``1..K-1`` are trained source networks (their torsos), column ``K`` is new.
The new column computes

``h_l^(K) = relu(W_l h_{l-1}^(K) + sum_{j<K} U_l^(j) relu(V_l^(j) (a_l^(j) * h_{l-1}^(j))))``

for every layer but the first (which sees only the observation), and its
Q-values are

``Q(s, .) = W_out h_L^(K) + sum_{j<K} U_out^(j) relu(V_out^(j) (a_out^(j) * h_L^(j)))``.

Each lateral adapter has a learned scalar scale ``a`` (it puts the frozen
activations on the new column's scale), a projection ``V`` to
``adapter_size`` units and a layer ``U`` into the new column.

The frozen columns' parameters live inside :class:`ProgressiveQNetwork` as
constants; the training state, the optimizer and the gradients only ever see
the new column and its adapters, so the source parameters cannot change.
Parameters are split the :class:`jaxdqn.agents.Learner` way: ``"head"`` holds
the output layer and its adapters, ``"torso"`` the rest.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax

from jaxdqn.envs.taskset import fit_obs
from jaxdqn.errors import ConfigError
from jaxdqn.networks import OPTIONAL_FIELDS, NetworkSpec, conv, make_torso, preprocess

Params = Any

PROGRESSIVE_TORSOS = ("mlp", "minatar_cnn")


def layer_plan(spec: NetworkSpec) -> list[tuple[str, int]]:
    """The torso as ``(kind, width)`` layers: ``dense`` (flattens its input) or ``conv3x3``."""
    if spec.torso == "mlp":
        return [("dense", int(n)) for n in spec.hidden_sizes]
    if spec.torso == "minatar_cnn":
        return [("conv3x3", spec.cnn_channels), ("dense", spec.cnn_hidden)]
    raise ConfigError(f"progressive networks support the torsos {', '.join(PROGRESSIVE_TORSOS)}; got {spec.torso!r}")


def _layer_names(plan: Sequence[tuple[str, int]]) -> list[str]:
    """The names :mod:`jaxdqn.networks` gives the torso's layers: ``Conv_i`` / ``Dense_i`` in order."""
    counts = {"dense": 0, "conv3x3": 0}
    names = []
    for kind, _ in plan:
        names.append(f"{'Dense' if kind == 'dense' else 'Conv'}_{counts[kind]}")
        counts[kind] += 1
    return names


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


def _layer(kind: str, width: int, conv_impl: str, name: str) -> nn.Module:
    if kind == "conv3x3":
        return conv(width, (3, 3), (1, 1), conv_impl, name)
    return nn.Dense(width, name=name)


def column_activations(spec: NetworkSpec, torso_params: Params, obs: jax.Array) -> list[jax.Array]:
    """Every layer's output (after its ReLU) of a torso trained as ``spec``; the last one is the features.

    Runs the torso module itself (so its widths and its convolution are the ones it was
    trained with) and reads each layer's output from flax's captured intermediates.
    """
    torso = make_torso(spec)
    _, captured = torso.apply({"params": torso_params}, obs, capture_intermediates=True, mutable=["intermediates"])
    return [nn.relu(captured["intermediates"][name]["__call__"][0]) for name in _layer_names(layer_plan(spec))]


class Lateral(nn.Module):
    """``U relu(V (a * h))`` with a learned scalar ``a``; ``h`` is flattened first."""

    width: int
    adapter_size: int
    scale_init: float = 0.01

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.constant(self.scale_init), ())
        v = nn.relu(nn.Dense(self.adapter_size, name="V")(scale * _flat(h)))
        return nn.Dense(self.width, name="U")(v)


class NewColumn(nn.Module):
    """The trainable column; ``sources[j][l]`` is layer ``l``'s output in frozen column ``j``."""

    plan: tuple[tuple[str, int], ...]
    num_actions: int
    adapter_size: int = 16
    scale_init: float = 0.01
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, obs: jax.Array, sources: Sequence[Sequence[jax.Array]]) -> jax.Array:
        h = preprocess(obs)
        for depth, (kind, width) in enumerate(self.plan):
            z = _layer(kind, width, self.conv_impl, f"layer_{depth}")(_flat(h) if kind == "dense" else h)
            if depth > 0 and kind == "dense":  # (the supported torsos have a conv layer first only)
                for j, column in enumerate(sources):
                    if depth - 1 < len(column):
                        z = z + Lateral(width, self.adapter_size, self.scale_init, name=f"lateral_{depth}_{j}")(column[depth - 1])
            h = nn.relu(z)
        q = nn.Dense(self.num_actions, name="out")(_flat(h))
        for j, column in enumerate(sources):
            q = q + Lateral(self.num_actions, self.adapter_size, self.scale_init, name=f"out_lateral_{j}")(column[-1])
        return q


def _is_head(name: str) -> bool:
    return name == "out" or name.startswith("out_lateral_")


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenColumn:
    """A source torso: how it was built, its parameters, the observation shape it was trained on."""

    spec: NetworkSpec
    torso_params: Params
    obs_shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class ProgressiveQNetwork:
    """Drop-in for :class:`jaxdqn.networks.QNetwork` in a :class:`jaxdqn.agents.Learner`.

    ``init`` / ``apply`` handle the new column's parameters only; the frozen
    columns are fields of this object.
    """

    spec: NetworkSpec  # the new column's architecture
    num_actions: int
    columns: tuple[FrozenColumn, ...]
    adapter_size: int = 16
    scale_init: float = 0.01

    def __post_init__(self):
        if self.spec.dueling:
            raise ConfigError("progressive networks do not support network.dueling: true")
        for column_spec in (self.spec, *(c.spec for c in self.columns)):
            for key, default in OPTIONAL_FIELDS.items():
                if getattr(column_spec, key) != default:
                    where = "dqn.loss: hl_gauss" if key.startswith("value_") else f"network.{key}"
                    raise ConfigError(f"progressive networks do not support {where} (in the new column or a source)")
            layer_plan(column_spec)

    @property
    def module(self) -> NewColumn:
        return NewColumn(tuple(layer_plan(self.spec)), self.num_actions, self.adapter_size, self.scale_init, self.spec.conv_impl)

    def source_activations(self, obs: jax.Array) -> list[list[jax.Array]]:
        out = []
        for column in self.columns:
            acts = column_activations(column.spec, column.torso_params, fit_obs(obs, column.obs_shape))
            out.append([jax.lax.stop_gradient(a) for a in acts])
        return out

    def init(self, key: jax.Array, obs: jax.Array) -> Params:
        params = self.module.init(key, obs, self.source_activations(obs))["params"]
        return {
            "torso": {k: v for k, v in params.items() if not _is_head(k)},
            "head": {k: v for k, v in params.items() if _is_head(k)},
        }

    def apply(self, params: Params, obs: jax.Array) -> jax.Array:
        merged = {**params["torso"], **params["head"]}
        return self.module.apply({"params": merged}, obs, self.source_activations(obs))

    head_output = apply  # the new column regresses Q-values (no value support)
