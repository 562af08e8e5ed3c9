"""Q-networks as pure functions over plain parameter pytrees.

A Q-network is a torso (observation -> features) followed by a head
(features -> one value per action). The two halves keep separate parameter
subtrees, ``{"torso": ..., "head": ...}``, so multi-task modes can share the
torso and stack the heads, or stack both, without a second network class.

Observations arrive in the dtype the environment gives; ``uint8`` pixels are
converted to ``float32`` in ``[0, 1]`` inside the first layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdqn.config.schema import NetworkConfig

Params = Any

TORSOS = ("mlp", "minatar_cnn", "nature_cnn")


def preprocess(obs: jax.Array) -> jax.Array:
    """Casts observations to float32; uint8 pixels are scaled to [0, 1]."""
    if obs.dtype == jnp.uint8:
        return obs.astype(jnp.float32) / 255.0
    return obs.astype(jnp.float32)


CONV_IMPLS = ("auto", "xla", "patches")


class PatchConv(nn.Module):
    """A VALID convolution written as patch extraction + one matrix product.

    Same parameters as ``nn.Conv`` (``kernel [kh, kw, C, F]``, ``bias [F]``)
    and the same result. XLA's CPU backend runs convolutions inside loops
    (the scanned training step) several times slower than outside them, while
    matrix products keep their speed, so on CPU this form is the fast one
    (benchmarks/bench_conv.py measures both).
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        sh, sw = self.strides
        channels = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        out_h = (x.shape[1] - kh) // sh + 1
        out_w = (x.shape[2] - kw) // sw + 1
        # One strided slice per kernel offset; concatenated in (i, j, c) order,
        # which is the row order of the kernel reshaped to [kh * kw * C, F].
        windows = [
            x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :] for i in range(kh) for j in range(kw)
        ]
        patches = jnp.concatenate(windows, axis=-1)
        return patches @ kernel.reshape(kh * kw * channels, self.features) + bias


def resolve_conv_impl(conv_impl: str) -> str:
    """``auto``: patches on the CPU backend, XLA's convolution elsewhere."""
    if conv_impl == "auto":
        return "patches" if jax.default_backend() == "cpu" else "xla"
    return conv_impl


def conv(features: int, kernel_size, strides, conv_impl: str, name: str) -> nn.Module:
    if resolve_conv_impl(conv_impl) == "patches":
        return PatchConv(features, tuple(kernel_size), tuple(strides), name=name)
    return nn.Conv(features, tuple(kernel_size), strides=tuple(strides), padding="VALID", name=name)


class MLPTorso(nn.Module):
    """Fully connected layers with ReLU on a flattened observation.

    ``layers`` (see :class:`TorsoLayers`) adds LayerNorm, a per-task first layer and task
    conditioning of the last hidden layer.
    """

    hidden_sizes: Sequence[int] = (120, 84)
    layers: "TorsoLayers" = None

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        layers = self.layers or TorsoLayers()
        x = preprocess(obs).reshape(obs.shape[0], -1)
        for i, size in enumerate(self.hidden_sizes):
            x = nn.Dense(size, name=layers.first_name("Dense", i))(x)
            x = layers.hidden(x, last=i == len(self.hidden_sizes) - 1, index=i)
        return x


class MinAtarTorso(nn.Module):
    """Young & Tian (2019): one 3x3 conv with 16 channels, then 128 units.

    Input ``[B, 10, 10, C]`` (channels last, as gymnax gives MinAtar frames).
    ``channels`` and ``hidden`` resize it (smaller students for distillation);
    its parameter count is ``9 C ch + ch + 64 ch hidden + hidden`` on 10x10 frames.
    """

    channels: int = 16
    hidden: int = 128
    conv_impl: str = "auto"
    layers: "TorsoLayers" = None

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        shapes = ((self.channels, (3, 3), (1, 1)),)
        return convs_then_dense(preprocess(obs), shapes, self.hidden, self.conv_impl, self.layers or TorsoLayers())


class NatureTorso(nn.Module):
    """Mnih et al. (2015): convs 32x8x8/4, 64x4x4/2, 64x3x3/1, then 512 units.

    Input ``[B, stack, 84, 84]`` (frames first, as envpool gives Atari stacks).
    """

    hidden: int = 512
    conv_impl: str = "auto"
    layers: "TorsoLayers" = None

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        shapes = ((32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)), (64, (3, 3), (1, 1)))
        x = jnp.transpose(preprocess(obs), (0, 2, 3, 1))
        return convs_then_dense(x, shapes, self.hidden, self.conv_impl, self.layers or TorsoLayers())


