"""Planted tasks end to end: statistics helpers, method rules, and a tiny CLI run that meets
the JSON contract of ``python -m benchmarks run planted-tasks``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from deep.apps.planted.experiment import METHODS, PlantedConfig, derive_seeds, mean_ci, method_rule
from deep.apps.planted.language import build_grammar, default_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mean_ci_is_the_student_t_interval():
    from scipy import stats

    v = [1.0, 2.0, 4.0, 3.0, 0.5]
    out = mean_ci(v)
    half = stats.t.ppf(0.975, 4) * np.std(v, ddof=1) / np.sqrt(5)
    assert out["mean"] == pytest.approx(2.1)
    assert out["ci"] == pytest.approx([2.1 - half, 2.1 + half])
    with pytest.raises(ValueError, match="at least 2"):
        mean_ci([1.0])


def test_derived_seeds_depend_on_the_seed():
    a, b = derive_seeds(0, 5), derive_seeds(1, 5)
    assert len(set(a)) == 5 and a != b and a == derive_seeds(0, 5)


def test_minimax_weights_see_excess_losses():
    """At the floors every excess is 0, so minimax (softmax on excess) is uniform there,
    while softmax on raw losses puts the weight on the high-floor category."""
    import torch

    g = build_grammar(default_spec())
    floors = torch.tensor(g.floors)
    cfg = PlantedConfig()
    rule, per_cat = method_rule("minimax", g.floors, cfg)
    w, _ = rule.update(floors, rule.init(8))
    assert per_cat and torch.allclose(w, torch.full((8,), 1 / 8, dtype=w.dtype))
    raw, _ = method_rule("minimax_raw", g.floors, cfg)
    w_raw, _ = raw.update(floors, raw.init(8))
    assert int(w_raw.argmax()) == g.category_names.index("name") and float(w_raw.max()) > 0.99
    assert method_rule("mlm", g.floors, cfg)[1] is False
    with pytest.raises(ValueError, match="method"):
        method_rule("best", g.floors, cfg)
    assert set(METHODS) >= {"minimax", "average", "mlm", "hardmax", "group_dro"}


def test_config_errors_name_the_parameter():
    with pytest.raises(ValueError, match="pretrain_steps"):
        PlantedConfig(pretrain_steps=0)
    with pytest.raises(ValueError, match="methods"):
        PlantedConfig(methods=("minimax",))
    with pytest.raises(ValueError, match="temperatures"):
        PlantedConfig(temperature=0.0)


@pytest.mark.slow
def test_tiny_cli_run_meets_the_contract(tmp_path, monkeypatch):
    from benchmarks.experiments import planted_tasks as exp

    tiny = dict(
        seeds=5, steps=4, methods=("minimax", "average", "mlm"),
        finetune_methods=("minimax", "average"), samples=(8,), budgets=(0, 2),
        mixtures=1, temperatures=(0.5,), heldout=32, finetune_heldout=16, shape=(1, 16, 1, 32),
    )  # fmt: skip
    monkeypatch.setitem(exp.PROFILES, "quick", tiny)
    parser = argparse.ArgumentParser()
    exp.add_arguments(parser)
    args = parser.parse_args(["--seed", "3", "--workers", "1"])
    args.quick, args.out = True, tmp_path
    report = exp.run(args)
    data = json.loads((tmp_path / "planted-tasks.json").read_text())
    assert (tmp_path / "planted-tasks.png").stat().st_size > 0
    assert report.json_path == tmp_path / "planted-tasks.json"
    assert data["seeds"] == derive_seeds(3, 5)
    for m in ("minimax", "average", "mlm"):
        u = data["upstream"][m]
        assert set(u["task_losses"]) == set(data["categories"])
        lo, hi = u["worst_task_loss"]["ci"]
        assert lo <= u["worst_task_loss"]["mean"] <= hi
    kinds = {r["kind"] for r in data["downstream"]}
    assert kinds == {"mixture", "classification"}
    for r in data["downstream"]:
        assert set(r) >= {"kind", "budget", "samples", "method", "worst", "mean"}
        assert r["worst"]["mean"] >= r["mean"]["mean"] - 1e-12
    pairs = {(r["kind"], r["budget"], r["samples"]) for r in data["paired"]}
    assert pairs == {(k, b, 8) for k in kinds for b in (0, 2)}
    for r in data["paired"]:
        assert (r["a"], r["b"]) == ("minimax", "average")
        lo, hi = r["worst_diff"]["ci"]
        assert lo <= r["worst_diff"]["mean"] <= hi
    # paired differences are the per-seed differences of the rows they summarise
    seeds = data["per_seed"]
    k0 = next(r for r in data["paired"] if r["kind"] == "mixture" and r["budget"] == 0)
    diffs = []
    for s in seeds:
        worst = {}
        for row in s["downstream"]:
            if row["kind"] == "mixture":
                worst[row["method"]] = max(worst.get(row["method"], -np.inf), row["values"][0])
        diffs.append(worst["minimax"] - worst["average"])
    assert k0["worst_diff"]["mean"] == pytest.approx(np.mean(diffs))
    assert "minimax(tau=0.5)" in data["dynamics"]


def _synthetic_runs(shift: float, seeds: int = 8) -> list[dict]:
    """Per-seed runs with 3 mixture tasks; minimax's values are average's minus ``shift``
    on the worst task (plus shared per-seed noise, as paired seeds have)."""
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(seeds):
        base = 1.0 + rng.normal(0, 0.3)  # seed effect shared by both methods
        rows = []
        for m, d in (("minimax", -shift), ("average", 0.0)):
            for t, level in enumerate((0.2, 0.5, 1.0)):
                noise = rng.normal(0, 0.02)
                v = base * level + (d if t == 2 else 0.0) + noise
                rows.append(
                    {
                        "method": m,
                        "task": f"t{t}",
                        "kind": "mixture",
                        "samples": 8,
                        "budgets": [0],
                        "values": [v],
                        "floor": 0.0,
                    }
                )
        up = {
            m: {"losses": [1.0, 2.0], "excess": [0.1, 0.5 - (shift if m == "minimax" else 0)]}
            for m in ("minimax", "average")
        }
        runs.append({"upstream": up, "downstream": rows})
    return runs


def test_paired_statistics_detect_a_planted_difference_and_not_a_null_one():
    """Positive control: a worst-task gain of 0.1 under seed noise 0.3 (shared by the pair)
    is found (CI below 0); negative control: with no planted difference the CI holds 0."""
    from deep.apps.planted.experiment import summarize

    found = summarize(_synthetic_runs(0.1), ["a", "b"])
    (row,) = found["paired"]
    assert row["worst_diff"]["ci"][1] < 0 and row["worst_diff"]["mean"] == pytest.approx(
        -0.1, abs=0.03
    )
    # unpaired, the seed noise would hide it: the two methods' worst-task intervals overlap
    mm = next(r for r in found["downstream"] if r["method"] == "minimax")
    av = next(r for r in found["downstream"] if r["method"] == "average")
    assert mm["worst"]["ci"][1] > av["worst"]["ci"][0]
    null = summarize(_synthetic_runs(0.0), ["a", "b"])
    lo, hi = null["paired"][0]["worst_diff"]["ci"]
    assert lo < 0 < hi
    assert found["upstream_paired"]["worst_diff"]["mean"] == pytest.approx(-0.1)


@pytest.mark.parametrize(
    "bad",
    [["--seeds", "3"], ["--workers", "0"], ["--steps", "0"], ["--temperature", "0"]],
)
def test_bad_arguments_fail_before_writing(bad, tmp_path):
    from benchmarks.__main__ import main

    with pytest.raises(ValueError, match=r"seeds|workers|pretrain_steps|temperature"):
        main(["run", "planted-tasks", "--quick", "--out", str(tmp_path), *bad])
    assert not list(tmp_path.iterdir())
