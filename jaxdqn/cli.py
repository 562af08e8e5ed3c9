"""``jaxdqn`` command line: train, evaluate, plot, distill, transfer, inspect, compare, report.

Errors meant for people (bad config, missing checkpoint, ...) print one line
and exit with status 2; Ctrl-C exits with 130 after saving a checkpoint;
SIGTERM or SIGUSR1 (a scheduler's preemption or time limit) exits with 75
after saving one (jaxdqn.running.preemption); in a multi-process run, the death of a
peer process stops the others with 76, naming the checkpoint to resume from
(jaxdqn.parallel.peer_watch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxdqn.parallel import peer_watch

from jaxdqn.running import preemption
from jaxdqn.io.run_layout import checkpoint_dirs
from jaxdqn.errors import JaxdqnError


def _config_help() -> str:
    from jaxdqn.config import describe_keys

    return "config keys (override any with KEY=VALUE; list items by index, e.g. tasks.0.env_id=Breakout-MinAtar):\n" + "\n".join(
        describe_keys()
    )


def _report_run(title: str, run_dir: Path, metrics: str, next_steps: str, checkpoints_note: str = "") -> None:
    """Where a finished run put its results, and what to run next."""
    print(f"{title}: {run_dir}")
    print(f"  metrics:     {metrics}")
    print(f"  checkpoints: {run_dir / 'checkpoints'}{checkpoints_note}")
    print(f"  next:        {next_steps}")


def _check_resume(args: argparse.Namespace) -> None:
    """``--resume`` continues the run in ``--run-dir``; ``--resume auto`` continues it when it
    has checkpoints and starts it otherwise, so a requeued job can run one command every time."""
    if args.resume and args.run_dir is None:
        raise JaxdqnError(f"--resume{' auto' if args.resume == 'auto' else ''} needs --run-dir RUN_DIR (the run to continue)")
    if args.resume == "auto":
        started = bool(checkpoint_dirs(Path(args.run_dir)))
        print(f"--resume auto: {'continuing the run in' if started else 'starting a new run in'} {args.run_dir}", file=sys.stderr)
        args.resume = started
    else:
        args.resume = bool(args.resume)


def _start_distributed(args: argparse.Namespace) -> bool:
    """``--distributed``: joins the other processes before anything starts a JAX backend."""
    if not args.distributed:
        for flag in ("coordinator_address", "num_processes", "process_id", "coordinator_timeout"):
            if getattr(args, flag) is not None:
                raise JaxdqnError(f"--{flag.replace('_', '-')} needs --distributed")
        return False
    from jaxdqn.parallel import distributed

    cluster = distributed.resolve(
        args.coordinator_address,
        args.num_processes,
        args.process_id,
        timeout_s=distributed.DEFAULT_TIMEOUT_S if args.coordinator_timeout is None else args.coordinator_timeout,
    )
    distributed.start(cluster)
    return True


def cmd_train(args: argparse.Namespace) -> int:
    _check_resume(args)
    multi_process = _start_distributed(args)  # first: importing the training modules starts JAX's backend
    from jaxdqn import config
    from jaxdqn.parallel import distributed
    from jaxdqn.running.train import train
    from jaxdqn.transfer.config import has_transfer_block

    if has_transfer_block(args.config):  # a training config with a transfer: block
        if multi_process:
            raise JaxdqnError("--distributed: transfer runs (a config with a transfer: block) use one process")
        return cmd_transfer(args)
    cfg = config.load(args.config, args.overrides)
    if multi_process:
        distributed.check_supported(cfg)
    run_dir = train(cfg, run_dir=args.run_dir, resume=args.resume)
    peer_watch.leave()  # the others may still be finishing: this process's end is planned
    if not distributed.is_primary():
        return 0
    if cfg.train.seeds:  # each seed is a run of its own in RUN_DIR/seed_S
        first = run_dir / f"seed_{cfg.train.seeds[0]}"
        print(f"run finished: {run_dir} ({len(cfg.train.seeds)} seeds)")
        print(f"  seeds:       {', '.join(str(run_dir / f'seed_{s}') for s in cfg.train.seeds)}")
        print(f"  metrics:     {run_dir / 'seed_*' / 'metrics.csv'}  checkpoints: {run_dir / 'seed_*' / 'checkpoints'}")
        print(f"  next:        jaxdqn report {run_dir}    jaxdqn evaluate {first}")
        return 0
    _report_run(
        "run finished",
        run_dir,
        metrics=f"{run_dir / 'metrics.csv'}  (tensorboard --logdir {run_dir / 'tensorboard'})",
        next_steps=f"jaxdqn evaluate {run_dir}    jaxdqn plot {run_dir}",
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from jaxdqn.running.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, episodes=args.episodes, epsilon=args.epsilon, seed=args.seed)
    print(f"checkpoint at env step {result.env_steps}, epsilon {'run default' if args.epsilon is None else args.epsilon}")
    print(result.summary())
    if args.gif is not None:
        from jaxdqn.reports.episode_gif import write_episode_gifs
        from jaxdqn.running.evaluate import load_checkpoint

        cfg, agent, params, _ = load_checkpoint(args.checkpoint, seed=args.seed)
        for path, steps in write_episode_gifs(cfg, agent, params, args.gif, seed=cfg.seed):
            print(f"wrote {path} (a greedy episode of {steps} steps)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from jaxdqn.reports.plotting import plot_runs

    out = plot_runs(args.run_dirs, args.output, metric=args.metric, tasks=args.tasks)
    print(f"wrote {out}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from jaxdqn.transfer import config as tconfig
    from jaxdqn.transfer.run import distill, format_distill_summary

    _check_resume(args)
    cfg = tconfig.load_distill(args.config, args.overrides)
    run_dir, result = distill(cfg, run_dir=args.run_dir, resume=args.resume)
    print(format_distill_summary(result))
    _report_run(
        "run finished",
        run_dir,
        metrics=f"{run_dir / 'metrics.csv'}, {run_dir / 'distill.csv'}, {run_dir / 'summary.json'}",
        checkpoints_note="  (the student)",
        next_steps=f"jaxdqn evaluate {run_dir}    jaxdqn inspect {run_dir}",
    )
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from jaxdqn.transfer import config as tconfig
    from jaxdqn.transfer.run import transfer

    _check_resume(args)
    cfg = tconfig.load_transfer(args.config, args.overrides)
    run_dir = transfer(cfg, run_dir=args.run_dir, resume=args.resume)
    _report_run(
        f"run finished ({cfg.transfer.method})",
        run_dir,
        metrics=str(run_dir / "metrics.csv"),
        next_steps=f"jaxdqn compare SCRATCH_RUN_DIR {run_dir}",
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from jaxdqn.reports.checkpoint_summary import describe
    from jaxdqn.transfer.fit import check_config_fits

    print(describe(args.checkpoint))
    if args.config is not None:
        from jaxdqn import config
        from jaxdqn.transfer import config as tconfig

        data = tconfig.read_yaml(args.config)
        data.pop("transfer", None)
        print(check_config_fits(args.checkpoint, config.from_dict(data)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from jaxdqn.transfer import metrics

    results, threshold = metrics.compare_runs(
        args.run_dirs, baseline=args.baseline, metric=args.metric, task=args.task, threshold=args.threshold, last=args.last
    )
    print(metrics.format_table(results, threshold))
    output = args.output or Path(args.run_dirs[0]).parent / "compare.png"
    print(f"wrote {metrics.plot_comparison(results, threshold, output, metric=args.metric)}")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(metrics.format_table(results, threshold, markdown=True) + "\n")
        print(f"wrote {args.markdown}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from jaxdqn.reports import report

    output = args.output or Path(args.run_dirs[0]).parent / "report"
    path = report.write_report(args.run_dirs, output, args.reference or (), args.normalise, args.reps)
    print(path.read_text())
    print(f"wrote {path}, {output / 'curves.png'}, {output / 'profiles.png'}")
    return 0


def _run_arguments(p: argparse.ArgumentParser, config_help: str, overrides_help: str = "override config keys") -> None:
    """What every command that runs something takes: the config, overrides, the run directory, --resume."""
    p.add_argument("config", help=config_help)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=overrides_help)
    p.add_argument("--run-dir", type=Path, default=None, help="run directory (default: OUTPUT_DIR/NAME-TIMESTAMP)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        choices=(True, "auto"),
        metavar="auto",
        help="continue the run in --run-dir from its latest readable checkpoint; --resume auto: continue it if it "
        "has checkpoints, start it otherwise (one command for a job that may be requeued)",
    )


def _run_command(
    sub, name: str, func, config_help: str, epilog: str, overrides_help: str = "override config keys", **parser_text
) -> argparse.ArgumentParser:
    """A command that runs a config: its parser (config keys listed after the options) and its arguments."""
    p = sub.add_parser(name, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter, **parser_text)
    _run_arguments(p, config_help, overrides_help)
    p.set_defaults(func=func)
    return p


def _runs_command(sub, name: str, func, runs_help: str, output_help: str, **parser_text) -> argparse.ArgumentParser:
    """A command that reads run directories and writes one output: its parser, the runs and ``--output``."""
    p = sub.add_parser(name, **parser_text)
    p.add_argument("run_dirs", nargs="+", type=Path, help=runs_help)
    p.add_argument("--output", "-o", type=Path, default=None, help=output_help)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxdqn",
        description="Deep Q-learning in JAX over many tasks at once.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _run_command(
        sub,
        "train",
        cmd_train,
        "YAML config file (see configs/)",
        _config_help(),
        "override config keys, e.g. train.total_env_steps=20000 seed=3",
        help="train the agent a YAML config describes",
        description="Train the agent a YAML config describes. Writes RUN_DIR/config.yaml, metrics.csv, "
        "tensorboard/ and checkpoints/. A config with a transfer: block starts from a source checkpoint "
        "(see jaxdqn transfer --help).",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one run over several processes or hosts: start the same command on every host; the coordinator address, "
        "process count and id come from the flags below, else JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
        "JAX_PROCESS_ID, else the cluster manager (SLURM, Open MPI, Cloud TPU)",
    )
    p.add_argument("--coordinator-address", default=None, metavar="HOST:PORT", help="with --distributed: where process 0 listens")
    p.add_argument(
        "--num-processes", type=int, default=None, metavar="N", help="with --distributed: how many processes take part"
    )
    p.add_argument("--process-id", type=int, default=None, metavar="I", help="with --distributed: this process's id, 0 to N-1")
    p.add_argument(
        "--coordinator-timeout",
        type=int,
        default=None,
        metavar="SECONDS",
        help="with --distributed: how long to wait for the coordinator and the other processes (default 300)",
    )

    p = sub.add_parser(
        "evaluate",
        help="play episodes with a saved agent and print mean/std return",
        description="Play episodes with a saved agent and print each task's mean and std return. "
        "CHECKPOINT may be a run directory (latest checkpoint), its checkpoints/ folder or one step folder.",
    )
    p.add_argument("checkpoint", help="run directory, checkpoints folder or checkpoint step folder")
    p.add_argument("--episodes", type=int, default=10, help="episodes per task (default 10)")
    p.add_argument(
        "--epsilon",
        type=float,
        default=None,
        help="exploration while playing (default: the run's own evaluation epsilon: train.eval_epsilon, "
        "0 = greedy, for gymnax tasks; atari.eval_epsilon, 0.05, for Atari)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the evaluation episodes (default: the run's seed)")
    p.add_argument(
        "--gif", type=Path, default=None, metavar="DIR", help="also write one GIF per task of a greedy episode into DIR"
    )
    p.set_defaults(func=cmd_evaluate)

    p = _runs_command(
        sub,
        "plot",
        cmd_plot,
        "run directories",
        "PNG path (default: FIRST_RUN_DIR/METRIC.png)",
        help="plot learning curves of one or more runs into a PNG",
        description="Plot learning curves of one or more runs (their metrics.csv) on one figure, one panel per task "
        "plus the mean over tasks.",
    )
    p.add_argument(
        "--metric",
        default="episode_return",
        help="column of metrics.csv to plot (default episode_return; e.g. eval_return, loss, q_mean)",
    )
    p.add_argument("--tasks", nargs="*", default=None, help="only these task labels (default: all, plus the mean)")

    from jaxdqn.transfer.config import describe_distill_keys, describe_transfer_keys

    _run_command(
        sub,
        "distill",
        cmd_distill,
        "YAML distillation config (see configs/distill_*.yaml)",
        "config keys (override any with KEY=VALUE, e.g. teachers.0.checkpoint=runs/teacher distill.loss=mse):\n"
        + "\n".join(describe_distill_keys()),
        help="distil one or more teacher checkpoints into a student",
        description="Distil teachers into a student: one teacher into a network of any size, or T teachers (one per task) "
        "into one multi-task student with a shared torso and a head per task. The acting policy (the teachers by "
        "default, or the student) fills per-task replay with states and the teachers' Q-values; the student minimises "
        "the chosen loss (kl, mse or nll). Reports the student's greedy return as a percentage of each teacher's on the "
        "same episodes. Writes RUN_DIR/config.yaml, student.yaml, metrics.csv, distill.csv, summary.json and "
        "checkpoints/ that jaxdqn evaluate reads.",
    )

    _run_command(
        sub,
        "transfer",
        cmd_transfer,
        "YAML training config with a transfer: block (see configs/transfer_*.yaml)",
        "transfer keys (override any with KEY=VALUE, e.g. transfer.method=progressive "
        "transfer.sources=[runs/source]; the rest of the file is a training config, see jaxdqn train --help):\n"
        + "\n".join(describe_transfer_keys()),
        help="train a target task starting from a source checkpoint",
        description="Train the tasks of a training config with a transfer: block: finetune (start from the source's "
        "parameters; optional fresh head, frozen torso, own learning rate), progressive (frozen source columns plus "
        "a new column with lateral adapters), distill (TD loss plus a decaying distillation term towards the source), "
        "or scratch (the baseline, same loop). Writes RUN_DIR/config.yaml (the target training config), "
        "transfer.yaml, metrics.csv (with an evaluation at env step 0) and checkpoints/.",
    )

    p = sub.add_parser(
        "inspect",
        help="print a checkpoint's metadata; with --config, check that it fits",
        description="Print what a checkpoint records: kind (train, distill, transfer), network spec and parameter "
        "count, tasks with their env params and action sets, observation shape, env steps, evaluation returns, "
        "teachers or sources. With --config, check that its network and action sets fit a training config and say "
        "what differs if they do not (exit status 2).",
    )
    p.add_argument("checkpoint", help="run directory, checkpoints folder or checkpoint step folder")
    p.add_argument("--config", type=Path, default=None, help="training (or transfer) config to check the checkpoint against")
    p.set_defaults(func=cmd_inspect)

    p = _runs_command(
        sub,
        "compare",
        cmd_compare,
        "run directories (transfer runs and from-scratch runs)",
        "PNG path (default: PARENT_OF_FIRST_RUN/compare.png)",
        help="transfer metrics of runs against a from-scratch baseline, and a PNG",
        description="Compare learning curves. Runs that share a config name are seeds of one method (their mean curve "
        "is used). Against the baseline (the from-scratch runs unless --baseline names another) it prints jumpstart "
        "(first point minus the baseline's), asymptotic performance (mean of the last --last points), transfer ratio "
        "(area under the curve / the baseline's) and env steps to reach --threshold; +- is the std over seeds.",
    )
    p.add_argument("--baseline", default=None, help="config name of the baseline runs (default: the scratch runs)")
    p.add_argument("--metric", default="eval_return", help="column of metrics.csv (default eval_return)")
    p.add_argument("--task", default="mean", help="task label to compare (default: mean over tasks)")
    p.add_argument(
        "--threshold", type=float, default=None, help="return for time-to-threshold (default: 90%% of the baseline's best)"
    )
    p.add_argument("--last", type=int, default=1, help="points averaged for asymptotic performance (default 1)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown to this file")

    from jaxdqn.reports.report import NORMALISATIONS

    p = _runs_command(
        sub,
        "report",
        cmd_report,
        "run directories",
        "folder for the report (default: PARENT_OF_FIRST_RUN/report)",
        help="aggregate runs over seeds and tasks: intervals, IQM, curves, performance profiles",
        description="Aggregate final greedy returns over seeds and tasks (Agarwal et al. 2021): per task the mean "
        "with a 95%% bootstrap interval; over tasks and runs the IQM, mean, median and optimality gap of normalised "
        "scores with stratified-bootstrap 95%% intervals (rliable, the 'report' extra). Runs named NAME_sSEED (or "
        "sharing a config name) are seeds of one method. Writes report.md, curves.png and profiles.png.",
    )
    p.add_argument("--reference", nargs="*", type=Path, default=None, help="runs to normalise by (e.g. independent training)")
    p.add_argument(
        "--normalise",
        choices=NORMALISATIONS,
        default="auto",
        help="auto: by --reference if given, human-normalised for Atari, else min-max over the runs given",
    )
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
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
    except preemption.Preempted as stop:
        peer_watch.leave()
        print(f"jaxdqn {args.command}: {stop}", file=sys.stderr)
        return preemption.EXIT_STATUS
    except Exception as err:
        peer_watch.stop_if_a_peer_is_gone(err)  # a collective failed on a dead peer: one line, not a traceback
        raise


if __name__ == "__main__":
    sys.exit(main())
