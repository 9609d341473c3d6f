"""The theory experiments run from the CLI on tiny configurations, write their JSON and PNG,
and what they plot obeys the statements they illustrate."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import all_experiments
from benchmarks.__main__ import main
from benchmarks.experiments.convex_combination import certified_bound_holds
from benchmarks.experiments.sample_complexity import samples_needed

THEORY = {
    "convergence": 10,
    "temperature": 20,
    "num-tasks": 30,
    "convex-combination": 40,
    "sample-complexity": 50,
}

TINY = {
    "convergence": ["--num-tasks", "4", "--dim", "5", "--steps", "300", "--seeds", "1"],
    "temperature": ["--num-tasks", "4", "--dim", "5", "--temperatures", "4", "--budget", "800"],
    "num-tasks": ["--tasks", "2", "6", "--dim", "4", "--seeds", "1", "--budget", "800"],
    "convex-combination": ["--num-tasks", "4", "--dim", "5", "--seeds", "2", "--mixtures", "5"],
    "sample-complexity": [
        "--num-tasks", "6", "--dim", "10", "--mixtures", "4", "--upstream-samples", "100",
        "--reps", "6", "--max-samples", "300", "--grid", "8", "--prediction-families", "6",
    ],
}  # fmt: skip


def run_tiny(name: str, out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["run", name, "--out", str(out), *TINY[name]]) == 0
    printed = capsys.readouterr().out
    assert f"{name}.json" in printed
    assert (out / f"{name}.png").stat().st_size > 10_000
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    return json.loads((out / f"{name}.json").read_text())


def test_registered_with_their_quickstart_places():
    registry = all_experiments()
    for name, order in THEORY.items():
        assert registry[name].quickstart_order == order
        assert registry[name].quickstart_args == ("--quick",)


def test_convergence_curves_respect_the_bounds_they_draw(tmp_path, capsys):
    data = run_tiny("convergence", tmp_path, capsys)
    runs = data["runs"]
    assert {r["label"] for r in runs} >= {"subgradient", "average", "group_dro", "softmax tau=0.1"}
    tol = 1e-9 * max(1.0, abs(data["optimum"]["F_star"]))
    drawn = [r for r in runs if "bound" in r]
    assert {r["method"] for r in drawn} == {"softmax", "subgradient"}
    mu = data["problem"]["mu"]
    for r in drawn:
        step = np.asarray(r["step"], dtype=np.float64)
        # the drawn line is the stated formula with the run's constants (the theorem's T for
        # the subgradient method: history step s holds xbar_T, T = s + 1)
        if r["method"] == "subgradient":
            lip = data["subgradient_constants"]["lipschitz"]
            expected = 2.0 * lip**2 / (mu * (step + 2.0))
        else:
            assert r["step_size"] == pytest.approx(1.0 / r["smoothness_tau"], rel=1e-12)
            rate = 1.0 - mu / r["smoothness_tau"]
            expected = rate**step * r["initial_smoothed_gap"] + r["smoothing_bound"]
        np.testing.assert_allclose(r["bound"], expected, rtol=1e-12)
        # it holds where drawn (at this budget it never drops below the initial gap, so this
        # is monotone descent; proofs_checks tests the statements where they are tight)
        assert np.all(np.asarray(r["gap"]) <= np.asarray(r["bound"]) + tol), r["label"]
        informative = r["bound_informative_from_step"]
        below = np.asarray(r["bound"]) < r["gap"][0]
        assert informative == (int(step[below][0]) if below.any() else None)
    for r in runs:
        assert r["step"][0] == 0 and r["step"][-1] == data["config"]["steps"]
        assert np.isfinite(r["final_gap"])
        key = ("stochastic " if r["stochastic"] else "") + r["label"]
        if r["step_rule"] != "oracle":
            assert key in data["slopes_last_decade"]


def test_temperature_limit_is_below_tau_log_m_and_grows_with_tau(tmp_path, capsys):
    data = run_tiny("temperature", tmp_path, capsys)
    rows = data["rows"]
    limits = np.array([r["limit_gap"] for r in rows])
    assert np.all(limits <= np.array([r["smoothing_bound"] for r in rows]) + 1e-9)
    assert np.all(limits >= -1e-9)
    assert np.all(np.diff(limits) > 0)
    eps = data["summary"]["eps"]
    m = data["config"]["num_tasks"]
    for r in rows:
        # the flag compares the smoothing's exact limit with eps
        assert r["limit_below_eps"] == (r["limit_gap"] < eps)
        # the theorem gives a count exactly when the smoothing costs less than eps
        has_count = r["iterations_theory_bound"] is not None
        assert has_count == (r["temperature"] * math.log(m) < eps)
    # that count is an upper bound on what the guaranteed step needs: run in
    # tests/test_proofs_checks.py::test_iteration_count_at_any_temperature_reaches_eps (here
    # the counts are 1e5-1e7 steps, beyond any test budget)
    assert any(r["iterations_oracle_step"] is not None for r in rows)


def test_num_tasks_active_set_and_smoothing_error(tmp_path, capsys):
    data = run_tiny("num-tasks", tmp_path, capsys)
    for row in data["runs"]:
        assert 1 <= row["active_tasks"] <= min(row["num_tasks"], data["config"]["dim"] + 1)
        for tau in (0.1, 0.01):
            limit = row[f"limit_gap_tau={tau:g}"]
            assert -1e-9 <= limit <= tau * math.log(row["num_tasks"]) + 1e-9
    assert [e["num_tasks"] for e in data["table"]] == [2, 6]


def test_convex_combination_guarantee(tmp_path, capsys):
    data = run_tiny("convex-combination", tmp_path, capsys)
    assert data["summary"]["guarantee_holds_every_seed"] is True
    for seed in data["seeds"]:
        lower = seed["F_star_lower"]
        # against the certified LOWER bound on F* (F(x_mm) itself would be an identity)
        assert certified_bound_holds(seed["worst"]["minimax"]["loss"], lower)
        assert seed["worst"]["average"]["loss"] >= lower - 1e-9
        assert seed["hardest_task_distance_ratio"] > 0
        assert seed["worst_ratio_minimax_over_average"]["loss"] <= 1.0 + 1e-9
    per_task = data["first_seed_per_task"]
    assert len(per_task["groups"]) == 4 + 3 * 5
    assert np.all(np.asarray(per_task["minimax"]["excess"]) >= -1e-9)


ROW_KEYS = {
    "family", "fine_tune", "budget", "target", "samples_minimax", "samples_average", "ratio",
    "ratio_ci",
}  # fmt: skip


@pytest.fixture(scope="module")
def sample_complexity(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("sample-complexity")
    assert main(["run", "sample-complexity", "--out", str(out), *TINY["sample-complexity"]]) == 0
    assert (out / "sample-complexity.png").stat().st_size > 10_000
    return json.loads((out / "sample-complexity.json").read_text())


def test_certified_bound_rejects_a_point_off_the_optimum():
    """Negative control: at a point whose worst downstream loss is 1e-4 above the certified
    lower bound the check fails; 1e-7 above it passes."""
    assert certified_bound_holds(1.0 + 1e-7, 1.0)
    assert not certified_bound_holds(1.0 + 1e-4, 1.0)


def test_sample_complexity_contract(sample_complexity):
    data = sample_complexity
    assert data["dim"] == 10
    rows = data["results"]
    assert {r["family"] for r in rows} >= {"iid", "outlier"}
    assert {r["fine_tune"] for r in rows} == {"steps", "ball", "ridge", "converged"}
    for r in rows:
        assert set(r) == ROW_KEYS
        assert (r["budget"] is None) == (r["fine_tune"] == "converged")
        # a ratio with a censored side is null, and so is its interval
        censored = r["samples_minimax"] is None or r["samples_average"] is None
        assert (r["ratio"] is None) == censored
        assert r["ratio_ci"] is None or (
            r["ratio"] is not None and r["ratio_ci"][0] <= r["ratio_ci"][1]
        )
        # every target is reachable by at least one start
        assert r["samples_minimax"] is not None or r["samples_average"] is not None
    prediction = data["prediction"]
    assert len(prediction) == 6
    for p in prediction:
        assert set(p) == {"family", "seed", "predicted_ratio", "measured_ratio"}
        assert p["predicted_ratio"] > 0 and p["measured_ratio"] > 0
    assert {p["family"] for p in prediction} == {"iid", "outlier", "heterogeneous"}
    assert -1.0 <= data["spearman"] <= 1.0


def test_sample_complexity_detects_the_outlier_advantage(sample_complexity):
    """Positive control: on the outlier family, 2 GD steps from the minimax start need less
    than half the samples for the hardest task at some target."""
    ratios = [
        r["ratio"]
        for r in sample_complexity["results"]
        if r["family"] == "outlier" and r["fine_tune"] == "steps" and r["budget"] == 2
    ]
    assert any(v is not None and v < 0.5 for v in ratios), ratios


def test_converged_fine_tuning_forgets_the_start_beyond_d(sample_complexity):
    """The control the other way: with more samples than parameters least squares has one
    solution, so converged fine-tuning gives a ratio of 1 within noise."""
    d = sample_complexity["dim"]
    beyond = [
        r
        for r in sample_complexity["results"]
        if r["fine_tune"] == "converged"
        and r["ratio"] is not None
        and min(r["samples_minimax"], r["samples_average"]) > d
    ]
    assert len(beyond) >= 3
    for r in beyond:
        assert 0.95 <= r["ratio"] <= 1.05, r


def test_samples_needed_reads_the_last_crossing():
    grid = np.array([10, 20, 40, 80])
    assert samples_needed(grid, np.array([0.5, 0.4, 0.3, 0.2]), 1.0) == 10.0
    assert samples_needed(grid, np.array([4.0, 2.0, 1.0, 0.5]), 5.0) == 10.0
    assert samples_needed(grid, np.array([4.0, 2.0, 1.5, 1.2]), 1.0) is None
    # crossing between 20 (2.0) and 40 (0.5): log-log interpolation gives 20 * 2^(1/2)
    assert samples_needed(grid, np.array([0.5, 2.0, 0.5, 0.4]), 1.0) == pytest.approx(
        20 * math.sqrt(2)
    )


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("convergence", ["--steps", "0"]),
        ("temperature", ["--eps-fraction", "1.5"]),
        ("num-tasks", ["--tasks", "1", "4"]),
        ("convex-combination", ["--seeds", "-1"]),
        ("sample-complexity", ["--max-samples", "3"]),
        ("sample-complexity", ["--reps", "1"]),
        ("sample-complexity", ["--dim", "30", "--upstream-samples", "20"]),
    ],
)
def test_bad_arguments_fail_before_writing(name, bad, tmp_path):
    with pytest.raises(ValueError):
        main(["run", name, "--out", str(tmp_path), *bad])
    assert not list(tmp_path.iterdir())
