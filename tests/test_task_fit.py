"""The pieces of the task-fit and task-choice experiments: POS granularities, MAE modality
subsets, perturbations, probes of text tasks (GLUE-format files), paired intervals, and a
tiny planted-language run end to end (JSON + PNG, planted weights vs a shuffled control)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_granularities_cover_every_tag_and_nest() -> None:
    from deep.apps.pos_bert.tagging import UPOS_TAGS
    from deep.apps.pos_bert.tasks import GRANULARITIES

    sizes = {name: t.num_tasks for name, t in GRANULARITIES.items()}
    assert sizes == {"coarse": 3, "default": 9, "upos": 17}
    for tasks in GRANULARITIES.values():
        assert sorted(tag for group in tasks.members for tag in group) == sorted(UPOS_TAGS)


def test_combine_is_the_token_weighted_mean() -> None:
    from deep.apps.pos_bert.tagging import UPOS_TAGS
    from deep.apps.pos_bert.tasks import GRANULARITIES, parse_tasks

    rng = np.random.default_rng(0)
    losses = rng.uniform(2, 8, size=17)
    counts = rng.integers(1, 50, size=17).astype(float)
    counts[UPOS_TAGS.index("SYM")] = 0
    losses[UPOS_TAGS.index("SYM")] = np.nan  # a tag with no token may be NaN
    upos = GRANULARITIES["upos"].combine(losses, counts)
    assert np.isnan(upos[UPOS_TAGS.index("SYM")])
    sym = UPOS_TAGS.index("SYM")
    np.testing.assert_allclose(np.delete(upos, sym), np.delete(losses, sym))
    tasks = parse_tasks("NOUN+VERB,OTHER")
    noun, verb = UPOS_TAGS.index("NOUN"), UPOS_TAGS.index("VERB")
    expected = (counts[noun] * losses[noun] + counts[verb] * losses[verb]) / (
        counts[noun] + counts[verb]
    )
    assert tasks.combine(losses, counts)[0] == pytest.approx(expected)
    # the grand mean is the same whatever the grouping
    for t in GRANULARITIES.values():
        per = t.combine(losses, counts)
        n = np.array([counts[[UPOS_TAGS.index(x) for x in g]].sum() for g in t.members])
        ok = n > 0
        assert (per[ok] * n[ok]).sum() / n.sum() == pytest.approx(
            np.nansum(losses * counts) / counts.sum()
        )
    with pytest.raises(ValueError, match=r"shape \(17,\)"):
        tasks.combine(losses[:5], counts[:5])


def test_modality_subset_batches_and_loss() -> None:
    from deep.apps.mae.masking import num_visible
    from deep.apps.mae.model import MAEConfig, MultiModalMAE
    from deep.apps.mae.scenes import SceneConfig, generate_scenes
    from deep.apps.mae.tasks import SceneBatches, subset_task_loss

    scenes = generate_scenes(8, SceneConfig(size=16), seed=0)
    batches = SceneBatches(scenes, 4, 0.75, 8, seed=0, modalities=("semantic", "rgb"))
    batch = next(iter(batches))
    p = 4  # (16 / 8)^2 patches per modality
    mask = batch.mask.numpy().reshape(4, 3, p)
    assert mask[:, 1].all()  # depth: always hidden, never input
    assert ((~mask).sum(axis=(1, 2)) == num_visible(2 * p, 0.75)).all()
    model = MultiModalMAE(
        MAEConfig(
            image_size=16,
            patch_size=8,
            num_classes=scenes.num_classes,
            dim=16,
            depth=1,
            heads=2,
            decoder_dim=16,
            decoder_heads=2,
        )
    )
    values, ids = subset_task_loss(("rgb", "semantic"))(model, batch)
    assert set(ids.tolist()) <= {0, 1} and 1 in ids.tolist()  # semantic is task 1
    assert values.shape == ids.shape
    # the full set behaves as before
    full = SceneBatches(scenes, 4, 0.75, 8, seed=0)
    again = SceneBatches(scenes, 4, 0.75, 8, seed=0, modalities=None)
    assert torch.equal(next(iter(full)).mask, next(iter(again)).mask)
    with pytest.raises(ValueError, match="modalities must be distinct"):
        SceneBatches(scenes, 4, 0.75, 8, modalities=("rgb", "infrared"))
    with pytest.raises(ValueError, match="modalities must be distinct"):
        subset_task_loss(())


def test_perturbed_copies() -> None:
    from benchmarks.experiments.task_fit import SIGMAS, perturbation_points, perturbed

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    torch.nn.init.zeros_(model[0].bias)
    same = perturbed(model, 0.0, seed=1)
    moved = perturbed(model, 0.1, seed=1)
    w = model[0].weight.detach()
    assert torch.equal(same[0].weight, w)
    rel = float((moved[0].weight.detach() - w).square().mean().sqrt() / w.square().mean().sqrt())
    assert 0.03 < rel < 0.3
    assert torch.equal(moved[0].bias, model[0].bias)  # a zero tensor stays zero
    assert torch.equal(perturbed(model, 0.1, seed=1)[0].weight, moved[0].weight)
    models, groups = perturbation_points(model, 2, seed=0)
    assert len(models) == 2 * len(SIGMAS) and groups[0] == "perturbation-0"


def test_paired_interval() -> None:
    from benchmarks.experiments.task_choice import paired_interval

    out = paired_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t_{0.975, 2} = 4.303
    assert out["mean"] == pytest.approx(2.0)
    assert out["high"] - 2.0 == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert np.isnan(paired_interval([1.0])["low"])


@pytest.mark.slow
def test_text_probe_on_glue_format_files(tmp_path) -> None:
    from benchmarks.experiments.task_fit import encode_text_task, text_probe
    from deep.apps.pos_bert.model import MaskedPositionsMLM
    from deep.apps.text import read_glue_task
    from tests.helpers import tiny_bert_checkpoint

    words = ["the", "cat", "sat", "on", "mat", "dog", "ran"]
    _, tok, mlm = tiny_bert_checkpoint(tmp_path, words, 30)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("dev", 20)):
        folder = tmp_path / "glue" / "CoLA"
        folder.mkdir(parents=True, exist_ok=True)
        rows = [
            f"src\t{i % 2}\t\t{' '.join(rng.choice(words, 5))}" for i in range(n)
        ]  # CoLA: no header; label in column 1, sentence in column 3
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    task = read_glue_task(tmp_path / "glue", "CoLA")
    enc = encode_text_task(task, tok, max_len=16)
    assert enc.train[0].shape == (40, 16) and enc.metric == "mcc"
    model = MaskedPositionsMLM(mlm).eval()
    loss, score = text_probe(model.mlm.bert, enc)
    assert np.isfinite(loss) and loss > 0 and -1 <= score <= 1


@pytest.mark.slow
def test_task_fit_planted_setting_end_to_end(tmp_path, monkeypatch) -> None:
    """A tiny planted run through the command: the two planted mixtures fit well (in-sample
    and held out), the shuffled control does not; JSON and PNG are written."""
    from benchmarks.experiments import task_fit

    monkeypatch.setitem(
        task_fit.PLANTED_PROFILES,
        "quick",
        dict(
            train=256,
            heldout=128,
            steps=20,
            every=5,
            batch_size=32,
            directions=1,
            bias_directions=1,
            mixtures=2,
        ),
    )
    args = argparse.Namespace(
        quick=True, out=tmp_path, settings="planted", glue_dir=None, glue_tasks="", threads=1
    )
    report = task_fit.run(args)
    assert report.json_path.is_file() and report.png_paths[0].is_file()
    payload = json.loads(report.json_path.read_text())
    fits = payload["settings"]["planted"]["fits"]
    for name in ("mixture-0", "mixture-1"):
        assert fits[name]["r2"] > 0.95 and fits[name]["r2_cv"] > 0.9
        assert sum(fits[name]["weights"]) == pytest.approx(1.0)
    # where the identity is exact (the mixture's own set), the fit returns the token shares
    for check in payload["settings"]["planted"]["same_set_check"].values():
        assert check["max_error_vs_shares"] < 0.01 and check["r2"] > 0.999
    control = fits["control: mixture-0 shuffled"]
    assert control["r2_cv"] < 0.3
    with pytest.raises(ValueError, match="--settings"):
        task_fit.run(argparse.Namespace(**{**vars(args), "settings": "imagenet"}))
