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
            x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
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
    """Fully connected layers with ReLU on a flattened observation."""

    hidden_sizes: Sequence[int] = (120, 84)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = preprocess(obs).reshape(obs.shape[0], -1)
        for size in self.hidden_sizes:
            x = nn.relu(nn.Dense(size)(x))
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

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = preprocess(obs)
        x = nn.relu(conv(self.channels, (3, 3), (1, 1), self.conv_impl, "Conv_0")(x))
        x = x.reshape(x.shape[0], -1)
        return nn.relu(nn.Dense(self.hidden)(x))


class NatureTorso(nn.Module):
    """Mnih et al. (2015): convs 32x8x8/4, 64x4x4/2, 64x3x3/1, then 512 units.

    Input ``[B, stack, 84, 84]`` (frames first, as envpool gives Atari stacks).
    """

    hidden: int = 512
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = jnp.transpose(preprocess(obs), (0, 2, 3, 1))
        x = nn.relu(conv(32, (8, 8), (4, 4), self.conv_impl, "Conv_0")(x))
        x = nn.relu(conv(64, (4, 4), (2, 2), self.conv_impl, "Conv_1")(x))
        x = nn.relu(conv(64, (3, 3), (1, 1), self.conv_impl, "Conv_2")(x))
        x = x.reshape(x.shape[0], -1)
        return nn.relu(nn.Dense(self.hidden)(x))


class QHead(nn.Module):
    """Linear layer from features to one Q-value per action."""

    num_actions: int

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        return nn.Dense(self.num_actions)(features)


class DuelingHead(nn.Module):
    """Wang et al. (2016): ``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``."""

    num_actions: int

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        value = nn.Dense(1, name="value")(features)
        advantage = nn.Dense(self.num_actions, name="advantage")(features)
        return value + advantage - advantage.mean(axis=-1, keepdims=True)


MINATAR_CHANNELS = 16
MINATAR_HIDDEN = 128


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to rebuild a Q-network (stored in checkpoints)."""

    torso: str = "mlp"
    hidden_sizes: tuple[int, ...] = (120, 84)
    dueling: bool = False
    conv_impl: str = "auto"  # how convolutions are computed; parameters are the same either way
    cnn_channels: int = MINATAR_CHANNELS  # minatar_cnn only
    cnn_hidden: int = MINATAR_HIDDEN  # minatar_cnn only

    def to_dict(self) -> dict:
        data = {"torso": self.torso, "hidden_sizes": list(self.hidden_sizes), "dueling": self.dueling}
        # The MinAtar widths are written only where they differ from Young &
        # Tian's, so the records of default networks stay as they were.
        if self.torso == "minatar_cnn" and (self.cnn_channels, self.cnn_hidden) != (MINATAR_CHANNELS, MINATAR_HIDDEN):
            data.update(cnn_channels=self.cnn_channels, cnn_hidden=self.cnn_hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkSpec":
        # Checkpoints written before the MinAtar widths were configurable have
        # no cnn_* keys: they hold the default 16-channel, 128-unit torso.
        return cls(
            torso=data["torso"],
            hidden_sizes=tuple(data.get("hidden_sizes", (120, 84))),
            dueling=bool(data.get("dueling", False)),
            cnn_channels=int(data.get("cnn_channels", MINATAR_CHANNELS)),
            cnn_hidden=int(data.get("cnn_hidden", MINATAR_HIDDEN)),
        )

    def relevant_fields(self) -> tuple[str, ...]:
        """The fields that shape this torso's parameters (``conv_impl`` never does)."""
        common = ("torso", "dueling")
        if self.torso == "mlp":
            return common + ("hidden_sizes",)
        if self.torso == "minatar_cnn":
            return common + ("cnn_channels", "cnn_hidden")
        return common


def make_torso(spec: NetworkSpec) -> nn.Module:
    if spec.torso == "mlp":
        return MLPTorso(tuple(spec.hidden_sizes))
    if spec.torso == "minatar_cnn":
        return MinAtarTorso(spec.cnn_channels, spec.cnn_hidden, conv_impl=spec.conv_impl)
    if spec.torso == "nature_cnn":
        return NatureTorso(conv_impl=spec.conv_impl)
    raise ValueError(f"unknown torso {spec.torso!r}; allowed: {', '.join(TORSOS)}")


def make_head(spec: NetworkSpec, num_actions: int) -> nn.Module:
    return DuelingHead(num_actions) if spec.dueling else QHead(num_actions)


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

    def apply(self, params: Params, obs: jax.Array) -> jax.Array:
        features = self.features(params["torso"], obs)
        return self.head.apply({"params": params["head"]}, features)


def num_params(params: Params) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