def convs_then_dense(x: jax.Array, shapes, hidden: int, conv_impl: str, layers: "TorsoLayers") -> jax.Array:
    """The CNN torsos' body: ``(features, kernel, stride)`` convolutions on channels-last ``x``,
    then one dense layer. Called inside a torso's ``nn.compact`` method, so its layers are the torso's
    (named ``Conv_i`` or the per-task input layer, then ``Dense_0``)."""
    for i, (features, kernel, stride) in enumerate(shapes):
        x = conv(features, kernel, stride, conv_impl, layers.first_name("Conv", i))(x)
        x = layers.hidden(x, last=False, index=i)
    x = x.reshape(x.shape[0], -1)
    return layers.hidden(nn.Dense(hidden, name="Dense_0")(x), last=True, index=len(shapes))


TASK_CONDITIONING = ("none", "embedding", "film")
TASK_INPUT = "task_input"  # the per-task first layer's name (jaxdqn.task_axis: names starting "task_" are per task)


class TaskConditioning(nn.Module):
    """A learned per-task modulation of a hidden layer's pre-activations ``h``.

    ``embedding``: ``h + e``; ``film``: ``h * (1 + s) + e`` (Perez et al. 2018), with
    ``e`` and ``s`` vectors of ``h``'s width, starting at zero. The module is named
    ``task_...``, so every task holds its own copy even where the torso is shared
    (:mod:`jaxdqn.task_axis`): under the vmap over tasks, task ``i`` sees its own
    ``e_i``, which is a learned embedding of the task id.
    """

    kind: str = "embedding"

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        shift = self.param("shift", nn.initializers.zeros_init(), (h.shape[-1],))
        if self.kind == "film":
            scale = self.param("scale", nn.initializers.zeros_init(), (h.shape[-1],))
            h = h * (1.0 + scale)
        return h + shift


@dataclasses.dataclass(frozen=True)
class TorsoLayers:
    """What every torso may add around its layers (all off by default).

    - ``layer_norm``: LayerNorm on each hidden layer's pre-activations (as PQN,
      Gallici et al. 2024, uses to keep Q-learning stable at high update rates);
    - ``task_input``: the first layer is named ``task_input``, which makes it per task
      in hard sharing (D'Eramo et al. 2020); see ``jaxdqn.learner`` for how it is kept to
      the task's own channels;
    - ``conditioning``: :class:`TaskConditioning` of the last hidden layer.
    """

    layer_norm: bool = False
    task_input: bool = False
    conditioning: str = "none"

    def first_name(self, kind: str, index: int) -> str:
        return TASK_INPUT if self.task_input and index == 0 else f"{kind}_{index}"

    def hidden(self, h: jax.Array, last: bool, index: int) -> jax.Array:
        """``relu(condition(norm(h)))``: the activation of a hidden layer's pre-activations."""
        if self.layer_norm:
            h = nn.LayerNorm(name=f"LayerNorm_{index}")(h)
        if last and self.conditioning != "none":
            h = TaskConditioning(self.conditioning, name="task_conditioning")(h)
        return nn.relu(h)


def _per_bin(x: jax.Array, num_actions: int, num_bins: int) -> jax.Array:
    """``[B, A * bins]`` -> ``[B, A, bins]`` logits (a plain ``[B, A]`` when ``num_bins`` is 0)."""
    return x if num_bins == 0 else x.reshape(x.shape[0], num_actions, num_bins)


class QHead(nn.Module):
    """Linear layer from features to one Q-value per action, or to ``num_bins`` logits
    per action for a classification value loss (see :class:`ValueSupport`)."""

    num_actions: int
    num_bins: int = 0

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        return _per_bin(nn.Dense(self.num_actions * max(1, self.num_bins))(features), self.num_actions, self.num_bins)


