"""Where a run directory keeps its checkpoints (standard library only: the command line reads it
before JAX starts).

A run keeps them in ``RUN_DIR/checkpoints``; a ``train.seeds`` run writes each seed as a run of
its own in ``RUN_DIR/seed_S`` (config, metrics, checkpoints), with the whole config in
``RUN_DIR/config.yaml``.
"""

from __future__ import annotations

from pathlib import Path


def seed_run_dir(run_dir: Path, seed: int) -> Path:
    return Path(run_dir) / f"seed_{seed}"


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The checkpoint folders ``run_dir`` holds: its own, and one per seed of a ``train.seeds`` run."""
    run_dir = Path(run_dir)
    return [d for d in [run_dir / "checkpoints", *sorted(run_dir.glob("seed_*/checkpoints"))] if d.is_dir()]
