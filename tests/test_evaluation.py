"""deep.apps.evaluation: the metrics and the WILDS-style worst-case summaries, against
hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deep.apps.evaluation import (
    accuracy,
    binary_f1,
    compute_metrics,
    markdown_table,
    matthews_corrcoef,
    pearson,
    plot_report,
    spearman,
    summarize,
)

# --------------------------------------------------------------------------- metrics


def test_accuracy_and_f1_by_hand():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    # TP = 2, FP = 1, FN = 1: F1 = 4 / 6
    assert binary_f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(4 / 6)
    assert binary_f1([0, 0], [0, 0]) == 0.0


def test_matthews_binary_by_hand():
    # TP = 2, TN = 1, FP = 1, FN = 1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert matthews_corrcoef([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(1 / 6)
    assert matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)
    assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 1, 0]) == 0.0  # constant prediction


def test_matthews_multiclass_by_hand():
    # confusion: each class 1 right, 1 wrong; c = 3, s = 6, t = p = (2, 2, 2):
    # (3*6 - 12) / sqrt((36 - 12)(36 - 12)) = 6 / 24
    assert matthews_corrcoef([0, 1, 1, 2, 2, 0], [0, 0, 1, 1, 2, 2]) == pytest.approx(0.25)


def test_correlations_by_hand():
    # dp = (-1, 0, 1), dy = (-7/3, -1/3, 8/3): r = 5 / sqrt(2 * 114/9)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / np.sqrt(2 * 114 / 9))
    # ranks (1,2,3) vs (1,3,2): rho = 1 - 6 * 2 / (3 * 8) = 0.5
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_metric_input_errors():
    with pytest.raises(ValueError, match="one shape"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="non-empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match="unknown metrics"):
        compute_metrics(["bleu"], [1], [1])
    assert compute_metrics(["acc", "mcc"], [1, 0], [1, 0]) == {"acc": 1.0, "mcc": 1.0}


# --------------------------------------------------------------------------- report

SCORES = {
    "minimax": {"CoLA": [0.30, 0.20, 0.40], "SST-2": [0.80, 0.90, 0.10]},
    "average": {"CoLA": [0.10, 0.20, 0.30], "SST-2": [0.90, 0.90, 0.90]},
}


def test_hand_computed_statistics():
    rep = summarize(SCORES, {"CoLA": "mcc", "SST-2": "acc"})
    assert rep.summary_metric == "score"
    mm = rep.methods["minimax"]
    assert mm.mean["mcc_task:CoLA"] == pytest.approx(0.30)
    assert mm.std["mcc_task:CoLA"] == pytest.approx(0.10)  # sample std of .3,.2,.4
    assert mm.mean["acc_task:SST-2"] == pytest.approx(0.60)
    # per-seed averages: .55, .55, .25 -> mean .45
    assert mm.per_seed["score_macro"] == pytest.approx((0.55, 0.55, 0.25))
    assert mm.mean["score_macro"] == pytest.approx(0.45)
    # per-seed worst: min(.3,.8)=.3, min(.2,.9)=.2, min(.4,.1)=.1 -> .2
    assert mm.per_seed["score_wg"] == pytest.approx((0.3, 0.2, 0.1))
    assert mm.mean["score_wg"] == pytest.approx(0.2)
    assert mm.std["score_wg"] == pytest.approx(0.1)
    assert mm.worst_task == "CoLA"  # mean .30 < .60
    av = rep.methods["average"]
    assert av.mean["score_wg"] == pytest.approx(0.2)
    assert av.worst_task == "CoLA"
    assert rep.best_method("mcc_task:CoLA") == "minimax"
    assert rep.best_method("acc_task:SST-2") == "average"
    assert rep.best_method("score_macro") == "average"  # .55 > .45
    assert rep.best_method("score_wg") is None  # .2 and .2: a tie, no winner


def test_worst_group_is_at_most_every_task_mean():
    rng = np.random.default_rng(0)
    scores = {"a": {f"t{i}": rng.random(4).tolist() for i in range(5)}}
    rep = summarize(scores, "acc")
    s = rep.methods["a"]
    assert rep.summary_metric == "acc"
    assert all(s.mean["acc_wg"] <= s.mean[f"acc_task:t{i}"] + 1e-12 for i in range(5))
    assert s.mean["acc_wg"] <= s.mean["acc_macro"]


def test_lower_is_better_uses_the_max():
    rep = summarize(
        {"m": {"depth": [1.0, 3.0], "seg": [2.0, 2.0]}}, "rmse", lower_is_better={"rmse"}
    )
    s = rep.methods["m"]
    assert not rep.higher_is_better
    assert s.per_seed["rmse_wg"] == (2.0, 3.0)
    assert s.worst_task in {"depth", "seg"}  # tie on the mean (2.0); first listed
    assert s.worst_task == "depth"


def test_single_seed_has_nan_std_and_dash_free_table():
    rep = summarize({"m": {"a": [0.5], "b": [0.7]}}, "acc")
    assert math.isnan(rep.methods["m"].std["acc_task:a"])
    table = markdown_table(rep)
    assert "50.0" in table and "±" not in table


@pytest.mark.parametrize(
    ("scores", "metrics", "match"),
    [
        ({}, "acc", "non-empty"),
        ({"m": {}}, "acc", "non-empty"),
        ({"m": {"a": []}}, "acc", "non-empty 1-D"),
        ({"m": {"a": [float("nan")]}}, "acc", "non-finite"),
        ({"m": {"a": [1.0, 2.0], "b": [1.0]}}, "acc", "same seeds"),
        ({"m": {"a": [1.0]}, "n": {"b": [1.0]}}, "acc", "same tasks"),
        ({"m": {"a": [1.0]}}, {"b": "acc"}, "no metric name"),
        ({"m": {"a": [1.0]}}, {"a": "ac:c"}, "without ':'"),
    ],
)
def test_bad_input_is_rejected(scores, metrics, match):
    with pytest.raises(ValueError, match=match):
        summarize(scores, metrics)


def test_mixed_directions_are_rejected():
    with pytest.raises(ValueError, match="different ways"):
        summarize(
            {"m": {"a": [1.0], "b": [1.0]}}, {"a": "acc", "b": "rmse"}, lower_is_better={"rmse"}
        )


def test_json_markdown_and_plot(tmp_path):
    rep = summarize(SCORES, {"CoLA": "mcc", "SST-2": "acc"})
    payload = json.loads(json.dumps(rep.to_json()))
    assert payload["methods"]["minimax"]["mean"]["score_wg"] == pytest.approx(0.2)
    assert set(payload["methods"]["average"]["mean"]) == {
        "mcc_task:CoLA",
        "acc_task:SST-2",
        "score_macro",
        "score_wg",
    }
    table = markdown_table(rep)
    lines = table.splitlines()
    assert lines[0].startswith("| method | CoLA (mcc) | SST-2 (acc)")
    assert "| minimax | **30.0 ± 10.0** |" in table
    assert "over 3 seeds" in table
    png = plot_report(rep, tmp_path / "bars.png")
    assert png.exists() and png.stat().st_size > 1000
    assert not list(tmp_path.glob(".*tmp*"))