class DuelingHead(nn.Module):
    """Wang et al. (2016): ``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``.

    With ``num_bins`` the same combination is made bin by bin on logits.
    """

    num_actions: int
    num_bins: int = 0

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        bins = max(1, self.num_bins)
        value = _per_bin(nn.Dense(bins, name="value")(features), 1, self.num_bins)
        advantage = _per_bin(nn.Dense(self.num_actions * bins, name="advantage")(features), self.num_actions, self.num_bins)
        return value + advantage - advantage.mean(axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class ValueSupport:
    """A fixed support of ``num_bins`` equal bins over ``[v_min, v_max]`` for
    classification value learning (HL-Gauss, Farebrother et al. 2024).

    The head gives logits ``l [A, bins]``; ``Q(s, a) = sum_j softmax(l_a)_j c_j``
    with ``c_j`` the bin centres.
    """

    num_bins: int
    v_min: float
    v_max: float

    @property
    def edges(self) -> jax.Array:
        return jnp.linspace(self.v_min, self.v_max, self.num_bins + 1, dtype=jnp.float32)

    @property
    def centers(self) -> jax.Array:
        edges = self.edges
        return (edges[:-1] + edges[1:]) / 2

    @property
    def bin_width(self) -> float:
        return (self.v_max - self.v_min) / self.num_bins

    def expectation(self, logits: jax.Array) -> jax.Array:
        """``[..., bins]`` logits -> ``[...]`` expected values."""
        return jax.nn.softmax(logits, axis=-1) @ self.centers


MINATAR_CHANNELS = 16
MINATAR_HIDDEN = 128


# Fields of NetworkSpec that are written to checkpoints only where they differ from
# these defaults, so that the records of networks without them stay as they were.
OPTIONAL_FIELDS = {
    "layer_norm": False,
    "task_input_layers": False,
    "task_conditioning": "none",
    "value_bins": 0,
    "value_min": -10.0,
    "value_max": 10.0,
}
# Checkpoint records keep the name a field had when it was first written.
RECORD_NAMES = {"task_input_layers": "task_input_layer"}


@dataclasses.dataclass(frozen=True)
class NetworkSpec(NetworkConfig):
    """Everything needed to rebuild a Q-network (stored in checkpoints).

    The config's ``network:`` section (``NetworkConfig``: torso, widths, the sharing
    switches) plus what the rest of the config decides: how convolutions are computed,
    and the value support of a classification head (from ``dqn.loss: hl_gauss``).
    """

    conv_impl: str = "auto"  # how convolutions are computed; parameters are the same either way
    value_bins: int = 0  # > 0: the head gives logits over this many bins per action (ValueSupport)
    value_min: float = -10.0
    value_max: float = 10.0

    @classmethod
    def from_config(cls, network: NetworkConfig, **derived) -> "NetworkSpec":
        chosen = {f.name: getattr(network, f.name) for f in dataclasses.fields(NetworkConfig)}
        return cls(**dict(chosen, hidden_sizes=tuple(network.hidden_sizes)), **derived)

    @property
    def torso_layers(self) -> TorsoLayers:
        return TorsoLayers(self.layer_norm, self.task_input_layers, self.task_conditioning)

    @property
    def support(self) -> ValueSupport | None:
        """The value support of a classification head (``None``: the head gives Q-values)."""
        return ValueSupport(self.value_bins, self.value_min, self.value_max) if self.value_bins else None

    def to_dict(self) -> dict:
        data = {"torso": self.torso, "hidden_sizes": list(self.hidden_sizes), "dueling": self.dueling}
        # The MinAtar widths are written only where they differ from Young &
        # Tian's, so the records of default networks stay as they were.
        if self.torso == "minatar_cnn" and (self.cnn_channels, self.cnn_hidden) != (MINATAR_CHANNELS, MINATAR_HIDDEN):
            data.update(cnn_channels=self.cnn_channels, cnn_hidden=self.cnn_hidden)
        data.update(
            {RECORD_NAMES.get(k, k): getattr(self, k) for k, default in OPTIONAL_FIELDS.items() if getattr(self, k) != default}
        )
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkSpec":
        # Checkpoints written before the MinAtar widths (or the optional fields) were
        # configurable do not have them: they hold the defaults.
        return cls(
            torso=data["torso"],
            hidden_sizes=tuple(data.get("hidden_sizes", (120, 84))),
            dueling=bool(data.get("dueling", False)),
            cnn_channels=int(data.get("cnn_channels", MINATAR_CHANNELS)),
            cnn_hidden=int(data.get("cnn_hidden", MINATAR_HIDDEN)),
            **{k: type(default)(data.get(RECORD_NAMES.get(k, k), default)) for k, default in OPTIONAL_FIELDS.items()},
        )

    def relevant_fields(self) -> tuple[str, ...]:
        """The fields that shape this torso's parameters (``conv_impl`` never does)."""
        common = ("torso", "dueling", *OPTIONAL_FIELDS)
        if self.torso == "mlp":
            return common + ("hidden_sizes",)
        if self.torso == "minatar_cnn":
            return common + ("cnn_channels", "cnn_hidden")
        return common


def make_torso(spec: NetworkSpec) -> nn.Module:
    layers = spec.torso_layers
    if spec.torso == "mlp":
        return MLPTorso(tuple(spec.hidden_sizes), layers=layers)
    if spec.torso == "minatar_cnn":
        return MinAtarTorso(spec.cnn_channels, spec.cnn_hidden, conv_impl=spec.conv_impl, layers=layers)
    if spec.torso == "nature_cnn":
        return NatureTorso(conv_impl=spec.conv_impl, layers=layers)
    raise ValueError(f"unknown torso {spec.torso!r}; allowed: {', '.join(TORSOS)}")


def make_head(spec: NetworkSpec, num_actions: int) -> nn.Module:
    return (DuelingHead if spec.dueling else QHead)(num_actions, spec.value_bins)


def head_output_layers(spec: NetworkSpec) -> dict[str, bool]:
    """The head's last linear layers, by name, and whether each carries the output's shift.

    ``Q = W x + b`` for a plain head; for a dueling head ``Q = V + A - mean A``, where a
    constant added to ``A`` cancels, so only ``value`` carries a shift. PopArt rescales
    these layers (jaxdqn.popart.preserve_linear).
    """
    return {"value": True, "advantage": False} if spec.dueling else {"Dense_0": True}


@dataclasses.dataclass(frozen=True)
class QNetwork:
    """A torso and a head with separate parameter subtrees.

    ``init`` returns ``{"torso": ..., "head": ...}``; ``apply(params, obs)``
    maps a batch ``[B, *obs_shape]`` to Q-values ``[B, num_actions]``.
    """

    spec: NetworkSpec
    num_actions: int

    @property
    def torso(self) -> nn.Module:
        return make_torso(self.spec)

    @property
    def head(self) -> nn.Module:
        return make_head(self.spec, self.num_actions)

    def init(self, key: jax.Array, obs: jax.Array) -> Params:
        torso_key, head_key = jax.random.split(key)
        torso_params = self.torso.init(torso_key, obs)["params"]
        features = self.torso.apply({"params": torso_params}, obs)
        head_params = self.head.init(head_key, features)["params"]
        return {"torso": torso_params, "head": head_params}

    def features(self, torso_params: Params, obs: jax.Array) -> jax.Array:
        return self.torso.apply({"params": torso_params}, obs)

    def head_output(self, params: Params, obs: jax.Array) -> jax.Array:
        """What the head gives: Q-values ``[B, A]``, or logits ``[B, A, bins]`` with a value support."""
        features = self.features(params["torso"], obs)
        return self.head.apply({"params": params["head"]}, features)

    def apply(self, params: Params, obs: jax.Array) -> jax.Array:
        """Q-values ``[B, A]`` (the expectation over the support of a classification head)."""
        out = self.head_output(params, obs)
        support = self.spec.support
        return out if support is None else support.expectation(out)


def num_params(params: Params) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def input_weight_mask(spec: NetworkSpec, obs_valid: np.ndarray, kernel_shape: tuple[int, ...]) -> np.ndarray:
    """Which weights of the torso's first layer read a task's own observation entries.

    ``obs_valid [*obs_shape]`` marks the task's entries in the padded observation;
    the mask has the first layer's kernel shape: rows of the MLP's first dense
    layer, input channels of the first convolution (MinAtar channels last, Atari
    frames first).
    """
    obs_valid = np.asarray(obs_valid, bool)
    if spec.torso == "mlp":
        inputs = obs_valid.reshape(-1)[:, None]
    elif spec.torso == "minatar_cnn":
        inputs = obs_valid.any(axis=tuple(range(obs_valid.ndim - 1)))[None, None, :, None]
    else:
        inputs = obs_valid.any(axis=tuple(range(1, obs_valid.ndim)))[None, None, :, None]
    return np.broadcast_to(inputs, kernel_shape)
