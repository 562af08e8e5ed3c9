"""``jaxdqn`` command line: train, evaluate, plot.

Errors meant for people (bad config, missing checkpoint, ...) print one line
and exit with status 2; Ctrl-C exits with 130 after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxdqn.errors import JaxdqnError


def _config_help() -> str:
    from jaxdqn.config import describe_keys

    return "config keys (override any with KEY=VALUE; list items by index, e.g. tasks.0.env_id=Breakout-MinAtar):\n" + "\n".join(
        describe_keys()
    )


def cmd_train(args: argparse.Namespace) -> int:
    from jaxdqn import config
    from jaxdqn.train import train

    if args.resume and args.run_dir is None:
        raise JaxdqnError("--resume needs --run-dir RUN_DIR (the run to continue)")
    if args.distributed:
        import jax

        jax.distributed.initialize()
    cfg = config.load(args.config, args.overrides)
    run_dir = train(cfg, run_dir=args.run_dir, resume=args.resume)
    print(f"run finished: {run_dir}")
    print(f"  metrics:     {run_dir / 'metrics.csv'}  (tensorboard --logdir {run_dir / 'tensorboard'})")
    print(f"  checkpoints: {run_dir / 'checkpoints'}")
    print(f"  next:        jaxdqn evaluate {run_dir}    jaxdqn plot {run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from jaxdqn.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, episodes=args.episodes, epsilon=args.epsilon, seed=args.seed)
    print(f"checkpoint at env step {result.env_steps}, epsilon {args.epsilon}")
    print(result.summary())
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from jaxdqn.plotting import plot_runs

    out = plot_runs(args.run_dirs, args.output, metric=args.metric, tasks=args.tasks)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxdqn",
        description="Deep Q-learning in JAX over many tasks at once.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train the agent a YAML config describes",
        description="Train the agent a YAML config describes. Writes RUN_DIR/config.yaml, metrics.csv, "
        "tensorboard/ and checkpoints/.",
        epilog=_config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config keys, e.g. train.total_env_steps=20000 seed=3")
    p.add_argument("--run-dir", type=Path, default=None, help="run directory (default: OUTPUT_DIR/NAME-TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its latest checkpoint")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host run: call jax.distributed.initialize() first (start the same command on every host)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="play episodes with a saved agent and print mean/std return",
        description="Play episodes with a saved agent and print each task's mean and std return. "
        "CHECKPOINT may be a run directory (latest checkpoint), its checkpoints/ folder or one step folder.",
    )
    p.add_argument("checkpoint", help="run directory, checkpoints folder or checkpoint step folder")
    p.add_argument("--episodes", type=int, default=10, help="episodes per task (default 10)")
    p.add_argument("--epsilon", type=float, default=0.0, help="exploration while playing: 0 is greedy (default), 0.05 the Atari protocol")
    p.add_argument("--seed", type=int, default=None, help="seed of the evaluation episodes (default: the run's seed)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "plot",
        help="plot learning curves of one or more runs into a PNG",
        description="Plot learning curves of one or more runs (their metrics.csv) on one figure, one panel per task "
        "plus the mean over tasks.",
    )
    p.add_argument("run_dirs", nargs="+", help="run directories")
    p.add_argument("--output", "-o", type=Path, default=None, help="PNG path (default: FIRST_RUN_DIR/METRIC.png)")
    p.add_argument("--metric", default="episode_return", help="column of metrics.csv to plot (default episode_return; e.g. eval_return, loss, q_mean)")
    p.add_argument("--tasks", nargs="*", default=None, help="only these task labels (default: all, plus the mean)")
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except JaxdqnError as err:
        print(f"jaxdqn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxdqn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
