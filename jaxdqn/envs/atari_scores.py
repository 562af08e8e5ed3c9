"""The Atari evaluation protocol's numbers: human-normalised scores.

A game's human-normalised score is ``(agent - random) / (human - random)``:
0 plays like uniform random actions, 1 like the human tester. The random and
human reference scores of the 57 games ship in ``jaxdqn/data/atari_scores.csv``
(sources in its header). Across tasks, both the mean and the median are
reported: the mean is dominated by the few games where agents reach many
times the human score, the median is not.

The protocol itself (a separate pool, epsilon 0.05, raw rewards, no life-loss
ends, episodes capped at 27,000 agent steps) is what ``jaxdqn.running.train.Evaluator``
does for Atari tasks; see docs/atari.md.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
from importlib import resources
from typing import Sequence

import numpy as np

from jaxdqn.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ReferenceScores:
    random: float
    human: float


@functools.lru_cache(maxsize=1)
def reference_scores() -> dict[str, ReferenceScores]:
    """``{game: ReferenceScores}`` with games named as in envpool ids (``MsPacman``)."""
    text = resources.files("jaxdqn").joinpath("data/atari_scores.csv").read_text()
    rows = csv.DictReader(io.StringIO("".join(line for line in text.splitlines(True) if not line.startswith("#"))))
    return {row["game"]: ReferenceScores(float(row["random"]), float(row["human"])) for row in rows}


def game_name(env_id: str) -> str:
    """``Pong-v5`` -> ``Pong``; a bare game name is returned unchanged."""
    return env_id.split("-")[0]


def has_reference(env_id: str) -> bool:
    return game_name(env_id) in reference_scores()


def human_normalized_score(env_id: str, score: float) -> float:
    """``(score - random) / (human - random)`` for the game of ``env_id``."""
    game = game_name(env_id)
    table = reference_scores()
    if game not in table:
        raise ConfigError(
            f"no human and random reference scores for {env_id!r}; the table has the 57 games: {', '.join(sorted(table))}"
        )
    ref = table[game]
    return (score - ref.random) / (ref.human - ref.random)


@dataclasses.dataclass(frozen=True)
class AtariScores:
    """Raw returns and human-normalised scores of an evaluation, per task and over tasks."""

    env_ids: tuple[str, ...]
    raw: np.ndarray  # [T] mean raw return per task
    normalized: np.ndarray  # [T] human-normalised score of that mean (nan without a reference)

    @property
    def mean(self) -> float:
        finite = self.normalized[np.isfinite(self.normalized)]
        return float(finite.mean()) if finite.size else math.nan

    @property
    def median(self) -> float:
        finite = self.normalized[np.isfinite(self.normalized)]
        return float(np.median(finite)) if finite.size else math.nan


def score(env_ids: Sequence[str], returns: np.ndarray) -> AtariScores:
    """Scores of ``returns [T, episodes]`` (raw game returns) of the games ``env_ids``."""
    raw = np.asarray(returns, np.float64).reshape(len(env_ids), -1).mean(axis=1)
    normalized = np.array([human_normalized_score(e, r) if has_reference(e) else math.nan for e, r in zip(env_ids, raw)])
    return AtariScores(tuple(env_ids), raw, normalized)
