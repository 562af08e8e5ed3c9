"""Aggregates of results: curve areas, thresholds, IQM intervals against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxdqn.reports import report


def test_curve_area_is_the_mean_return_over_env_steps():
    steps = np.array([0.0, 10.0, 30.0])
    values = np.array([0.0, 10.0, 10.0])
    # trapezoids: 10 * 5 + 20 * 10 = 250 over 30 env steps
    assert report.curve_area(steps, values) == pytest.approx(250 / 30)


def test_steps_to_threshold_is_the_first_evaluation_at_or_above_it():
    steps = np.array([10.0, 20.0, 30.0, 40.0])
    values = np.array([1.0, 5.0, 4.0, 6.0])
    assert report.steps_to(steps, values, 5.0) == 20.0
    assert math.isnan(report.steps_to(steps, values, 7.0))


def test_iqm_is_the_mean_of_the_middle_half_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    scores = {"a": rng.normal(1.0, 0.1, size=(8, 3)), "b": np.arange(24.0).reshape(8, 3)}
    result = report.iqm_interval(scores, reps=500)
    flat = np.sort(scores["b"].ravel())
    assert result["b"][0] == pytest.approx(flat[6:18].mean())  # 24 scores: drop 6 at each end
    for point, low, high in result.values():
        assert low <= point <= high
    assert result["a"][2] - result["a"][1] < 0.3


def test_normalised_maps_the_range_to_zero_one():
    low, high = np.array([0.0, -500.0]), np.array([500.0, 0.0])
    np.testing.assert_allclose(report.normalised(np.array([[250.0, -500.0]]), low, high), [[0.5, 0.0]])


def _fake_run(path, finals: dict[str, float]):
    """A run directory whose metrics.csv has two evaluations per task, the last at ``finals``."""
    path.mkdir(parents=True)
    lines = ["env_steps,task,eval_return"]
    for step, scale in ((1000, 0.5), (2000, 1.0)):
        lines += [f"{step},{task},{value * scale}" for task, value in finals.items()]
        lines.append(f"{step},mean,{np.mean(list(finals.values())) * scale}")
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")
    return path


def test_report_command_writes_intervals_curves_and_profiles(tmp_path, capsys):
    from jaxdqn.cli import main

    runs = []
    for seed in range(3):
        runs.append(_fake_run(tmp_path / f"independent_s{seed}", {"a": 10.0 + seed, "b": 100.0}))
        runs.append(_fake_run(tmp_path / f"hard_s{seed}", {"a": 5.0, "b": 50.0 + seed}))
    out = tmp_path / "report"
    reference = [str(r) for r in runs if r.name.startswith("independent")]
    assert main(["report", *map(str, runs), "--reference", *reference, "--reps", "200", "-o", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| a | 11.00 [" in text  # independent's mean of 10, 11, 12
    # normalised by independent's per-task means (11 and 100): hard scores 5/11 and 0.5-0.52
    row = next(line for line in text.splitlines() if line.startswith("| hard |"))
    iqm = float(row.split("|")[2].split()[0])
    assert 5 / 11 <= iqm <= 0.52
    assert (out / "curves.png").stat().st_size > 0 and (out / "profiles.png").stat().st_size > 0


def test_report_without_rliable_names_the_extra(tmp_path, monkeypatch, capsys):
    import builtins

    from jaxdqn.cli import main

    real_import = builtins.__import__

    def no_rliable(name, *args, **kwargs):
        if name.startswith("rliable"):
            raise ImportError("No module named 'rliable'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rliable)
    run = _fake_run(tmp_path / "x_s0", {"a": 1.0})
    assert main(["report", str(run), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'jaxdqn[report]'" in err[0]
