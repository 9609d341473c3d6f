"""deep.apps.text: the GLUE reader on generated GLUE-format files, the optional datasets
loader, and fine-tuning from a checkpoint."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from deep.apps.finetune import FinetuneConfig
from deep.apps.text import (
    GLUE_TASKS,
    TextExample,
    TextTask,
    finetune,
    glue_task_name,
    load_glue_hf,
    read_glue_task,
)
from tests.helpers import tiny_bert_checkpoint

# --------------------------------------------------------------------------- GLUE reader

MNLI_TRAIN = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
)
MNLI_DEV = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t"
    "label5\tgold_label"
)

# folder -> (train text, dev file name, dev text): the real files' headers and row layouts
GLUE_FILES = {
    "CoLA": (
        "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n",
        "dev.tsv",
        "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n",
    ),
    "SST-2": ("sentence\tlabel\nit 's a charming journey \t1\nbad film \t0\n", "dev.tsv",
              "sentence\tlabel\ngood\t1\n"),
    "MRPC": (
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said yes.\tHe agreed.\n"
        "0\t3\t4\tIt rained.\tShe left.\n",
        "dev.tsv",
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t5\t6\tA cat.\tA feline.\n",
    ),
    "QQP": (
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\tWhy?\tHow come?\t1\n",
        "dev.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t3\t4\tWho?\tWhen?\t0\n",
    ),
    "STS-B": (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane takes off.\t"
        "An air plane is taking off.\t5.000\n",
        "dev.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man.\tA woman.\t1.5\n",
    ),
    "MNLI": (
        MNLI_TRAIN + "\n0\t1\t1e\tgov\t(x)\t(y)\t(X)\t(Y)\tThe cat sat.\tA cat sat.\t"
        "entailment\tentailment\n",
        "dev_matched.tsv",
        MNLI_DEV + "\n0\t1\t1n\tfic\t(x)\t(y)\t(X)\t(Y)\tIt is hot.\tIt is cold.\tcontradiction\t"
        "contradiction\tcontradiction\tneutral\tcontradiction\tcontradiction\n",
    ),
    "QNLI": (
        "index\tquestion\tsentence\tlabel\n0\tWho won?\tThe Broncos won.\tentailment\n",
        "dev.tsv",
        "index\tquestion\tsentence\tlabel\n0\tWhere?\tIt rained.\tnot_entailment\n",
    ),
    "RTE": (
        "index\tsentence1\tsentence2\tlabel\n0\tA dog barks.\tAn animal makes noise.\tentailment\n",
        "dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tA dog barks.\tA cat sleeps.\tnot_entailment\n",
    ),
    "WNLI": (
        "index\tsentence1\tsentence2\tlabel\n0\tI put the cake in the box.\tIt was big.\t1\n",
        "dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tJohn saw Bill.\tHe ran.\t0\n",
    ),
}  # fmt: skip


@pytest.fixture
def glue_dir(tmp_path):
    for folder, (train, dev_name, dev) in GLUE_FILES.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.tsv").write_text(train, encoding="utf-8")
        (tmp_path / folder / dev_name).write_text(dev, encoding="utf-8")
    return tmp_path


def test_every_glue_task_is_read(glue_dir):
    assert set(GLUE_FILES) == set(GLUE_TASKS)
    cola = read_glue_task(glue_dir, "cola")
    assert cola.name == "CoLA" and cola.metric == "mcc" and cola.num_labels == 2
    assert cola.train == (
        TextExample("Our friends won't buy this analysis.", None, 1.0),
        TextExample("They drank the pub.", None, 0.0),
    )
    sst = read_glue_task(glue_dir, "sst2")
    assert sst.train[0] == TextExample("it 's a charming journey", None, 1.0)
    mrpc = read_glue_task(glue_dir, "MRPC")
    assert mrpc.metric == "f1" and mrpc.metrics == ("f1", "acc")
    assert mrpc.train[0] == TextExample("He said yes.", "He agreed.", 1.0)
    assert read_glue_task(glue_dir, "QQP").dev[0] == TextExample("Who?", "When?", 0.0)
    stsb = read_glue_task(glue_dir, "STS-B")
    assert stsb.num_labels == 1 and stsb.metric == "pearson"
    assert stsb.train[0].label == 5.0 and stsb.dev[0].label == 1.5
    mnli = read_glue_task(glue_dir, "mnli")
    assert mnli.num_labels == 3
    assert mnli.train[0] == TextExample("The cat sat.", "A cat sat.", 1.0)  # entailment = 1
    assert mnli.dev[0].label == 0.0  # contradiction, from gold_label (16 columns)
    assert read_glue_task(glue_dir, "QNLI").dev[0].label == 1.0
    assert read_glue_task(glue_dir, "RTE").train[0].label == 0.0
    assert read_glue_task(glue_dir, "WNLI").train[0].label == 1.0


def _write(glue_dir, folder, name, text):
    (glue_dir / folder / name).write_text(text, encoding="utf-8")
    return glue_dir / folder / name


@pytest.mark.parametrize(
    ("folder", "text", "match"),
    [
        ("SST-2", "sentence\tlabel\ngood\t1\nbad\n", r"train\.tsv:3: expected 2 .*got 1"),
        ("SST-2", "sentence\tlabel\ngood\t1\nbad\t2\n", r"train\.tsv:3: label '2' is not one of"),
        ("SST-2", "sentence\tlabel\ngood\t1\n\t0\n", r"train\.tsv:3: empty sentence"),
        ("SST-2", "sentence\tlabel\ngood\t1\n\nok\t1\n", r"train\.tsv:3: empty line"),
        ("SST-2", "text\tlabel\ngood\t1\n", r"train\.tsv:1: header has no column 'sentence'"),
        ("SST-2", "sentence\tlabel\n", r"train\.tsv: no example"),
        ("CoLA", "gj04\t1\t\tFine.\ngj04\tyes\n", r"train\.tsv:2: expected at least 4"),
        (
            "STS-B",
            GLUE_FILES["STS-B"][0] + "1\tg\tf\ty\to\ts\ts\tA.\tB.\tfive\n",
            r"train\.tsv:3: label 'five' is not a number",
        ),
        (  # before: accepted (#14.7)
            "STS-B",
            GLUE_FILES["STS-B"][0] + "1\tg\tf\ty\to\ts\ts\tA.\tB.\t5.5\n",
            r"train\.tsv:3: label '5\.5' is outside \[0, 5\], the range of STS-B scores",
        ),
        (
            "STS-B",
            GLUE_FILES["STS-B"][0] + "1\tg\tf\ty\to\ts\ts\tA.\tB.\t-0.1\n",
            r"train\.tsv:3: label '-0\.1' is outside \[0, 5\]",
        ),
    ],
)
def test_malformed_rows_name_file_and_line(glue_dir, folder, text, match):
    _write(glue_dir, folder, "train.tsv", text)
    with pytest.raises(ValueError, match=match):
        read_glue_task(glue_dir, folder)


def test_non_utf8_bytes_name_file_line_and_column(glue_dir):
    """Before: a bare UnicodeDecodeError naming neither file nor line (#14.8)."""
    path = glue_dir / "SST-2" / "train.tsv"
    path.write_bytes(b"sentence\tlabel\ngood\t1\n" + b"caf\xe9 au lait\t1\n")
    with pytest.raises(ValueError, match=r"train\.tsv:3: not UTF-8 \(byte 0xe9 at column 4\)"):
        read_glue_task(glue_dir, "SST-2")


def test_a_utf8_byte_order_mark_is_stripped(glue_dir):
    """Before: the BOM stuck to the first header name ('\\ufeffsentence' not found), or, in
    CoLA's headerless files, to the first field (#14.8)."""
    (glue_dir / "SST-2" / "train.tsv").write_bytes(
        b"\xef\xbb\xbf" + "sentence\tlabel\r\ncr\u00e8me\t1\r\n".encode()
    )
    assert read_glue_task(glue_dir, "SST-2").train == (TextExample("cr\u00e8me", None, 1.0),)
    cola = glue_dir / "CoLA" / "train.tsv"
    cola.write_bytes(b"\xef\xbb\xbf" + GLUE_FILES["CoLA"][0].encode())
    assert read_glue_task(glue_dir, "CoLA").train[0].text_a.startswith("Our friends")


def test_missing_folder_file_and_unknown_task(glue_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown GLUE task"):
        read_glue_task(glue_dir, "SQuAD")
    (glue_dir / "RTE" / "dev.tsv").unlink()
    with pytest.raises(ValueError, match=r"dev\.tsv does not exist"):
        read_glue_task(glue_dir, "RTE")
    with pytest.raises(ValueError, match="has no folder CoLA/"):
        read_glue_task(tmp_path / "nowhere", "CoLA")


def test_names_and_subsampling(glue_dir):
    assert glue_task_name("sts_b") == "STS-B" and glue_task_name("Sst-2") == "SST-2"
    rows = "sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(50))
    _write(glue_dir, "SST-2", "train.tsv", rows)
    task = read_glue_task(glue_dir, "SST-2", max_train=10)
    assert len(task.train) == 10 and len(set(task.train)) == 10
    assert task.train == read_glue_task(glue_dir, "SST-2", max_train=10).train  # seeded


def test_task_validation():
    ok = (TextExample("a", None, 1.0),)
    with pytest.raises(ValueError, match="class indices"):
        TextTask("t", "acc", 2, (TextExample("a", None, 2.0),), ok)
    with pytest.raises(ValueError, match="metric must be one of"):
        TextTask("t", "bleu", 2, ok, ok)
    with pytest.raises(ValueError, match="non-empty"):
        TextTask("t", "acc", 2, (), ok)


def test_datasets_loader_uses_the_user_datasets_package(monkeypatch):
    calls = []

    def load_dataset(path, name):
        calls.append((path, name))
        row = {"premise": "P.", "hypothesis": "H.", "label": 2}
        return {"train": [row, row], "validation_matched": [row]}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    task = load_glue_hf("MNLI")
    assert calls == [("glue", "mnli")]
    assert task.train[0] == TextExample("P.", "H.", 2.0) and len(task.dev) == 1
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="datasets"):
        load_glue_hf("MNLI")


# --------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny BERT MLM checkpoint with its tokenizer, saved like the pre-training saves it."""
    words = "yes no the a cat dog sat ran on mat big small quickly very said".split()
    return tiny_bert_checkpoint(tmp_path_factory.mktemp("ckpt"), words, 200)


def _keyword_task(n_train, n_dev, seed=0):
    rng = np.random.default_rng(seed)
    filler = "the a cat dog sat ran on mat big small".split()

    def make(n):
        rows = []
        for i in range(n):
            label = i % 2
            words = list(rng.choice(filler, size=5))
            words.insert(int(rng.integers(0, 6)), "yes" if label else "no")
            rows.append(TextExample(" ".join(words), None, float(label)))
        return tuple(rows)

    return TextTask("keyword", "acc", 2, make(n_train), make(n_dev), ("acc", "mcc"))


def test_checkpoint_loads_back_with_from_pretrained(checkpoint):
    import torch
    from transformers import BertForMaskedLM

    path, _, model = checkpoint
    loaded = BertForMaskedLM.from_pretrained(path)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert (path / "tokenizer.json").is_file() and (path / "model.safetensors").is_file()


def test_fine_tuning_learns_a_keyword_task(checkpoint):
    path, tok, _ = checkpoint
    config = FinetuneConfig(epochs=6, batch_size=16, lr=1e-3, max_len=32, device="cpu")
    res = finetune(path, tok, _keyword_task(160, 60), config=config, seed=0)
    assert res.steps == 60 and len(res.train_loss) == 60
    assert res.metric == "acc" and res.score == res.metrics["acc"]
    assert res.score >= 0.9, res
    assert res.metrics["mcc"] >= 0.8
    again = finetune(path, tok, _keyword_task(160, 60), config=config, seed=0)
    assert again.metrics == res.metrics  # seeded: the same run


def test_fine_tuning_regression_and_pairs_run(checkpoint):
    path, tok, _ = checkpoint
    rows = tuple(TextExample("the cat sat", "a dog ran", float(i % 5)) for i in range(20))
    task = TextTask("sts", "pearson", 1, rows, rows, ("pearson", "spearman"))
    res = finetune(path, tok, task, config=FinetuneConfig(steps=3, max_len=32), seed=1)
    assert res.steps == 3 and set(res.metrics) == {"pearson", "spearman"}
    assert all(np.isfinite(v) for v in res.metrics.values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"steps": 0}, "steps"),
        ({"precision": "fp8"}, "precision"),
    ],
)
def test_finetune_config_is_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig(**kwargs)
