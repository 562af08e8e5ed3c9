"""Transfer metrics from learning curves (Taylor & Stone, 2009).

A curve is a sequence of ``(x, y)`` points: env steps per task and a return
(``eval_return`` by default). Comparing a transfer run's curve ``f`` with a
from-scratch run's curve ``g`` over the same budget:

- jumpstart: ``f(x_0) - g(x_0)``, the difference of the first points;
- asymptotic performance: the mean of the last ``last`` points of each curve,
  and their difference;
- transfer ratio: ``AUC(f) / AUC(g)``, trapezoidal areas over the x range both
  curves cover (meaningful when returns are non-negative);
- time to threshold: the first ``x`` at which a curve reaches ``threshold``
  (linearly interpolated between logged points), for each curve; ``nan`` if it
  never does.

All functions are plain numpy on already-read curves, so they can be checked
on synthetic curves with known answers.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from jaxdqn.errors import JaxdqnError
from jaxdqn.io.run_outputs import MEAN_TASK, read_run_metrics


@dataclasses.dataclass(frozen=True)
class Curve:
    x: np.ndarray  # increasing env steps
    y: np.ndarray

    def __post_init__(self):
        if len(self.x) != len(self.y) or len(self.x) == 0:
            raise JaxdqnError(f"a learning curve needs as many x as y values, at least one; got {len(self.x)} and {len(self.y)}")
        if np.any(np.diff(self.x) <= 0):
            raise JaxdqnError("a learning curve's x values must increase")


def curve(x: Sequence[float], y: Sequence[float]) -> Curve:
    return Curve(np.asarray(x, np.float64), np.asarray(y, np.float64))


def jumpstart(transfer: Curve, scratch: Curve) -> float:
    """``f(x_0) - g(x_0)``: the first point of each curve."""
    return float(transfer.y[0] - scratch.y[0])


def asymptotic(c: Curve, last: int = 1) -> float:
    """Mean of the last ``last`` points."""
    return float(np.mean(c.y[-max(1, last) :]))


def area(c: Curve, lo: float | None = None, hi: float | None = None) -> float:
    """Trapezoidal area under ``c`` between ``lo`` and ``hi`` (default: its own range)."""
    lo = c.x[0] if lo is None else lo
    hi = c.x[-1] if hi is None else hi
    if hi <= lo:
        return 0.0
    xs = np.concatenate([[lo], c.x[(c.x > lo) & (c.x < hi)], [hi]])
    ys = np.interp(xs, c.x, c.y)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def transfer_ratio(transfer: Curve, scratch: Curve) -> float:
    """``AUC(transfer) / AUC(scratch)`` over the x range both curves cover."""
    lo, hi = max(transfer.x[0], scratch.x[0]), min(transfer.x[-1], scratch.x[-1])
    below = area(scratch, lo, hi)
    return area(transfer, lo, hi) / below if below != 0 else math.nan


def time_to_threshold(c: Curve, threshold: float) -> float:
    """First x where the curve reaches ``threshold``, linearly interpolated; ``nan`` if never."""
    hits = np.nonzero(c.y >= threshold)[0]
    if len(hits) == 0:
        return math.nan
    i = int(hits[0])
    if i == 0:
        return float(c.x[0])
    x0, x1, y0, y1 = c.x[i - 1], c.x[i], c.y[i - 1], c.y[i]
    return float(x0 + (threshold - y0) / (y1 - y0) * (x1 - x0))


@dataclasses.dataclass(frozen=True)
class TransferMetrics:
    jumpstart: float
    asymptotic_transfer: float
    asymptotic_scratch: float
    transfer_ratio: float
    threshold: float
    time_to_threshold_transfer: float
    time_to_threshold_scratch: float

    @property
    def asymptotic_gain(self) -> float:
        return self.asymptotic_transfer - self.asymptotic_scratch


def compare_curves(transfer: Curve, scratch: Curve, threshold: float, last: int = 1) -> TransferMetrics:
    return TransferMetrics(
        jumpstart=jumpstart(transfer, scratch),
        asymptotic_transfer=asymptotic(transfer, last),
        asymptotic_scratch=asymptotic(scratch, last),
        transfer_ratio=transfer_ratio(transfer, scratch),
        threshold=threshold,
        time_to_threshold_transfer=time_to_threshold(transfer, threshold),
        time_to_threshold_scratch=time_to_threshold(scratch, threshold),
    )


# --------------------------------------------------------------------------
# Runs on disk
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    path: Path
    name: str  # the run's config name: runs sharing it are seeds of one method
    method: str  # scratch, finetune, progressive, distill (train runs count as scratch)
    seed: int
    curve: Curve


def read_run(run_dir: str | Path, metric: str = "eval_return", task: str = MEAN_TASK) -> Run:
    path = Path(run_dir)
    rows = read_run_metrics(path, metric)
    tasks = sorted({r["task"] for r in rows})
    if task not in tasks:
        raise JaxdqnError(f"{path / 'metrics.csv'} has no task {task!r}; tasks: {', '.join(tasks)}")
    points = [(r["env_steps"], r[metric]) for r in rows if r["task"] == task and not math.isnan(r[metric])]
    if not points:
        raise JaxdqnError(f"{path / 'metrics.csv'} has no {metric} values for task {task!r}")
    name, method, seed = path.name, "scratch", 0
    for config_name in ("transfer.yaml", "config.yaml"):
        if (path / config_name).is_file():
            data = yaml.safe_load((path / config_name).read_text()) or {}
            name = str(data.get("name", name))
            seed = int(data.get("seed", 0))
            method = str((data.get("transfer") or {}).get("method", method))
            break
    xs, ys = zip(*points)
    return Run(path, name, method, seed, curve(xs, ys))


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """Pointwise mean over the x values every curve logged."""
    common = set(curves[0].x.tolist())
    for c in curves[1:]:
        common &= set(c.x.tolist())
    if not common:
        raise JaxdqnError("the runs of one group share no logged env step; were they run with the same log_every?")
    xs = np.array(sorted(common))
    ys = np.mean([np.interp(xs, c.x, c.y) for c in curves], axis=0)
    return Curve(xs, ys)


@dataclasses.dataclass
class GroupResult:
    name: str
    method: str
    runs: list[Run]
    curve: Curve  # mean over seeds
    metrics: TransferMetrics  # of the mean curve against the baseline's mean curve
    per_seed: list[TransferMetrics]  # each seed's curve against the baseline's mean curve


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    return groups


def compare_runs(
    run_dirs: Sequence[str | Path],
    baseline: str | None = None,
    metric: str = "eval_return",
    task: str = MEAN_TASK,
    threshold: float | None = None,
    last: int = 1,
) -> tuple[list[GroupResult], float]:
    """Groups runs by config name (seeds of one method) and compares each group with the baseline.

    The baseline is the group named ``baseline``, else the one whose runs are
    from scratch (``transfer.method: scratch`` or plain training), else the
    first. ``threshold`` defaults to 90% of the best point of the baseline's
    mean curve. Returns the groups (baseline first) and the threshold used.
    """
    runs = [read_run(d, metric, task) for d in run_dirs]
    groups = group_runs(runs)
    if baseline is None:
        scratch = [name for name, rs in groups.items() if all(r.method == "scratch" for r in rs)]
        baseline = scratch[0] if scratch else next(iter(groups))
    if baseline not in groups:
        raise JaxdqnError(f"--baseline {baseline!r} is not the name of any run; names: {', '.join(groups)}")
    base_curve = mean_curve([r.curve for r in groups[baseline]])
    if threshold is None:
        threshold = 0.9 * float(np.max(base_curve.y))
    results = []
    for name in [baseline] + [n for n in groups if n != baseline]:
        rs = groups[name]
        mean = mean_curve([r.curve for r in rs])
        results.append(
            GroupResult(
                name=name,
                method=rs[0].method,
                runs=rs,
                curve=mean,
                metrics=compare_curves(mean, base_curve, threshold, last),
                per_seed=[compare_curves(r.curve, base_curve, threshold, last) for r in rs],
            )
        )
    return results, threshold


def _fmt(value: float, digits: int = 1) -> str:
    return "never" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _pm(values: list[float], digits: int = 1) -> str:
    finite = [v for v in values if not math.isnan(v)]
    if len(values) < 2:
        return ""
    if len(finite) < len(values):
        return f" ({len(values) - len(finite)}/{len(values)} never)" if finite else ""
    return f" ± {np.std(finite):,.{digits}f}"


def format_table(results: list[GroupResult], threshold: float, markdown: bool = False) -> str:
    """Each group's metrics against the baseline (the first group); ``±`` is the std over seeds."""
    header = ["run", "method", "seeds", "jumpstart", "asymptotic", "Δ asymptotic", "transfer ratio", f"steps to {threshold:,.1f}"]
    rows = []
    for g in results:
        m, ps = g.metrics, g.per_seed
        rows.append(
            [
                g.name,
                g.method + (" (baseline)" if g is results[0] else ""),
                str(len(g.runs)),
                _fmt(m.jumpstart) + _pm([p.jumpstart for p in ps]),
                _fmt(m.asymptotic_transfer) + _pm([p.asymptotic_transfer for p in ps]),
                _fmt(m.asymptotic_gain),
                _fmt(m.transfer_ratio, 2) + _pm([p.transfer_ratio for p in ps], 2),
                _fmt(m.time_to_threshold_transfer, 0) + _pm([p.time_to_threshold_transfer for p in ps], 0),
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def plot_comparison(
    results: list[GroupResult], threshold: float, output: str | Path, metric: str = "eval_return", title: str = ""
) -> Path:
    """Mean curve of each group with the seeds' range shaded, and the threshold line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for g in results:
        (line,) = ax.plot(
            g.curve.x, g.curve.y, label=f"{g.name} ({g.method}, {len(g.runs)} seeds)", marker="." if len(g.curve.x) < 30 else None
        )
        if len(g.runs) > 1:
            ys = np.array([np.interp(g.curve.x, r.curve.x, r.curve.y) for r in g.runs])
            ax.fill_between(g.curve.x, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.15)
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:,.1f}")
    ax.set_xlabel("env steps per task")
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
