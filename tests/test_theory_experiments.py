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
from benchmarks.experiments.sample_complexity import _fine_tune, samples_needed

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
        "--num-tasks", "3", "--dim", "8", "--mixtures", "2", "--upstream-samples", "40",
        "--reps", "3", "--max-samples", "60", "--grid", "5", "--fine-tune-steps", "10",
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
    for r in drawn:  # one-sided, at every recorded step
        assert np.all(np.asarray(r["gap"]) <= np.asarray(r["bound"]) + tol), r["label"]
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
    for r in rows:
        if r["iterations_theory_bound"] is not None and r["iterations_theory_step"] is not None:
            # the theorem's count is an upper bound on what the guaranteed step needs
            assert r["iterations_theory_step"] <= r["iterations_theory_bound"]
        if not r["limit_below_eps"]:
            assert r["iterations_oracle_step"] is None


def test_num_tasks_active_set_and_smoothing_error(tmp_path, capsys):
    data = run_tiny("num-tasks", tmp_path, capsys)
    for row in data["runs"]:
        assert 1 <= row["active_tasks"] <= min(row["num_tasks"], data["config"]["dim"] + 1)
        for tau in (0.1, 0.01):
            limit = row[f"limit_gap_tau={tau:g}"]
            assert -1e-9 <= limit <= tau * math.log(row["num_tasks"]) + 1e-9
        assert row["seconds_per_step"] > 0
    assert [e["num_tasks"] for e in data["table"]] == [2, 6]


def test_convex_combination_guarantee(tmp_path, capsys):
    data = run_tiny("convex-combination", tmp_path, capsys)
    assert data["summary"]["guarantee_holds_every_seed"] is True
    for seed in data["seeds"]:
        assert seed["worst"]["minimax"]["loss"] <= seed["F_star"] + 1e-8
        assert seed["worst"]["average"]["loss"] >= seed["F_star"] - 1e-8
        assert seed["worst_ratio_minimax_over_average"]["loss"] <= 1.0 + 1e-9
    per_task = data["first_seed_per_task"]
    assert len(per_task["groups"]) == 4 + 3 * 5
    assert np.all(np.asarray(per_task["minimax"]["excess"]) >= -1e-9)


def test_sample_complexity_outputs_and_forgetting_beyond_d(tmp_path, capsys):
    data = run_tiny("sample-complexity", tmp_path, capsys)
    grid = np.asarray(data["sample_grid"])
    d = data["config"]["dim"]
    ratio = np.asarray(data["results"]["converged"]["worst_task_ratio"]["mean"])
    # with n > d least squares has one solution: GD to convergence forgets the init exactly
    np.testing.assert_allclose(ratio[grid > d], 1.0, rtol=1e-6)
    assert len(data["targets"]) == 3
    for variant in ("early_stopped", "converged"):
        for row in data["results"][variant]["targets"]:
            assert set(row["hardest"]) == {"minimax", "average"}
            assert len(row["per_task"]["minimax"]) == 3 + 2
    assert set(data["summary"]["hardest_task_samples_ratio"]) == {"early_stopped", "converged"}


def test_samples_needed_reads_the_last_crossing():
    grid = np.array([10, 20, 40, 80])
    assert samples_needed(grid, np.array([0.5, 0.4, 0.3, 0.2]), 1.0) == 10.0
    assert samples_needed(grid, np.array([4.0, 2.0, 1.0, 0.5]), 5.0) == 10.0
    assert samples_needed(grid, np.array([4.0, 2.0, 1.5, 1.2]), 1.0) is None
    # crossing between 20 (2.0) and 40 (0.5): log-log interpolation gives 20 * 2^(1/2)
    assert samples_needed(grid, np.array([0.5, 2.0, 0.5, 0.4]), 1.0) == pytest.approx(
        20 * math.sqrt(2)
    )


def test_fine_tune_limit_is_the_solution_closest_to_the_init():
    rng = np.random.default_rng(0)
    for n, d in ((3, 6), (9, 4)):
        xs, ys, x0 = (
            rng.standard_normal((2, n, d)),
            rng.standard_normal((2, n)),
            rng.standard_normal(d),
        )
        limit = _fine_tune(x0, xs, ys, None)
        pinv = x0 + np.einsum("...in,...n->...i", np.linalg.pinv(xs), ys - xs @ x0)
        np.testing.assert_allclose(limit, pinv, atol=1e-10)
        np.testing.assert_allclose(_fine_tune(x0, xs, ys, 5000), limit, atol=1e-8)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("convergence", ["--steps", "0"]),
        ("temperature", ["--eps-fraction", "1.5"]),
        ("num-tasks", ["--tasks", "1", "4"]),
        ("convex-combination", ["--seeds", "-1"]),
        ("sample-complexity", ["--max-samples", "3"]),
    ],
)
def test_bad_arguments_fail_before_writing(name, bad, tmp_path):
    with pytest.raises(ValueError):
        main(["run", name, "--out", str(tmp_path), *bad])
    assert not list(tmp_path.iterdir())
