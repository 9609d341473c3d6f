"""deep.diagnostics: the convex-combination fit (planted weights, degenerate and collinear
columns, bad inputs, negative controls) and the loss collection from checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deep.diagnostics import (  # noqa: E402
    collect_losses,
    fit_convex_combination,
    linear_probe,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _upstream(t: int = 40, m: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 3.0 + rng.gamma(2.0, 1.0, size=(t, m))


LAM = np.array([0.5, 0.3, 0.2, 0.0, 0.0])


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_recovers_planted_weights(noise: float) -> None:
    u = _upstream()
    y = u @ LAM + noise * np.random.default_rng(1).normal(size=len(u))
    fit = fit_convex_combination(u, y)
    assert fit.weights.shape == (5,)
    assert np.all(fit.weights >= 0) and fit.weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(fit.weights, LAM, atol=1e-8 + 5 * noise)
    assert fit.intercept == 0.0 and fit.scale == 1.0
    assert fit.r2 > 0.999 and fit.r2_cv > 0.999
    assert fit.residual_rms <= 1e-9 + 1.5 * noise
    assert np.all(fit.weights_low <= fit.weights + 1e-12)
    assert np.all(fit.weights <= fit.weights_high + 1e-12)


@pytest.mark.slow
def test_bootstrap_intervals_cover_the_planted_weights() -> None:
    """Over 20 noise draws the 95% intervals of the three interior weights hold the truth
    in most cases (a percentile bootstrap is approximate: not exactly 95%)."""
    u = _upstream()
    hits = []
    for draw in range(20):
        y = u @ LAM + 0.05 * np.random.default_rng([9, draw]).normal(size=len(u))
        fit = fit_convex_combination(u, y, bootstrap=100, seed=draw)
        hits.append((fit.weights_low[:3] <= LAM[:3]) & (LAM[:3] <= fit.weights_high[:3]))
        assert np.all(fit.weights_high[:3] - fit.weights_low[:3] < 0.2)
    assert np.mean(hits) >= 0.8


def test_intercept_and_scale_variants() -> None:
    u = _upstream()
    y = u @ LAM
    fit = fit_convex_combination(u, y + 2.5, intercept=True)
    np.testing.assert_allclose(fit.weights, LAM, atol=1e-8)
    assert fit.intercept == pytest.approx(2.5, abs=1e-7)
    fit = fit_convex_combination(u, 0.1 * y - 4.0, intercept=True, scale=True)
    np.testing.assert_allclose(fit.weights, LAM, atol=1e-8)
    assert fit.scale == pytest.approx(0.1, rel=1e-7)
    assert fit.intercept == pytest.approx(-4.0, abs=1e-7)
    np.testing.assert_allclose(fit.predict(u), 0.1 * y - 4.0, atol=1e-9)
    # without the intercept the same data fit badly: the offset is not a combination
    assert fit_convex_combination(u, y + 2.5).r2 < 0.9


def test_vertex_and_interior_solutions() -> None:
    u = _upstream(m=3)
    for lam in (np.array([1.0, 0.0, 0.0]), np.array([1 / 3, 1 / 3, 1 / 3])):
        fit = fit_convex_combination(u, u @ lam, bootstrap=0)
        np.testing.assert_allclose(fit.weights, lam, atol=1e-9)
        assert np.all(np.isnan(fit.weights_low))


def test_negative_control_decreasing_target_has_low_r2() -> None:
    """Every column increases along the points, the target decreases: no convex
    combination (nor, with scale >= 0, any positive multiple) can follow it."""
    rng = np.random.default_rng(3)
    s = np.linspace(0.0, 1.0, 40)
    u = 1.0 + s[:, None] * rng.uniform(0.5, 2.0, size=5) + 0.02 * rng.normal(size=(40, 5))
    y = 2.0 - s
    for kwargs in ({}, {"intercept": True}, {"intercept": True, "scale": True}):
        fit = fit_convex_combination(u, y, **kwargs)
        assert fit.r2 < 0.05, kwargs
        assert fit.r2_cv < 0.05, kwargs


def test_negative_control_unrelated_target_has_low_cv_r2() -> None:
    u = _upstream(t=60, m=8)
    y = np.random.default_rng(4).normal(size=60)
    fit = fit_convex_combination(u, y, intercept=True, scale=True)
    assert fit.r2_cv < 0.1
    # the planted target through the same code path: high (positive control)
    good = fit_convex_combination(u, 0.3 * (u @ np.full(8, 1 / 8)) + 1, intercept=True, scale=True)
    assert good.r2_cv > 0.99


def test_in_sample_r2_nests_but_cv_r2_penalises_extra_columns() -> None:
    """A finer split (more columns) can only raise in-sample R^2; cross-validation does
    not reward noise columns."""
    rng = np.random.default_rng(5)
    u = _upstream(t=30, m=2, seed=5)
    y = u @ np.array([0.7, 0.3]) + 0.2 * rng.normal(size=30)
    wide = np.hstack([u, 3.0 + rng.gamma(2.0, 1.0, size=(30, 12))])
    small = fit_convex_combination(u, y, intercept=True)
    big = fit_convex_combination(wide, y, intercept=True)
    assert big.r2 >= small.r2 - 1e-9
    assert big.r2_cv < big.r2


def test_duplicate_columns_share_weight() -> None:
    u = _upstream(m=3)
    wide = np.hstack([u, u[:, :1]])  # column 3 = column 0
    lam = np.array([0.4, 0.35, 0.25])
    fit = fit_convex_combination(wide, u @ lam)
    assert fit.weights[0] + fit.weights[3] == pytest.approx(0.4, abs=1e-7)
    np.testing.assert_allclose(fit.weights[1:3], lam[1:], atol=1e-7)
    assert fit.r2 > 1 - 1e-9


def test_collinear_columns_fit_the_target() -> None:
    """Column 2 is the mean of columns 0 and 1: the weights are not unique, the fit is."""
    u = _upstream(m=2)
    wide = np.hstack([u, u.mean(axis=1, keepdims=True)])
    y = u @ np.array([0.5, 0.5])
    fit = fit_convex_combination(wide, y)
    np.testing.assert_allclose(fit.fitted, y, atol=1e-8)
    assert fit.weights[0] == pytest.approx(fit.weights[1], abs=1e-7)


def test_constant_column_with_intercept() -> None:
    u = _upstream(m=3)
    u[:, 2] = 7.0
    y = u @ np.array([0.6, 0.4, 0.0]) + 1.0
    fit = fit_convex_combination(u, y, intercept=True)
    np.testing.assert_allclose(fit.fitted, y, atol=1e-8)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)


def test_constant_target_has_undefined_r2() -> None:
    u = _upstream(m=2)
    fit = fit_convex_combination(u, np.full(len(u), 2.0), intercept=True)
    assert np.isnan(fit.r2) and np.isnan(fit.r2_cv)
    assert fit.residual_rms > 0  # the weights sum to one: a constant is not reachable


def test_seeded_and_groups() -> None:
    u = _upstream()
    y = u @ LAM + 0.05 * np.random.default_rng(2).normal(size=len(u))
    a = fit_convex_combination(u, y, seed=7)
    b = fit_convex_combination(u, y, seed=7)
    np.testing.assert_array_equal(a.weights_low, b.weights_low)
    assert a.r2_cv == b.r2_cv
    groups = np.repeat(np.arange(4), 10)
    g = fit_convex_combination(u, y, groups=groups)
    assert 0.9 < g.r2_cv <= 1.0
    with pytest.raises(ValueError, match="read-only"):
        a.weights[0] = 1.0  # read-only
    assert set(a.to_json()) >= {"weights", "r2", "r2_cv", "residual_rms", "intercept"}


@pytest.mark.parametrize(
    ("upstream", "downstream", "kwargs", "match"),
    [
        (np.ones(10), np.ones(10), {}, r"upstream must be a \(T, M\)"),
        (np.ones((10, 3)), np.ones(9), {}, r"downstream must have shape \(T,\) = \(10,\)"),
        (np.ones((10, 3)), np.ones((10, 1)), {}, "downstream must have shape"),
        (np.ones((3, 3)), np.ones(3), {}, r"T >= M \+ 1"),
        (np.full((10, 2), np.nan), np.ones(10), {}, "upstream has 20 non-finite"),
        (np.ones((10, 2)), np.r_[np.ones(9), np.inf], {}, "downstream has 1 non-finite"),
        (np.ones((10, 2)), np.ones(10), {"folds": 1}, r"folds must be an integer in \[2, T\]"),
        (np.ones((10, 2)), np.ones(10), {"folds": 11}, "folds"),
        (np.ones((10, 2)), np.ones(10), {"groups": np.zeros(10)}, "two distinct groups"),
        (np.ones((10, 2)), np.ones(10), {"groups": np.zeros(3)}, "groups must have shape"),
        (np.ones((10, 2)), np.ones(10), {"bootstrap": -1}, "bootstrap must be"),
        (np.ones((10, 2)), np.ones(10), {"confidence": 1.0}, r"confidence must be in \(0, 1\)"),
    ],
)
def test_bad_inputs(upstream, downstream, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        fit_convex_combination(upstream, downstream, **kwargs)


def test_predict_checks_shape() -> None:
    fit = fit_convex_combination(_upstream(), _upstream() @ LAM, bootstrap=0)
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        fit.predict(np.ones((3, 4)))


# ----------------------------------------------------------------------------- probes


def test_linear_probe_separable_vs_random() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = (x[:, 0] > 0).astype(int)
    good = linear_probe(x[:300], y[:300], x[300:], y[300:], num_labels=2).loss
    noise = rng.integers(0, 2, size=400)
    bad = linear_probe(x[:300], noise[:300], x[300:], noise[300:], num_labels=2).loss
    assert good < 0.25 < np.log(2) - 0.1 < bad
    target = x @ np.arange(6.0)
    mse = linear_probe(x[:300], target[:300], x[300:], target[300:], num_labels=1).loss
    assert mse < 1e-2
    with pytest.raises(ValueError, match="class indices"):
        linear_probe(x, y + 1, x, y, num_labels=2)
    with pytest.raises(ValueError, match="one width"):
        linear_probe(x, y, x[:, :3], y, num_labels=2)


# ----------------------------------------------------------------------------- collecting


def _two_task_losses(model: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        w = model.weight.reshape(-1)
        return np.array([float((w - 1).square().sum()), float((w + 1).square().sum())])


def test_collect_losses_reads_pretrain_checkpoints(tmp_path) -> None:
    import deep
    import minimax_core as mc

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, bias=False)

    def task_loss(m, batch):  # two quadratic tasks, pulled to +1 and -1
        w = m.weight.reshape(-1)
        return torch.stack([(w - 1).square().sum(), (w + 1).square().sum()]), torch.arange(2)

    deep.pretrain(
        model,
        lambda pos: iter(lambda: 0, 1),
        num_tasks=2,
        task_loss=task_loss,
        rule=mc.weights.uniform(),
        steps=6,
        lr=0.05,
        checkpoint_dir=tmp_path / "ckpt",
        checkpoint_every=2,
        keep_checkpoints=None,
        progress=False,
    )
    template = torch.nn.Linear(3, 1, bias=False)
    got = collect_losses(
        [tmp_path / "ckpt", model],
        _two_task_losses,
        {"mix": lambda m: float(_two_task_losses(m) @ np.array([0.25, 0.75]))},
        model=template,
    )
    assert len(got.points) == 4 and got.points[0].endswith("step_00000002")
    assert got.upstream.shape == (4, 2) and got.downstream.shape == (4, 1)
    np.testing.assert_allclose(got.column("mix"), got.upstream @ [0.25, 0.75])
    # the last checkpoint is the trained model
    np.testing.assert_allclose(got.upstream[2], got.upstream[3], rtol=1e-6)
    assert not np.allclose(got.upstream[0], got.upstream[2])
    with pytest.raises(ValueError, match="pass model="):
        collect_losses([tmp_path / "ckpt"], _two_task_losses, lambda m: 0.0)
    with pytest.raises(ValueError, match=r"neither a deep\.pretrain checkpoint"):
        collect_losses([tmp_path], _two_task_losses, lambda m: 0.0)
    with pytest.raises(ValueError, match="not finite"):
        collect_losses([model], _two_task_losses, lambda m: float("nan"))
    with pytest.raises(ValueError, match="no downstream task"):
        got.column("other")


@pytest.mark.slow
def test_collect_losses_reads_hugging_face_folders(tmp_path) -> None:
    from transformers import BertForMaskedLM

    from tests.helpers import tiny_bert_checkpoint

    path, tok, model = tiny_bert_checkpoint(tmp_path, ["the", "cat", "sat", "on", "mat"], 20)
    enc = tok(["the cat sat on the mat"], return_tensors="pt")

    def upstream(m):
        with torch.no_grad():
            logits = m(**enc).logits[0]
        ce = torch.nn.functional.cross_entropy(logits, enc["input_ids"][0], reduction="none")
        return ce[:3].numpy()

    got = collect_losses([path], upstream, lambda m: 1.0, hf_class=BertForMaskedLM)
    model.eval()
    np.testing.assert_allclose(got.upstream[0], upstream(model), rtol=1e-5)
    assert got.points == (str(path),)


def test_simplex_qp_on_a_near_singular_bootstrap_gram() -> None:
    """Regression: a bootstrap resample of a planted-language fit gave this nearly singular
    Gram matrix (eigenvalues 3e-10 ... 14); the active-set QP took a rounding-level
    component along the ones vector for an unbounded ray, stepped 1e27 along it and
    emptied its free set (IndexError). The optimum is checked against the KKT conditions."""
    from minimax_core.simplex_qp import solve_simplex_qp

    gram = np.array([
        [1.4839032782150094, 1.5253951498356446, 1.599120745134086, 1.626119729512126, 1.6109375155675545, 1.7129902611118506, 1.6770789922423428, 1.6684253457389069],
        [1.5253951498356446, 1.5680661151057456, 1.643901329839286, 1.6716784286270525, 1.6560562580394296, 1.761061808455114, 1.7241188353561094, 1.7151935479335199],
        [1.599120745134086, 1.643901329839286, 1.723702895764415, 1.7529618104420783, 1.7364823192826444, 1.8471969417003682, 1.8083111105579042, 1.7987650818042211],
        [1.626119729512126, 1.6716784286270525, 1.7529618104420783, 1.7827796120267179, 1.7659736829186483, 1.8788511135104407, 1.8392358935445177, 1.8294385540254843],
        [1.6109375155675545, 1.6560562580394296, 1.7364823192826444, 1.7659736829186483, 1.7493608024270109, 1.8609666283209942, 1.821774596621354, 1.8121362458880017],
        [1.7129902611118506, 1.761061808455114, 1.8471969417003682, 1.8788511135104407, 1.8609666283209942, 1.9809805713793966, 1.938973618850022, 1.9283150733870877],
        [1.6770789922423428, 1.7241188353561094, 1.8083111105579042, 1.8392358935445177, 1.821774596621354, 1.938973618850022, 1.8979244762911576, 1.8875803043614003],
        [1.6684253457389069, 1.7151935479335199, 1.7987650818042211, 1.8294385540254843, 1.8121362458880017, 1.9283150733870877, 1.8875803043614003, 1.8774190946184757],
    ])  # fmt: skip
    linear = np.array(
        [
            1.5623152112199497,
            1.6060530954863343,
            1.6839699807290816,
            1.7125338895368194,
            1.6964486507596586,
            1.8045188554217721,
            1.7665531790755202,
            1.7572546700625,
        ]
    )
    res = solve_simplex_qp(gram, linear)
    assert res.converged and res.error < 1e-10
    assert res.weights.sum() == pytest.approx(1.0) and np.all(res.weights >= 0)
