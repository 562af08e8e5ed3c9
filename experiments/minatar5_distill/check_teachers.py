"""Checks (optionally waits for) the teacher runs of the MinAtar-5 distillation.

    python experiments/minatar5_distill/check_teachers.py [--wait] RUN_DIR...

A teacher run is ready when its newest complete checkpoint is at the run's
``train.total_env_steps`` (earlier periodic checkpoints do not count). It must
be an independent-mode run of the five MinAtar games in the order the configs
of this folder name them (multi.yaml: tasks 0-4, quarter.yaml: task 1,
Breakout). With ``--wait`` the script polls until every run is ready; without
it, it exits 1 on the first run that is not. Exits 2 on a run that can never
fit (wrong mode, games or order).
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from jaxdqn.errors import CheckpointError
from jaxdqn.reports.checkpoint_summary import param_counts
from jaxdqn.running.stored import read_info

GAMES = ("asterix", "breakout", "freeway", "seaquest", "spaceinvaders")  # task order multi.yaml and quarter.yaml assume


def game_of(env_id: str) -> str | None:
    """The MinAtar game an env id names, gymnax (``SpaceInvaders-MinAtar``) or pgx (``minatar-space_invaders``)."""
    flat = re.sub(r"[^a-z]", "", env_id.lower())
    return next((g for g in GAMES if g in flat), None)


def status(run_dir: str) -> tuple[str, str]:
    """("ready" | "waiting" | "unfit", message)."""
    try:
        info = read_info(run_dir)
    except CheckpointError as err:
        return "waiting", str(err)
    meta = info.meta
    total = meta["config"]["train"]["total_env_steps"]
    if meta.get("mode") != "independent":
        return (
            "unfit",
            f"{info.path}: mode {meta.get('mode')!r}; the teachers must come from an independent run (one network per game)",
        )
    games = [game_of(e) for e in meta["tasks"]]
    if tuple(games) != GAMES:
        return "unfit", f"{info.path}: tasks {meta['tasks']}; expected the MinAtar games in the order {', '.join(GAMES)}"
    if meta.get("env_steps", 0) < total:
        return "waiting", f"{info.path}: at {meta.get('env_steps')} of {total} env steps per game"
    _, per_task = param_counts(info)
    evals = meta.get("eval_return") or [None] * len(games)
    shown = ", ".join(f"{g} {r:.2f}" if r is not None else f"{g} ?" for g, r in zip(GAMES, evals))
    return "ready", f"{info.path}: {total} env steps per game, {per_task:,} parameters per game; last greedy returns: {shown}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="teacher run directories (independent_s0 ...)")
    parser.add_argument("--wait", action="store_true", help="poll until every run is ready")
    parser.add_argument("--poll", type=float, default=120.0, help="seconds between polls with --wait")
    args = parser.parse_args(argv)
    pending = list(args.runs)
    while True:
        still = []
        for run in pending:
            state, message = status(run)
            if state == "unfit":
                print(f"check_teachers: error: {message}", file=sys.stderr)
                return 2
            if state == "ready":
                print(f"ready    {message}", flush=True)
            else:
                still.append((run, message))
        if not still:
            return 0
        if not args.wait:
            for _, message in still:
                print(f"not yet  {message}", flush=True)
            return 1
        pending = [run for run, _ in still]
        print(f"{time.strftime('%H:%M:%S')} waiting for {len(pending)} teacher run(s): {still[0][1]}", flush=True)
        time.sleep(args.poll)


if __name__ == "__main__":
    sys.exit(main())
