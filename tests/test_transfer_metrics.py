"""Transfer metrics on synthetic learning curves whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from jaxdqn import cli
from jaxdqn.errors import JaxdqnError
from jaxdqn.io.run_outputs import MetricsWriter
from jaxdqn.transfer import metrics

# Transfer run: starts at 50 and climbs; scratch run: starts at 10, catches up at the end.
X = [0, 10, 20, 30]
TRANSFER = metrics.curve(X, [50, 100, 150, 200])
SCRATCH = metrics.curve(X, [10, 20, 100, 200])


def test_jumpstart_is_the_difference_of_first_points():
    assert metrics.jumpstart(TRANSFER, SCRATCH) == 40.0


def test_asymptotic_performance_averages_the_last_points():
    assert metrics.asymptotic(TRANSFER, last=1) == 200.0
    assert metrics.asymptotic(SCRATCH, last=2) == 150.0
    assert metrics.asymptotic(SCRATCH, last=10) == np.mean([10, 20, 100, 200])


def test_area_is_trapezoidal():
    # 10 * ((50+100)/2 + (100+150)/2 + (150+200)/2) = 3750
    assert metrics.area(TRANSFER) == pytest.approx(3750.0)
    # 10 * (15 + 60 + 150) = 2250
    assert metrics.area(SCRATCH) == pytest.approx(2250.0)
    # between x=5 and x=25: interpolated ends 75 and 175 -> 5*(75+100)/2 + 10*125 + 5*(150+175)/2
    assert metrics.area(TRANSFER, 5, 25) == pytest.approx(5 * 87.5 + 1250 + 5 * 162.5)


def test_transfer_ratio_is_auc_with_over_auc_without():
    assert metrics.transfer_ratio(TRANSFER, SCRATCH) == pytest.approx(3750.0 / 2250.0)
    assert metrics.transfer_ratio(SCRATCH, SCRATCH) == pytest.approx(1.0)


def test_transfer_ratio_uses_the_range_both_curves_cover():
    short = metrics.curve([0, 10, 20], [50, 100, 150])
    # over [0, 20]: transfer 10*(75+125) = 2000, scratch 10*(15+60) = 750
    assert metrics.transfer_ratio(short, SCRATCH) == pytest.approx(2000.0 / 750.0)


def test_time_to_threshold_interpolates_between_points():
    assert metrics.time_to_threshold(TRANSFER, 150) == 20.0
    assert metrics.time_to_threshold(SCRATCH, 150) == pytest.approx(25.0)  # 100 at 20, 200 at 30
    assert metrics.time_to_threshold(TRANSFER, 40) == 0.0  # already there at the first point
    assert math.isnan(metrics.time_to_threshold(SCRATCH, 201))  # never


def test_time_to_threshold_takes_the_first_crossing():
    wobbly = metrics.curve([0, 10, 20, 30], [0, 100, 0, 100])
    assert metrics.time_to_threshold(wobbly, 50) == pytest.approx(5.0)


def test_compare_curves_bundles_everything():
    m = metrics.compare_curves(TRANSFER, SCRATCH, threshold=150, last=1)
    assert (m.jumpstart, m.asymptotic_transfer, m.asymptotic_scratch, m.asymptotic_gain) == (40, 200, 200, 0)
    assert m.transfer_ratio == pytest.approx(5 / 3)
    assert (m.time_to_threshold_transfer, m.time_to_threshold_scratch) == (20, pytest.approx(25))


def test_bad_curves_are_refused():
    with pytest.raises(JaxdqnError, match="increase"):
        metrics.curve([0, 10, 10], [1, 2, 3])
    with pytest.raises(JaxdqnError, match="as many"):
        metrics.curve([0, 10], [1])


def test_mean_curve_averages_seeds_pointwise():
    a = metrics.curve([0, 10, 20], [0, 10, 20])
    b = metrics.curve([0, 10, 20], [10, 30, 40])
    m = metrics.mean_curve([a, b])
    np.testing.assert_allclose(m.y, [5, 20, 30])


def _fake_run(root, name, method, seed, values, step=10):
    run_dir = root / f"{name}-s{seed}"
    run_dir.mkdir()
    writer = MetricsWriter(run_dir, tensorboard=False)
    for i, v in enumerate(values):
        writer.write({"env_steps": i * step, "updates": i}, {"CartPole-v1": {"eval_return": float(v)}})
    writer.close()
    data = {"name": name, "seed": seed}
    if method != "train":
        data["transfer"] = {"method": method}
    (run_dir / ("transfer.yaml" if method != "train" else "config.yaml")).write_text(yaml.safe_dump(data))
    return run_dir


def test_compare_runs_groups_seeds_and_finds_the_scratch_baseline(tmp_path):
    dirs = [
        _fake_run(tmp_path, "ft", "finetune", 0, [40, 100, 150, 200]),
        _fake_run(tmp_path, "ft", "finetune", 1, [60, 100, 150, 200]),
        _fake_run(tmp_path, "scratch", "scratch", 0, [0, 20, 100, 200]),
        _fake_run(tmp_path, "scratch", "scratch", 1, [20, 20, 100, 200]),
    ]
    results, threshold = metrics.compare_runs(dirs)
    assert [g.name for g in results] == ["scratch", "ft"]
    assert threshold == pytest.approx(180.0)  # 90% of the baseline mean curve's best point
    ft = results[1]
    assert len(ft.runs) == 2
    np.testing.assert_allclose(ft.curve.y, [50, 100, 150, 200])
    assert ft.metrics.jumpstart == pytest.approx(40.0)
    assert ft.metrics.transfer_ratio == pytest.approx(3750.0 / 2250.0)
    assert [p.jumpstart for p in ft.per_seed] == [pytest.approx(30.0), pytest.approx(50.0)]
    assert results[0].metrics.transfer_ratio == pytest.approx(1.0)
    # time to 180: transfer 150 at 20, 200 at 30 -> 26; scratch 100 at 20, 200 at 30 -> 28
    assert ft.metrics.time_to_threshold_transfer == pytest.approx(26.0)
    assert ft.metrics.time_to_threshold_scratch == pytest.approx(28.0)


def test_compare_cli_prints_metrics_and_writes_png(tmp_path, capsys):
    dirs = [
        _fake_run(tmp_path, "plain", "train", 0, [10, 20, 100, 200]),
        _fake_run(tmp_path, "prog", "progressive", 0, [50, 100, 150, 200]),
    ]
    png, md = tmp_path / "out" / "cmp.png", tmp_path / "out" / "cmp.md"
    code = cli.main(["compare", *map(str, dirs), "--threshold", "150", "-o", str(png), "--markdown", str(md)])
    out = capsys.readouterr().out
    assert code == 0
    assert png.stat().st_size > 1000
    assert "| prog | progressive |" in md.read_text()
    line = next(text for text in out.splitlines() if text.startswith("prog "))
    assert "40.0" in line and "1.67" in line and "20" in line  # jumpstart, ratio, steps to 150


def test_compare_cli_refuses_an_unknown_baseline(tmp_path, capsys):
    d = _fake_run(tmp_path, "a", "scratch", 0, [1, 2])
    assert cli.main(["compare", str(d), "--baseline", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err
